//! End-to-end transfers with the real binary on loopback: streams, files,
//! refusals, and peers that die mid-transfer.

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::cli::{send_cmd, spawn_sender};
use crate::util::fs::tree;
use crate::util::tools::{cmd_exists, openssl_fingerprint_hex};
use crate::util::{Server, WAIT, process, random_bytes, send, sha256, text, wait_output};

#[test]
fn stdin_stream_arrives_byte_identical_and_serve_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let data = random_bytes(8 << 20, 1);
    let out = send(&srv.addr, &srv.fingerprint, &[], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (code, stdout) = srv.wait_exit();
    assert_eq!(code, Some(0));
    assert_eq!(stdout.len(), data.len());
    assert_eq!(sha256(&stdout), sha256(&data));
    let done = srv.seen_named("transfer-done");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["bytes"], data.len() as u64);
    assert_eq!(done[0]["kind"], "stream");
}

#[test]
fn stream_into_out_file_with_digest() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "got.bin"]);
    let data = random_bytes(32 << 20, 2);
    let out = send(&srv.addr, &srv.fingerprint, &["-"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    let got = fs::read(dir.path().join("got.bin")).unwrap();
    assert_eq!(sha256(&got), sha256(&data));
    // Nothing else (no temporary file) is left in the directory.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn files_and_nested_directory_keep_contents_and_relative_paths() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let s = src.path();
    fs::write(s.join("one.txt"), b"first file\n").unwrap();
    fs::write(s.join("empty"), b"").unwrap();
    fs::create_dir_all(s.join("tree/sub/deeper")).unwrap();
    fs::create_dir_all(s.join("tree/empty-dir")).unwrap();
    fs::write(s.join("tree/a.bin"), random_bytes(300_000, 3)).unwrap();
    fs::write(s.join("tree/sub/b.bin"), random_bytes(1 << 20, 4)).unwrap();
    fs::write(s.join("tree/sub/deeper/c.txt"), b"deep").unwrap();
    fs::write(s.join("tree/sub/zero"), b"").unwrap();

    let mut srv = Server::start(dst.path(), &["--out", "inbox"]);
    let paths: Vec<String> = ["one.txt", "empty", "tree"]
        .iter()
        .map(|p| s.join(p).to_string_lossy().into_owned())
        .collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let out = send(&srv.addr, &srv.fingerprint, &args, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));

    let mut want = tree(s);
    want.sort();
    let got = tree(&dst.path().join("inbox"));
    assert_eq!(got, want);
    let done = srv.seen_named("transfer-done");
    assert_eq!(done[0]["files"], 6);
}

#[test]
fn wrong_pin_exits_3_names_both_fingerprints_and_delivers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "x.bin"]);
    let wrong = "ab".repeat(32);
    let out = send(&srv.addr, &wrong, &[], b"secret payload");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&wrong), "{err}");
    assert!(err.contains(&srv.fingerprint), "{err}");
    assert!(err.contains("impersonating"), "{err}");
    thread::sleep(Duration::from_millis(200));
    srv.kill();
    srv.drain(Duration::from_millis(200));
    assert!(
        srv.seen_named("transfer-started").is_empty(),
        "{:?}",
        srv.seen
    );
    assert!(srv.seen_named("connected").is_empty(), "{:?}", srv.seen);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn malformed_pins_are_usage_errors() {
    for bad in [
        "abcd",
        &"a".repeat(63),
        &"a".repeat(66),
        &"zz".repeat(32),
        "sha1:00",
    ] {
        let out = send("127.0.0.1:9", bad, &[], b"");
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--pin"), "{}", text(&out.stderr));
    }
}

#[test]
fn pin_accepts_openssl_form_and_sha256_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let upper_colons: Vec<String> = srv
        .fingerprint
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let pasted = format!("SHA256 Fingerprint={}", upper_colons.join(":"));
    let out = send(&srv.addr, &pasted, &[], b"hi");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(srv.wait_exit().1, b"hi");
}

#[test]
fn existing_target_is_never_overwritten_and_sender_fails() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::write(src.path().join("report.txt"), b"new contents").unwrap();
    fs::write(dst.path().join("report.txt"), b"precious").unwrap();
    let mut srv = Server::start(dst.path(), &[]);
    let f = src.path().join("report.txt");
    let out = send(&srv.addr, &srv.fingerprint, &[f.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read(dst.path().join("report.txt")).unwrap(),
        b"precious"
    );
    srv.wait_event("refused");
    // The refusal stored nothing, so the one-shot receiver still waits.
    assert!(srv.is_running());
    assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 1);

    // Same for a stream into an existing --out file.
    let mut srv = Server::start(dst.path(), &["--out", "report.txt"]);
    let out = send(&srv.addr, &srv.fingerprint, &[], b"overwrite?");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(
        fs::read(dst.path().join("report.txt")).unwrap(),
        b"precious"
    );
    srv.kill();
}

#[test]
fn receiver_killed_mid_transfer_makes_sender_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "part.bin"]);
    let mut tx = spawn_sender(&srv.addr, &srv.fingerprint);
    let mut stdin = tx.stdin.take().unwrap();
    let chunk = random_bytes(1 << 20, 5);
    stdin.write_all(&chunk).unwrap();
    srv.wait_event("transfer-started");
    srv.kill();
    // Keep feeding until the sender notices and exits (bounded).
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && tx.try_wait().unwrap().is_none() {
        if stdin.write_all(&chunk).is_err() {
            break;
        }
    }
    drop(stdin);
    let out = wait_output(tx, WAIT);
    assert_ne!(out.status.code(), Some(0), "sender reported success");
    assert!(!text(&out.stderr).is_empty());
    assert!(!dir.path().join("part.bin").exists());
}

#[test]
fn sender_killed_mid_transfer_leaves_no_file_under_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "part.bin"]);
    let mut tx = spawn_sender(&srv.addr, &srv.fingerprint);
    let mut stdin = tx.stdin.take().unwrap();
    stdin.write_all(&random_bytes(3 << 20, 6)).unwrap();
    srv.wait_event("progress");
    tx.kill().unwrap();
    let _ = tx.wait();
    let (code, _) = srv.wait_exit();
    assert_ne!(code, Some(0));
    assert!(!dir.path().join("part.bin").exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "leftovers");
    assert_eq!(srv.seen_named("transfer-done").len(), 0);
    let errors = srv.seen_named("error");
    assert!(
        errors.iter().any(|e| e["peer"].is_string()
            && e["message"]
                .as_str()
                .unwrap()
                .contains("nothing was stored")),
        "{:?}",
        srv.seen
    );
}

#[test]
fn sender_killed_mid_directory_leaves_nothing() {
    // Files are only named after the whole transfer is confirmed.
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("d/a"), b"complete small file").unwrap();
    let fifo = src.path().join("d/slow");
    fs::write(&fifo, random_bytes(64 << 20, 7)).unwrap();
    let mut srv = Server::start(dst.path(), &["--resume-wait", "1s"]);
    let tx = send_cmd(&srv.addr, &srv.fingerprint)
        .arg(src.path().join("d"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    srv.wait_event("transfer-started");
    // SIGKILL the sender as soon as data flows.
    process::signal(tx.id(), libc::SIGKILL);
    let _ = wait_output(tx, WAIT);
    let (code, _) = srv.wait_exit();
    if code == Some(0) {
        // The transfer won the race; then it must be complete and identical.
        assert_eq!(tree(&dst.path().join("d")), tree(&src.path().join("d")));
    } else {
        // What arrived was kept for a resume while the receiver waited;
        // under a code made for this run nobody can resume it once the
        // receiver ends, so it is gone with it.
        let left: Vec<_> = fs::read_dir(dst.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "leftovers {left:?}");
    }
}

#[test]
fn openssl_sees_the_printed_fingerprint() {
    if !cmd_exists("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let client = Command::new("openssl")
        .args(["s_client", "-connect", &srv.addr, "-tls1_3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = wait_output(client, WAIT);
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let fp = wait_output(x509, WAIT);
    let line = text(&fp.stdout);
    assert_eq!(openssl_fingerprint_hex(&line), srv.fingerprint);
    srv.kill();
}

#[test]
fn ipv6_loopback_works_when_available() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start_on("[::1]:0", dir.path(), &[]);
    assert!(srv.addr.starts_with("[::1]:"), "{}", srv.addr);
    let out = send(&srv.addr, &srv.fingerprint, &[], b"over v6");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(srv.wait_exit().1, b"over v6");
}

#[test]
fn a_link_out_of_the_transfer_is_refused_sent_with_no_links_or_allowed() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("d/real"), b"real").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.path().join("d/link")).unwrap();
    let d = src.path().join("d");
    let d = d.to_str().unwrap();
    // By default the link goes as a link, and this receiver refuses one
    // that points outside what is sent: exit 4, nothing stored.
    let dst = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dst.path(), &[]);
    let out = send(&srv.addr, &srv.fingerprint, &[d], b"");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--allow-outside-links"));
    srv.kill();
    assert!(!dst.path().join("d").exists());
    // --no-links: skipped with a warning, the rest arrives.
    let mut srv = Server::start(dst.path(), &[]);
    let out = send(&srv.addr, &srv.fingerprint, &[d, "--no-links"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("skipping") && text(&out.stderr).contains("link"),
        "{}",
        text(&out.stderr)
    );
    srv.wait_exit();
    assert_eq!(fs::read(dst.path().join("d/real")).unwrap(), b"real");
    assert!(fs::symlink_metadata(dst.path().join("d/link")).is_err());
    // A receiver that allows it gets the link itself, never followed.
    let dst = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dst.path(), &["--allow-outside-links"]);
    let out = send(&srv.addr, &srv.fingerprint, &[d], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    srv.wait_exit();
    let link = dst.path().join("d/link");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_link(&link).unwrap(),
        std::path::Path::new("/etc/passwd")
    );
}
