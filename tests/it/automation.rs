//! Identities, mutual pinning, the keep-open server and the interfaces
//! automation relies on, with the real binary on loopback.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use pincat::Identity;

use crate::util::cli::{identity_new, send_cmd};
use crate::util::data::json_lines;
use crate::util::peers::{connect, forged, presenting_client};
use crate::util::{Server, WAIT, free_port, pincat, random_bytes, send, sha256, text, wait_output};

#[test]
fn persistent_identity_keeps_its_fingerprint_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fp = identity_new(dir.path(), "id.pem");
    assert_eq!(fp.len(), 64);
    let mode = fs::metadata(dir.path().join("id.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = pincat()
        .args(["fingerprint", "id.pem"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), fp);

    let before = fs::read(dir.path().join("id.pem")).unwrap();
    let again = pincat()
        .args(["identity", "new", "id.pem"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_ne!(again.status.code(), Some(0));
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(fs::read(dir.path().join("id.pem")).unwrap(), before);

    for _ in 0..2 {
        let mut srv = Server::start(dir.path(), &["--identity", "id.pem"]);
        assert_eq!(srv.fingerprint, fp);
        let r = send(&srv.addr, &fp, &[], b"same identity");
        assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
        assert_eq!(srv.wait_exit().1, b"same identity");
    }
}

#[test]
fn fingerprint_of_garbage_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("junk"), b"not a certificate").unwrap();
    let out = pincat()
        .args(["fingerprint", "junk"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no certificate found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn mutual_pinning_admits_the_listed_sender_only() {
    let dir = tempfile::tempdir().unwrap();
    let alice = identity_new(dir.path(), "alice.pem");
    let _mallory = identity_new(dir.path(), "mallory.pem");
    let carol = identity_new(dir.path(), "carol.pem");
    fs::write(
        dir.path().join("allowed"),
        format!("# senders\n\n{}  # carol\n", carol.to_uppercase()),
    )
    .unwrap();
    fs::create_dir(dir.path().join("in")).unwrap();
    let mut srv = Server::start(
        dir.path(),
        &[
            "--allow",
            &alice,
            "--allow-file",
            "allowed",
            "--out",
            "in",
            "--keep-open",
        ],
    );
    let file = dir.path().join("alice.txt");
    fs::write(&file, b"from alice").unwrap();

    // Unlisted certificate: refused during the handshake, own exit code.
    let m = dir.path().join("mallory.pem");
    let r = send(
        &srv.addr,
        &srv.fingerprint,
        &["--identity", m.to_str().unwrap(), file.to_str().unwrap()],
        b"",
    );
    assert_eq!(r.status.code(), Some(5), "{}", text(&r.stderr));
    let refused = srv.wait_event("refused");
    assert_eq!(refused["reason"], "not-allowed");
    assert_eq!(refused["fingerprint"].as_str().unwrap().len(), 64);

    // No certificate at all.
    let r = send(&srv.addr, &srv.fingerprint, &[file.to_str().unwrap()], b"");
    assert_eq!(r.status.code(), Some(5), "{}", text(&r.stderr));
    assert!(
        text(&r.stderr).contains("--identity"),
        "{}",
        text(&r.stderr)
    );
    srv.wait_event("refused");
    assert_eq!(fs::read_dir(dir.path().join("in")).unwrap().count(), 0);

    // Listed on the command line, and listed in the file.
    let a = dir.path().join("alice.pem");
    let r = send(
        &srv.addr,
        &srv.fingerprint,
        &["--identity", a.to_str().unwrap(), file.to_str().unwrap()],
        b"",
    );
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let c = dir.path().join("carol.pem");
    let r = send(
        &srv.addr,
        &srv.fingerprint,
        &["--identity", c.to_str().unwrap()],
        b"",
    );
    assert_eq!(
        r.status.code(),
        Some(4),
        "a stream into a directory is refused: {}",
        text(&r.stderr)
    );
    let connected = srv.wait_event("connected");
    assert_eq!(connected["fingerprint"], alice);
    assert_eq!(
        fs::read(dir.path().join("in/alice.txt")).unwrap(),
        b"from alice"
    );
}

#[test]
fn impostor_client_with_an_allowed_certificate_but_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let genuine = Identity::generate().unwrap();
    let thief = Identity::generate().unwrap();
    let mut srv = Server::start(
        dir.path(),
        &[
            "--allow",
            &genuine.fingerprint().to_string(),
            "--out",
            "x.bin",
        ],
    );
    let stolen = forged(vec![genuine.cert_der().clone()], &thief);
    let mut tls = connect(&srv.addr, presenting_client(&srv.fingerprint, stolen));
    let _ = tls.write_all(b"PINCAT\x00\x01");
    let mut buf = [0u8; 16];
    let r = tls.read(&mut buf);
    assert!(
        !matches!(r, Ok(n) if n > 0),
        "the server talked to an impostor: {r:?}"
    );
    let refused = srv.wait_event("refused");
    assert_eq!(refused["reason"], "not-allowed", "{refused}");
    assert!(srv.seen_named("connected").is_empty());
    assert!(!dir.path().join("x.bin").exists());
    assert!(srv.is_running(), "server died");
}

#[test]
fn keep_open_handles_20_concurrent_senders_intact() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--keep-open", "--out", "in"]);
    let mut payloads = Vec::new();
    for i in 0..20 {
        let p = src.path().join(format!("f{i:02}"));
        let data = random_bytes(200_000 + i * 7919, 100 + i as u64);
        fs::write(&p, &data).unwrap();
        payloads.push((p, data));
    }
    let handles: Vec<_> = payloads
        .iter()
        .map(|(p, _)| {
            let (addr, fp, p) = (srv.addr.clone(), srv.fingerprint.clone(), p.clone());
            thread::spawn(move || send(&addr, &fp, &[p.to_str().unwrap()], b""))
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    }
    for (p, data) in &payloads {
        let got = fs::read(dir.path().join("in").join(p.file_name().unwrap())).unwrap();
        assert_eq!(sha256(&got), sha256(data));
    }
    for _ in 0..20 {
        srv.wait_event("transfer-done");
    }
    assert!(srv.is_running(), "keep-open server exited");
}

#[test]
fn fifty_idle_connections_do_not_block_a_real_sender() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "got.bin"]);
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&srv.addr).unwrap())
        .collect();
    let start = Instant::now();
    let data = random_bytes(1 << 20, 21);
    let r = send(&srv.addr, &srv.fingerprint, &[], &data);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "waited for the handshake timeout"
    );
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(
        sha256(&fs::read(dir.path().join("got.bin")).unwrap()),
        sha256(&data)
    );
    drop(idle);
}

#[test]
fn garbage_and_plaintext_http_leave_the_server_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "got.bin"]);
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &random_bytes(10_000, 31)[..],
        &b"\x16\x03\x01\x00\x05hello"[..],
    ] {
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        let _ = s.write_all(junk);
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        assert!(!sink.windows(6).any(|w| w == b"PINCAT"));
    }
    for _ in 0..3 {
        let r = srv.wait_event("refused");
        assert_eq!(r["reason"], "handshake", "{r}");
    }
    assert!(srv.is_running(), "server died");
    let r = send(&srv.addr, &srv.fingerprint, &[], b"still here");
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(fs::read(dir.path().join("got.bin")).unwrap(), b"still here");
}

#[test]
fn retry_for_succeeds_when_serve_starts_a_second_later() {
    let dir = tempfile::tempdir().unwrap();
    let fp = identity_new(dir.path(), "id.pem");
    let addr = format!("127.0.0.1:{}", free_port());
    let (a2, fp2) = (addr.clone(), fp.clone());
    // A fixed code, known to both before the listener starts (its failure
    // count lives in the test's own state directory).
    let code = format!("retry {} fixed code", std::process::id());
    let c2 = code.clone();
    let sender =
        thread::spawn(move || send(&a2, &fp2, &["--retry-for", "30s", "--code", &c2], b"raced"));
    thread::sleep(Duration::from_secs(1));
    let state = dir.path().join("state");
    let args = ["--identity", "id.pem", "--code", &code];
    let mut srv = Server::start_on_with(&addr, dir.path(), &args, |c| {
        c.env("PINCAT_STATE_DIR", &state);
    });
    let r = sender.join().unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(srv.wait_exit().1, b"raced");

    // Without --retry-for, nobody listening is exit 8 at once.
    let r = send(&addr, &fp, &[], b"x");
    assert_eq!(r.status.code(), Some(8), "{}", text(&r.stderr));
}

#[test]
fn serve_timeout_gives_up_with_exit_6() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--timeout", "300ms"]);
    let (code, _) = srv.wait_exit();
    assert_eq!(code, Some(6));
    let err = srv.seen_named("error");
    assert_eq!(err.last().unwrap()["code"], "timeout");
}

#[test]
fn send_json_events_follow_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let r = send(
        &srv.addr,
        &srv.fingerprint,
        &["--json"],
        &random_bytes(300_000, 41),
    );
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let events = json_lines(&r.stderr);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"connected"));
    assert_eq!(events[0]["fingerprint"], srv.fingerprint);
    assert!(names.contains(&"transfer-started"));
    let done = events.last().unwrap();
    assert_eq!(done["event"], "transfer-done");
    assert_eq!(done["bytes"], 300_000);
    assert!(done["duration_ms"].as_f64().unwrap() > 0.0);
    srv.wait_exit();

    // Errors are JSON too, with a stable code.
    let r = send(&srv.addr, &"00".repeat(32), &["--json"], b"");
    let last = json_lines(&r.stderr).pop().unwrap();
    assert_eq!(last["event"], "error");
    assert!(
        ["connect", "pin-mismatch"].contains(&last["code"].as_str().unwrap()),
        "{last}"
    );
}

#[test]
fn sigterm_stops_keep_open_cleanly_without_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--keep-open", "--out", "in"]);
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    fs::write(&big, random_bytes(256 << 20, 51)).unwrap();
    let tx = send_cmd(&srv.addr, &srv.fingerprint)
        .arg(&big)
        .spawn()
        .unwrap();
    srv.wait_event("transfer-started");
    srv.signal(libc::SIGTERM);
    let (code, _) = srv.wait_exit();
    let out = wait_output(tx, WAIT);
    let stored = dir.path().join("in/big.bin");
    if stored.exists() {
        // Finished before the signal landed: then it is whole and confirmed.
        assert_eq!(fs::metadata(&stored).unwrap().len(), 256 << 20);
    } else {
        assert_eq!(code, Some(130));
        assert_ne!(out.status.code(), Some(0), "sender claimed success");
        // The directory the transfer created is removed with it.
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "leftovers: {left:?}");
    }
}

#[test]
fn completions_and_man_page_are_generated() {
    let out = pincat().args(["completions", "bash"]).output().unwrap();
    assert!(text(&out.stdout).contains("pincat"));
    assert!(text(&out.stdout).contains("--pin"));
    let out = pincat().arg("man").output().unwrap();
    assert!(
        text(&out.stdout).starts_with(".ie") || text(&out.stdout).contains(".TH"),
        "{}",
        text(&out.stdout)
    );
}
