//! Hostile senders of trees in parts (found by review): a claimed part
//! still counts against the offer memory, empty DATA frames are no
//! progress, a sender walking its next part keeps the receiver with
//! KEEPALIVE, a full disk in a later part keeps the parts confirmed before,
//! `--strict` sends nothing, and later parts that attack the store are
//! refused with nothing stored.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use pincat::protocol::{self, Entry, FrameType, Offer};

use crate::util::peers::HandSender;
use crate::util::wire::{self, frame};
use crate::util::{Server, text};

/// A continued (or not) files offer of `entries`, as OFFER frames.
fn offer_frames(entries: Vec<Entry>, continued: bool) -> Vec<u8> {
    let offer = Offer {
        continued,
        ..wire::files(entries)
    };
    let mut out = Vec::new();
    for f in offer.encode_frames(protocol::MAX_CONTROL).unwrap() {
        out.extend(frame(FrameType::Offer, &f));
    }
    out
}

/// Whether a sender of empty DATA frames still holds a one-shot receiver
/// (idle timeout 1 s) after 4 s: a files transfer, whole or in parts, must
/// move 64 KiB per idle period.
fn trickle_holds(continued: bool) -> (bool, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--out", "in", "--idle-timeout", "1s", "--no-resume"];
    let mut srv = Server::start(dir.path(), &args);
    let script = offer_frames(vec![wire::dir("t"), wire::file("t/f", 1 << 20)], continued);
    let mut tls = HandSender::open(&srv.addr, &srv.fingerprint, &script);
    assert_eq!(tls.first_frame().map(|f| f.0), Some(FrameType::Accept));
    let started = Instant::now();
    let trickle = thread::spawn(move || {
        for _ in 0..30 {
            if tls.write(&frame(FrameType::Data, &[])).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    thread::sleep(Duration::from_secs(4));
    let running = srv.is_running();
    let held = started.elapsed();
    let _ = trickle.join();
    (running, held)
}

#[test]
fn empty_data_frames_are_no_progress_in_a_part() {
    let (running, _) = trickle_holds(false);
    assert!(!running, "control: a whole offer is cut off");
    let (running, held) = trickle_holds(true);
    assert!(
        !running,
        "a sender of empty DATA frames still holds the one-shot receiver after {held:?} (idle timeout 1s)"
    );
}

/// Names of about 4,000 bytes under `top`, in walk order.
fn fat_entries(top: &str, n: usize) -> Vec<Entry> {
    let comp = "x".repeat(250);
    let deep: Vec<&str> = std::iter::repeat_n(comp.as_str(), 15).collect();
    let parent = format!("{top}/{}", deep.join("/"));
    let mut v = vec![wire::dir(top)];
    for i in 0..n {
        v.push(wire::file(
            &format!("{parent}/{i:08}{}", "y".repeat(200)),
            0,
        ));
    }
    v
}

/// The answer to a second offer of about 110 MiB of names while a first
/// one of about 170 MiB (whole, or the first part of a tree in parts) is
/// held: past the 256 MiB for all offers in progress, it is refused.
fn second_offer_answer(srv: &Server, first_continued: bool) -> Option<FrameType> {
    // About 170 MiB once decoded (two entries' worth of Entry, the name,
    // and the bytes as read).
    let a = offer_frames(fat_entries("a", 21_000), first_continued);
    let mut ha = HandSender::open(&srv.addr, &srv.fingerprint, &a);
    assert_eq!(ha.first_frame().map(|f| f.0), Some(FrameType::Accept));
    // A second offer of about 110 MiB: with A's 170 MiB still counted,
    // that is past 256 MiB.
    let b = offer_frames(fat_entries("b", 13_500), false);
    let mut hb = HandSender::open(&srv.addr, &srv.fingerprint, &b);
    let got = hb.first_frame().map(|f| f.0);
    drop(ha);
    drop(hb);
    got
}

#[test]
fn a_claimed_part_counts_against_the_offer_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--keep-open", "--out", "in"]);
    let control = second_offer_answer(&srv, false);
    assert_eq!(
        control,
        Some(FrameType::Reject),
        "control: a whole first offer keeps its grant"
    );
    srv.wait_event("error");
    thread::sleep(Duration::from_secs(2));
    let got = second_offer_answer(&srv, true);
    assert!(srv.is_running());
    assert_eq!(
        got,
        Some(FrameType::Reject),
        "a second offer was taken while a claimed part's names were held outside the budget"
    );
}

/// `dirs` directories of `per_dir` empty files under `root`.
fn empty_tree(root: &std::path::Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            fs::File::create(dir.join(format!("f{f:04}"))).unwrap();
        }
    }
}

/// `pincat send EXTRA ADDR --pin FP [--code C] SRC` to `srv`, bounded.
fn send_tree(srv: &Server, extra: &[&str], src: &std::path::Path) -> std::process::Output {
    crate::util::cli::send_through(srv, &srv.addr, extra, &[src])
}

fn kept_bytes(dst: &std::path::Path) -> u64 {
    let Ok(rd) = fs::read_dir(dst.join(".pincat-state/kept")) else {
        return 0;
    };
    rd.map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

/// A later part refused for space keeps the parts confirmed before it for
/// a resume (README: "what arrived is kept for a resume").
#[test]
fn a_full_disk_in_a_later_part_keeps_the_parts_before() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs_) = crate::util::fs::Tmpfs::mount(&tmp.path().join("fs"), "400m") else {
        return;
    };
    let src = tmp.path().join("src/t");
    empty_tree(&src, 50, 1000);
    // In the first part: 20 MiB of data. In the second: a (sparse) file
    // larger than what is left.
    fs::write(src.join("a-big"), crate::util::random_bytes(20 << 20, 7)).unwrap();
    let huge = fs::File::create(src.join("z-huge")).unwrap();
    huge.set_len(500 << 20).unwrap();
    let base = fs_.path();
    let mut srv = Server::start(base, &["--keep-open", "--out", "dst"]);
    let out = send_tree(&srv, &[], &src);
    let err = srv.wait_event("error");
    eprintln!("sender: {}\nreceiver: {err}", text(&out.stderr));
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(err["code"], "no-space", "{err}");
    let kept = kept_bytes(&base.join("dst"));
    assert!(
        kept >= 20 << 20,
        "the first part (20 MiB, confirmed by its digests) was not kept for a resume: {kept} bytes kept"
    );
}

/// `--strict` (exit 11, "nothing was sent"): a FIFO in the second part is
/// found before anything is sent.
#[test]
fn strict_sends_nothing_of_a_tree_in_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src/t");
    empty_tree(&src, 50, 1000);
    fs::write(src.join("a-data"), crate::util::random_bytes(1 << 20, 3)).unwrap();
    let fifo = std::ffi::CString::new(src.join("z-fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let mut srv = Server::start(tmp.path(), &["--out", "dst"]);
    let out = send_tree(&srv, &["--strict"], &src);
    eprintln!("sender: {:?} {}", out.status.code(), text(&out.stderr));
    assert_eq!(out.status.code(), Some(11));
    srv.drain(Duration::from_secs(1));
    let started = srv.seen_named("transfer-started").len();
    let kept = kept_bytes(&tmp.path().join("dst"));
    assert!(
        started == 0 && kept == 0,
        "--strict (exit 11, 'nothing was sent'): the receiver started the transfer ({started}) and keeps {kept} bytes of it; still running: {}",
        srv.is_running()
    );
}

/// Later parts that try links, reserved names, a top the output has, a
/// file at the top, or nothing at all are refused, and nothing is stored.
#[test]
fn later_parts_that_attack_the_store_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("inbox/there")).unwrap();
    let mut srv = Server::start(tmp.path(), &["--keep-open", "--out", "inbox"]);
    let mut link = wire::file("t/l", 0);
    link.link = Some("sub".into());
    let first = |extra: Vec<Entry>| {
        let mut e = vec![wire::dir("t"), wire::file("t/a", 4)];
        e.extend(extra);
        let mut s = offer_frames(e, true);
        s.extend(frame(FrameType::Data, b"evil"));
        s.extend(frame(FrameType::End, &protocol::encode_counts(1, 4)));
        s
    };
    let cases: Vec<(&str, Vec<Entry>, Vec<Entry>)> = vec![
        (
            "under a link",
            vec![link.clone()],
            vec![wire::file("t/l/x", 0)],
        ),
        (
            "reserved",
            vec![],
            vec![wire::dir(".pincat-state"), wire::file(".pincat-state/x", 0)],
        ),
        (
            "reserved-dash",
            vec![],
            vec![wire::dir(".pincat-state-0123456789abcdef")],
        ),
        (
            "existing top",
            vec![],
            vec![wire::dir("there"), wire::file("there/x", 0)],
        ),
        ("file at the top", vec![], vec![wire::file("top-file", 0)]),
        ("nothing", vec![], vec![]),
    ];
    for (what, extra, second) in cases {
        let mut script = first(extra);
        script.extend(offer_frames(second, false));
        let frames = crate::util::peers::fake_sender(&srv.addr, &srv.fingerprint, &script);
        let types: Vec<FrameType> = frames.iter().map(|(t, _)| *t).collect();
        assert_eq!(types.last(), Some(&FrameType::Error), "{what}: {types:?}");
        let ev = srv.wait_event("error");
        eprintln!("{what}: {ev}");
        let mut left: Vec<_> = fs::read_dir(tmp.path().join("inbox"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != ".pincat-state")
            .collect();
        left.sort();
        assert_eq!(left, ["there"], "{what}: something was stored");
        assert_eq!(
            fs::read_dir(tmp.path().join("inbox/there"))
                .unwrap()
                .count(),
            0
        );
    }
}

/// Between parts the receiver takes KEEPALIVE (a sender walking its next
/// part) past its idle timeout, and the transfer completes.
#[test]
fn keepalive_between_parts_is_taken_past_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--out", "in", "--idle-timeout", "1s"];
    let mut srv = Server::start(dir.path(), &args);
    let mut script = offer_frames(vec![wire::dir("t"), wire::file("t/a", 4)], true);
    script.extend(frame(FrameType::Data, b"part"));
    script.extend(frame(FrameType::End, &protocol::encode_counts(1, 4)));
    let mut h = HandSender::open(&srv.addr, &srv.fingerprint, &script);
    assert_eq!(h.first_frame().map(|f| f.0), Some(FrameType::Accept));
    assert_eq!(h.read_frame().0, FrameType::Digests);
    for _ in 0..10 {
        h.write(&frame(FrameType::Keepalive, &[])).unwrap();
        thread::sleep(Duration::from_millis(300));
    }
    h.write(&offer_frames(vec![wire::file("t/b", 3)], false))
        .unwrap();
    assert_eq!(h.read_frame().0, FrameType::Accept);
    h.data(b"two");
    let (t, msg) = h.end(1, 3);
    assert_eq!(t, FrameType::Receipt, "{msg}");
    assert_eq!(fs::read(dir.path().join("in/t/b")).unwrap(), b"two");
    assert_eq!(srv.wait_exit().0, Some(0));
}
