//! Progress where people look (issue 26): the receiving side (`serve`,
//! `get`) and `offer` as the giver draw the sender's bar, rate and ETA on a
//! terminal (a pseudo-terminal here); a log file gets a progress line every
//! few seconds and the summary, on both ends, and nothing with --quiet.
//! Transfers go through a proxy that carries them slowly, so they last
//! long enough to be watched (never asserting any speed).

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::util::fs::write_repeated;
use crate::util::process::KillOnDrop;
use crate::util::slow::slow_proxy;
use crate::util::term::Pty;
use crate::util::{WAIT, pincat, send, sha256, text, wait_output, wait_until};

/// The address and fingerprint a listener printed for people in `text`.
fn listening(text: &str) -> (String, String) {
    let mut addr = None;
    let mut fp = None;
    for l in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(a) = l.strip_prefix("pincat: listening on ") {
            addr = Some(a.to_string());
        }
        if let Some(f) = l.strip_prefix("pincat: fingerprint sha256:") {
            fp = Some(f.to_string());
        }
    }
    (
        addr.expect("no listening line"),
        fp.expect("no fingerprint line"),
    )
}

/// Starts `pincat VERB --listen 127.0.0.1:0 --allow-any ARGS` in `dir`
/// with its stderr on `stderr`.
fn listener(verb: &str, dir: &Path, args: &[&str], stderr: Stdio) -> KillOnDrop {
    let child = pincat()
        .args([verb, "--listen", "127.0.0.1:0", "--allow-any"])
        .args(args)
        .current_dir(dir)
        // As a person's terminal has it (CI may run without one).
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// A file of `len` bytes in `dir`.
fn data_file(dir: &Path, name: &str, len: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    write_repeated(&p, b"progress on both ends, ", len);
    p
}

/// What a bar for a known total shows: bytes of the total, a rate, an ETA.
fn shows_a_bar(screen: &str, total: &str) -> bool {
    screen.contains(&format!("/{total} ")) && screen.contains("iB/s eta ")
}

#[test]
fn serve_on_a_terminal_draws_the_bar_rate_and_eta() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), "three.bin", 3 << 20);
    let pty = Pty::open();
    let _srv = listener("serve", dir.path(), &["--out", "in"], pty.stdio());
    assert!(
        pty.wait_for("pincat: fingerprint sha256:"),
        "{}",
        pty.text()
    );
    let (addr, fp) = listening(&pty.text());
    let via = slow_proxy(&addr, 64 << 10, Duration::from_millis(50));
    let sent = send(&via, &fp, &[file.to_str().unwrap()], b"");
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert!(pty.wait_for("pincat: done: 1 file(s)"), "{}", pty.text());
    let screen = pty.text();
    assert!(shows_a_bar(&screen, "3.00 MiB"), "{screen}");
    // The bar is drawn between the transfer's first and last lines.
    let (started, bar) = (
        screen.find("pincat: receiving 1 file(s)"),
        screen.find(" eta "),
    );
    assert!(started.unwrap() < bar.unwrap(), "{screen}");
    let got = fs::read(dir.path().join("in/three.bin")).unwrap();
    assert_eq!(sha256(&got), sha256(&fs::read(&file).unwrap()));
}

#[test]
fn offer_and_get_on_terminals_both_draw_the_bar() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), "two.bin", 2 << 20);
    let giver = Pty::open();
    let _off = listener("offer", dir.path(), &["two.bin"], giver.stdio());
    assert!(
        giver.wait_for("pincat: fingerprint sha256:"),
        "{}",
        giver.text()
    );
    let (addr, fp) = listening(&giver.text());
    let via = slow_proxy(&addr, 64 << 10, Duration::from_millis(50));
    let taker = Pty::open();
    let get = pincat()
        .args(["get", &via, "--pin", &fp, "--out", "in"])
        .current_dir(dir.path())
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(taker.stdio())
        .spawn()
        .unwrap();
    let got = wait_output(get, WAIT);
    assert_eq!(got.status.code(), Some(0), "{}", taker.text());
    assert!(
        giver.wait_for("pincat: done: 1 file(s)"),
        "{}",
        giver.text()
    );
    assert!(
        taker.wait_for("pincat: done: 1 file(s)"),
        "{}",
        taker.text()
    );
    assert!(shows_a_bar(&giver.text(), "2.00 MiB"), "{}", giver.text());
    assert!(shows_a_bar(&taker.text(), "2.00 MiB"), "{}", taker.text());
    assert!(giver.text().contains("pincat: sending 1 file(s)"));
    assert!(taker.text().contains("pincat: receiving 1 file(s)"));
    let back = fs::read(dir.path().join("in/two.bin")).unwrap();
    assert_eq!(sha256(&back), sha256(&fs::read(&file).unwrap()));
}

/// The lines of `log` that report progress of a known total.
fn progress_lines(log: &str, verb: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.starts_with(&format!("pincat: {verb} ")) && l.contains(" of 6.0 MiB ("))
        .map(str::to_string)
        .collect()
}

#[test]
fn logs_get_a_line_every_few_seconds_and_the_summary_on_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    // At most 64 KiB per 125 ms: 6 MiB take at least 12 s.
    let file = data_file(dir.path(), "six.bin", 6 << 20);
    let serve_log = dir.path().join("serve.log");
    let log = fs::File::create(&serve_log).unwrap();
    let _srv = listener("serve", dir.path(), &["--out", "in"], Stdio::from(log));
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    assert!(wait_until(WAIT, || read(&serve_log).contains("fingerprint")));
    let (addr, fp) = listening(&read(&serve_log));
    let via = slow_proxy(&addr, 64 << 10, Duration::from_millis(125));
    let send_log = dir.path().join("send.log");
    let sender = pincat()
        .args(["send", &via, "--pin", &fp, file.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&send_log).unwrap())
        .spawn()
        .unwrap();
    let sent = wait_output(sender, WAIT);
    assert_eq!(sent.status.code(), Some(0), "{}", read(&send_log));
    assert!(wait_until(WAIT, || read(&serve_log).contains("pincat: done:")));

    let (theirs, ours) = (read(&serve_log), read(&send_log));
    let received = progress_lines(&theirs, "received");
    assert!(received.len() >= 2, "{theirs}");
    assert!(
        received[0].contains("%)") && received[0].contains("/s"),
        "{theirs}"
    );
    assert!(
        theirs.contains("pincat: done: 1 file(s), 6.0 MiB"),
        "{theirs}"
    );
    assert!(
        !theirs.contains('\r') && !theirs.contains('\u{1b}'),
        "{theirs:?}"
    );
    assert!(progress_lines(&ours, "sent").len() >= 2, "{ours}");
    let last = ours.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pincat: sent 1 file(s), 6.0 MiB") && last.ends_with("receipt confirmed"),
        "{ours}"
    );
    // A sender's log has its progress and its summary, nothing else.
    assert!(
        ours.lines().all(|l| l.starts_with("pincat: sent ")),
        "{ours}"
    );
}

#[test]
fn a_quiet_senders_log_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = data_file(dir.path(), "small.bin", 100_000);
    let serve_log = dir.path().join("serve.log");
    let log = fs::File::create(&serve_log).unwrap();
    let mut srv = listener("serve", dir.path(), &["--out", "in"], Stdio::from(log));
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    assert!(wait_until(WAIT, || read(&serve_log).contains("fingerprint")));
    let (addr, fp) = listening(&read(&serve_log));
    let sent = send(&addr, &fp, &["-q", file.to_str().unwrap()], b"");
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert!(sent.stderr.is_empty(), "{}", text(&sent.stderr));
    assert!(
        wait_until(WAIT, || srv.0.try_wait().unwrap().is_some()),
        "serve went on"
    );
}
