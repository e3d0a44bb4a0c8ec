//! The sender's own safety: files that change or are swapped while being sent,
//! local mistakes found before connecting, peer text that tries to fool the
//! terminal, timeouts that name the right flag, and a raw reply cut short.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, SystemTime};

use pincat::protocol::{self, FrameType, RejectCode};

use crate::util::data::json_lines;
use crate::util::fs::write_repeated;
use crate::util::peers::{ServerTls, fake_receiver, relay};
use crate::util::process::{NOBODY, as_user};
use crate::util::wire::{frame, read_frame, read_preamble};
use crate::util::{Server, run, send, text};

/// Big enough that the sender cannot have read all of it while the relay
/// holds back (socket buffers and the TLS send buffer are far smaller).
const BIG: u64 = 64 << 20;
/// Relayed sender bytes after which the file is changed: past the handshake
/// and the offer, inside the file's data.
const MEDDLE_AFTER: u64 = 512 << 10;

/// A directory on tmpfs when there is one, so big files cost no disk I/O.
fn fast_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

/// Writes `len` bytes with an mtime far in the past, so any later write
/// moves it whatever the filesystem's timestamp granularity.
fn old_file(path: &Path, len: u64) {
    let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let f = write_repeated(path, &block, len);
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
}

/// Sends `path` (which `meddle` changes mid-transfer) through a relay to a
/// one-shot receiver; checks the sender fails naming `name`, the receiver
/// was told the sender gave up, and stored nothing.
fn send_while_changing(
    path: &Path,
    name: &str,
    after: u64,
    meddle: impl FnOnce() + Send + 'static,
) {
    let dst = fast_dir();
    // Nothing kept for a resume: the receiver ends as the sender gives up.
    let mut srv = Server::start(dst.path(), &["--out", "inbox", "--no-resume"]);
    let via = relay(&srv.addr, after, meddle);
    crate::util::server::share_code(&via, &srv.addr);
    let r = send(&via, &srv.fingerprint, &[path.to_str().unwrap()], b"");
    let err = text(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{name}: file changed while being read")),
        "{err}"
    );
    // The ABORT frame reached the receiver, which kept nothing.
    let ev = srv.wait_event("error");
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .contains("changed while being read"),
        "{ev}"
    );
    let (code, _) = srv.wait_exit();
    assert_ne!(code, Some(0));
    let inbox = dst.path().join("inbox");
    let stored = fs::read_dir(&inbox).map(|d| d.count()).unwrap_or(0);
    assert_eq!(stored, 0, "the receiver stored a torn copy");
}

#[test]
fn a_file_rewritten_in_place_while_sent_is_not_delivered() {
    let src = fast_dir();
    let p = src.path().join("big.bin");
    old_file(&p, BIG);
    let q = p.clone();
    send_while_changing(&p, "big.bin", MEDDLE_AFTER, move || {
        // Same size, other bytes, where the sender has already been.
        let mut f = OpenOptions::new().write(true).open(&q).unwrap();
        f.write_all(&vec![0xFF; 1 << 20]).unwrap();
    });
    assert_eq!(fs::metadata(&p).unwrap().len(), BIG);
}

#[test]
fn a_file_that_grows_while_sent_is_not_delivered() {
    let src = fast_dir();
    let p = src.path().join("growing.log");
    old_file(&p, BIG);
    let q = p.clone();
    send_while_changing(&p, "growing.log", MEDDLE_AFTER, move || {
        let mut f = OpenOptions::new().append(true).open(&q).unwrap();
        f.write_all(b"one more line\n").unwrap();
    });
}

#[test]
fn a_file_that_shrinks_while_sent_is_not_delivered() {
    let src = fast_dir();
    let p = src.path().join("shrinking.db");
    old_file(&p, BIG);
    let q = p.clone();
    send_while_changing(&p, "shrinking.db", MEDDLE_AFTER, move || {
        let f = OpenOptions::new().write(true).open(&q).unwrap();
        f.set_len(BIG / 2).unwrap();
    });
}

#[test]
fn a_file_swapped_for_a_symlink_after_planning_is_not_followed() {
    let src = fast_dir();
    fs::create_dir(src.path().join("d")).unwrap();
    let planned = src.path().join("d/notes.txt");
    fs::write(&planned, b"notes").unwrap();
    // Same size as the planned file: only the swap itself can give it away.
    let secret = src.path().join("secret");
    fs::write(&secret, b"KEYS!").unwrap();
    let (p, s) = (planned.clone(), secret.clone());
    // The relay swaps on connect: the sender has planned by then, and has
    // not opened the file to send it yet.
    send_while_changing(&src.path().join("d"), "notes.txt", 0, move || {
        fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&s, &p).unwrap();
    });
    assert!(fs::symlink_metadata(&planned).unwrap().is_symlink());
}

/// An unreadable file and a directory holding one. Root (or anyone with
/// CAP_DAC_OVERRIDE) reads a mode 000 file anyway, so then the sender runs
/// as `nobody`; `None` when even that is impossible here.
fn unreadable_cases(dir: &Path) -> Option<(Vec<PathBuf>, Option<u32>)> {
    use std::os::unix::fs::PermissionsExt;
    let lone = dir.join("locked.key");
    fs::write(&lone, b"k").unwrap();
    fs::create_dir(dir.join("tree")).unwrap();
    fs::write(dir.join("tree/ok"), b"ok").unwrap();
    let inner = dir.join("tree/locked");
    fs::write(&inner, b"l").unwrap();
    for p in [&lone, &inner] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o000)).unwrap();
    }
    let paths = vec![lone.clone(), dir.join("tree")];
    if File::open(&lone).is_err() {
        return Some((paths, None));
    }
    // `nobody` must be able to reach the files, just not read them.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let probe = run(&["--version"], |c| as_user(c, Some(NOBODY)));
    probe.status.success().then_some((paths, Some(NOBODY)))
}

#[test]
fn local_mistakes_fail_before_connecting_and_leave_a_one_shot_receiver_waiting() {
    let src = tempfile::tempdir().unwrap();
    let dst = fast_dir();
    let mut srv = Server::start(dst.path(), &["--out", "inbox"]);
    let (addr, pin) = (srv.addr.clone(), srv.fingerprint.clone());
    let fifo = src.path().join("fifo");
    let made_fifo = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let mut mistakes: Vec<(Vec<String>, &str, Option<u32>)> = vec![
        (
            vec![src.path().join("missing").display().to_string()],
            "missing",
            None,
        ),
        (vec!["/dev/null".into()], "not a regular file", None),
        (
            vec!["--raw".into(), src.path().display().to_string()],
            "directory",
            None,
        ),
    ];
    if made_fifo {
        mistakes.push((vec![fifo.display().to_string()], "not a regular file", None));
    }
    match unreadable_cases(src.path()) {
        Some((paths, uid)) => {
            for p in paths {
                mistakes.push((vec![p.display().to_string()], "ermission denied", uid));
            }
        }
        None => eprintln!("cannot run the sender unprivileged here; unreadable files not tested"),
    }
    for (args, says, uid) in &mistakes {
        let mut argv = vec!["send", addr.as_str(), "--pin", pin.as_str()];
        argv.extend(args.iter().map(String::as_str));
        let r = run(&argv, |c| as_user(c, *uid));
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // No connection reached the receiver, which still takes a good sender.
    thread::sleep(Duration::from_millis(200));
    if let Ok(v) = srv.events.try_recv() {
        panic!("the receiver saw a connection: {v}");
    }
    fs::write(src.path().join("good.txt"), b"the real one").unwrap();
    let good = src.path().join("good.txt");
    let r = send(&addr, &pin, &[good.to_str().unwrap()], b"");
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(
        fs::read(dst.path().join("inbox/good.txt")).unwrap(),
        b"the real one"
    );
}

const NASTY: &str = "report\u{202E}fdp.exe\u{200B} exists\u{2028}";

/// A receiver that refuses any offer with a deceptive, megabyte-long message.
fn rejecting_receiver() -> (String, String, thread::JoinHandle<()>) {
    fake_receiver(|tls: &mut ServerTls| {
        read_preamble(tls).unwrap();
        read_frame(tls).unwrap();
        let mut payload = vec![RejectCode::Exists as u8];
        payload.extend_from_slice(NASTY.as_bytes());
        payload.extend(std::iter::repeat_n(b'A', 1_000_000));
        let mut out = protocol::preamble_of(protocol::Role::Taker).to_vec();
        out.extend(frame(FrameType::Reject, &payload));
        tls.write_all(&out).unwrap();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let _ = tls.read_to_end(&mut Vec::new());
    })
}

fn assert_no_raw_tricks(s: &str) {
    for c in ['\u{202E}', '\u{200B}', '\u{2028}'] {
        assert!(!s.contains(c), "raw U+{:04X} in {s:?}", c as u32);
    }
}

#[test]
fn a_receivers_message_is_escaped_and_capped() {
    let (addr, pin, h) = rejecting_receiver();
    let r = send(&addr, &pin, &[], b"data");
    h.join().unwrap();
    let err = text(&r.stderr);
    assert_eq!(r.status.code(), Some(4), "{err}");
    assert!(r.stderr.len() < 4096, "{} bytes of stderr", r.stderr.len());
    assert!(
        err.contains("report\\u{202e}fdp.exe\\u{200b} exists\\u{2028}AAA"),
        "{err}"
    );
    assert!(err.contains("(truncated)"), "{err}");
    assert_no_raw_tricks(&err);

    let (addr, pin, h) = rejecting_receiver();
    let r = send(&addr, &pin, &["--json"], b"data");
    h.join().unwrap();
    assert_eq!(r.status.code(), Some(4), "{}", text(&r.stderr));
    assert!(r.stderr.len() < 4096, "{} bytes of stderr", r.stderr.len());
    assert_no_raw_tricks(&text(&r.stderr));
    let mut errors = json_lines(&r.stderr);
    errors.retain(|v| v["event"] == "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "exists");
    let msg = errors[0]["message"].as_str().unwrap();
    assert_no_raw_tricks(msg);
    assert!(msg.contains("\\u{202e}fdp.exe\\u{200b}"), "{msg}");
}

#[test]
fn a_stalled_handshake_times_out_and_says_so() {
    // Never accepted: the kernel completes the TCP handshake, nobody answers TLS.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let pin = "ab".repeat(32);
    let r = send(&addr, &pin, &["--handshake-timeout", "1s"], b"data");
    let err = text(&r.stderr);
    assert_eq!(r.status.code(), Some(6), "{err}");
    assert!(
        err.contains("handshake") && err.contains("--handshake-timeout"),
        "{err}"
    );
    assert!(!err.contains("--idle-timeout"), "{err}");
    // fingerprint --remote bounds its handshake with --connect-timeout.
    let r = run(
        &["fingerprint", "--remote", &addr, "--connect-timeout", "1s"],
        |_| {},
    );
    let err = text(&r.stderr);
    assert_eq!(r.status.code(), Some(6), "{err}");
    assert!(
        err.contains("handshake") && err.contains("--connect-timeout"),
        "{err}"
    );
    drop(l);
}

#[test]
fn zero_durations_are_usage_errors_for_the_binary() {
    let pin = "ab".repeat(32);
    for args in [
        vec!["send", "127.0.0.1:9", "--pin", &pin, "--idle-timeout", "0"],
        vec!["send", "127.0.0.1:9", "--pin", &pin, "--retry-for", "0s"],
        vec!["serve", "--listen", "127.0.0.1:0", "--timeout", "0ms"],
        vec![
            "fingerprint",
            "--remote",
            "127.0.0.1:9",
            "--connect-timeout",
            "0",
        ],
    ] {
        let r = run(&args, |_| {});
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        let flag = args[args.len() - 2];
        assert!(err.contains(flag) && err.contains("omit the flag"), "{err}");
    }
}

/// A raw TLS peer: reads everything until the sender's close_notify, answers
/// `reply`, then closes with or without its own close_notify; what went
/// wrong on its side, if anything.
fn raw_peer(
    reply: &'static [u8],
    close_notify: bool,
) -> (String, String, thread::JoinHandle<Result<(), String>>) {
    fake_receiver(move |tls: &mut ServerTls| {
        let mut got = Vec::new();
        tls.read_to_end(&mut got)
            .map_err(|e| format!("the peer's read: {e}"))?;
        if got != b"question" {
            return Err(format!("the peer got {got:?}"));
        }
        tls.write_all(reply).map_err(|e| e.to_string())?;
        if close_notify {
            tls.conn.send_close_notify();
        }
        tls.flush().map_err(|e| e.to_string())
        // Dropping the socket now is a plain TCP FIN.
    })
}

#[test]
fn a_raw_reply_without_close_notify_is_truncation() {
    let reply: &[u8] = b"the first half of the ans";
    let (addr, pin, h) = raw_peer(reply, false);
    let r = send(&addr, &pin, &["--raw"], b"question");
    let err = text(&r.stderr);
    assert_eq!(h.join().unwrap(), Ok(()), "sender: {:?} {err}", r.status);
    assert_eq!(r.status.code(), Some(7), "{err}");
    assert!(
        err.contains("close_notify") && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(r.stdout, reply, "what did arrive is still passed on");

    let (addr, pin, h) = raw_peer(b"the whole answer", true);
    let r = send(&addr, &pin, &["--raw"], b"question");
    let peer = h.join().unwrap();
    assert_eq!(peer, Ok(()), "sender: {:?} {}", r.status, text(&r.stderr));
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(r.stdout, b"the whole answer");
}

#[test]
fn a_file_changed_late_in_a_directory_is_not_delivered() {
    // Many small files through the same checks as one big one: the rewrite
    // lands in the last file, after the others have gone out intact.
    let src = fast_dir();
    let d = src.path().join("many");
    fs::create_dir(&d).unwrap();
    for i in 0..20 {
        old_file(&d.join(format!("{i:02}.txt")), 4096);
    }
    let last = d.join("zz.bin");
    old_file(&last, BIG);
    let q = last.clone();
    send_while_changing(&d, "zz.bin", MEDDLE_AFTER, move || {
        let mut f = OpenOptions::new().write(true).open(&q).unwrap();
        f.seek(SeekFrom::Start(BIG - 4)).unwrap();
        f.write_all(b"EDIT").unwrap();
    });
}
