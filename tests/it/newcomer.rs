//! What a newcomer reads (issue 26): each side says what it does
//! ("sending", "receiving raw data"), a refusal is one sentence printed
//! once, a failed connect names the verb that should listen, an offer
//! counts only the gets it gave and outlasts a stray connection,
//! `send --raw` to ncat's own listener succeeds, a stream never sprays onto
//! a terminal unless `--out -` asks, and `--out /dev/null` takes a stream.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::process::KillOnDrop;
use crate::util::term::{Human, Pty};
use crate::util::tools::{cmd_exists, openssl_cert};
use crate::util::{
    Server, WAIT, free_port, pincat, random_bytes, send, sha256, text, wait_output, wait_until,
};

/// `pincat get ADDR --pin FP ARGS` in `dir`, run to completion.
use crate::util::cli::get_in as get;

/// A file holding `data`, as a child's stdin.
fn stdin_of(dir: &Path, data: &[u8]) -> Stdio {
    let p = dir.join("stdin");
    fs::write(&p, data).unwrap();
    Stdio::from(fs::File::open(p).unwrap())
}

/// The lines a command printed on stderr.
fn lines(out: &[u8]) -> Vec<String> {
    text(out).lines().map(str::to_string).collect()
}

#[test]
fn the_giving_side_says_sending_and_the_taking_side_receiving() {
    let base = tempfile::tempdir().unwrap();
    fs::write(base.path().join("f.txt"), b"hello").unwrap();
    let mut off = Human::listen("offer", base.path(), &["f.txt"], Stdio::null());
    let mut args = vec!["--out", "in"];
    args.extend(off.code_args.iter().map(String::as_str));
    let got = get(&off.addr, &off.fingerprint, base.path(), &args);
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    let taker = text(&got.stderr);
    assert!(
        taker.contains("pincat: receiving 1 file(s), 5 B from 127.0.0.1:"),
        "{taker}"
    );
    assert_eq!(off.wait_exit(), Some(0));
    let giver = off.text();
    assert!(
        giver.contains("pincat: sending 1 file(s), 5 B to 127.0.0.1:"),
        "{giver}"
    );
    assert!(!giver.contains("pincat: receiving"), "{giver}");
    assert_eq!(fs::read(base.path().join("in/f.txt")).unwrap(), b"hello");
}

#[test]
fn serve_raw_says_it_receives_raw_data() {
    let base = tempfile::tempdir().unwrap();
    let args = ["--raw", "--allow-any", "--out", "got.bin"];
    let mut srv = Human::listen("serve", base.path(), &args, Stdio::null());
    let sent = send(&srv.addr, &srv.fingerprint, &["--raw"], b"plain bytes");
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert_eq!(srv.wait_exit(), Some(0));
    let said = srv.text();
    assert!(
        said.contains("pincat: receiving raw data from 127.0.0.1:"),
        "{said}"
    );
    assert!(!said.contains("a raw"), "{said}");
    assert_eq!(
        fs::read(base.path().join("got.bin")).unwrap(),
        b"plain bytes"
    );
}

#[test]
fn a_refused_get_says_so_in_one_sentence_once() {
    let base = tempfile::tempdir().unwrap();
    fs::write(base.path().join("f.txt"), b"theirs").unwrap();
    fs::create_dir(base.path().join("in")).unwrap();
    fs::write(base.path().join("in/f.txt"), b"mine").unwrap();
    let mut off = Server::listen("offer", base.path(), &["f.txt"], Stdio::null());
    let got = get(&off.addr, &off.fingerprint, base.path(), &["--out", "in"]);
    assert_eq!(got.status.code(), Some(4), "{}", text(&got.stderr));
    let said = lines(&got.stderr);
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].starts_with("pincat: error: the transfer was refused here: ")
            && said[0].contains("f.txt"),
        "{said:#?}"
    );
    assert_eq!(fs::read(base.path().join("in/f.txt")).unwrap(), b"mine");
    // The offer heard the refusal and goes on waiting for a real getter.
    let refused = off.wait_event("error");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .starts_with("the receiver refused the transfer: "),
        "{refused}"
    );
    assert!(off.is_running());
}

/// A raw TLS listener (`ncat --ssl -l`, no --recv-only, as the README runs
/// it) writing what it receives to `out` and saying `say`; `None` without
/// ncat or openssl.
fn ncat_listener(dir: &Path, out: &Path, say: &[u8]) -> Option<(String, String, KillOnDrop)> {
    if !cmd_exists("ncat") || !cmd_exists("openssl") {
        return None;
    }
    let fp = openssl_cert(dir);
    let port = free_port();
    let child = Command::new("ncat")
        .args(["--ssl", "--ssl-cert", "cert.pem", "--ssl-key", "key.pem"])
        .args(["-l", "127.0.0.1", &port.to_string()])
        .current_dir(dir)
        .stdin(stdin_of(dir, say))
        .stdout(fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Probing the port would use up ncat's one connection: the dialers
    // retry instead.
    Some((format!("127.0.0.1:{port}"), fp, KillOnDrop(child)))
}

#[test]
fn a_get_from_a_raw_listener_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("heard");
    let say = b"hello, this is ncat speaking, not pincat\n";
    let Some((addr, fp, _ncat)) = ncat_listener(dir.path(), &out, say) else {
        return;
    };
    let got = get(&addr, &fp, dir.path(), &["--retry-for", "20s"]);
    assert_eq!(got.status.code(), Some(7), "{}", text(&got.stderr));
    let said = lines(&got.stderr);
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].contains("does not speak the pincat protocol")
            && said[0].contains("the offering side at 127.0.0.1:"),
        "{said:#?}"
    );
}

#[test]
fn send_raw_to_the_readmes_ncat_listener_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("received");
    let Some((addr, fp, _ncat)) = ncat_listener(dir.path(), &out, b"") else {
        return;
    };
    let data = random_bytes(1 << 20, 26);
    let r = send(&addr, &fp, &["--raw", "--retry-for", "20s"], &data);
    let err = text(&r.stderr);
    assert_eq!(r.status.code(), Some(0), "{err}");
    // It says what it cannot know.
    assert!(
        err.contains("warning") && err.contains("close_notify") && err.contains("cannot confirm"),
        "{err}"
    );
    assert!(r.stdout.is_empty());
    let whole = || fs::metadata(&out).is_ok_and(|m| m.len() >= data.len() as u64);
    assert!(wait_until(Duration::from_secs(20), whole));
    assert_eq!(sha256(&fs::read(&out).unwrap()), sha256(&data));
}

#[test]
fn a_get_with_nobody_listening_names_pincat_offer() {
    let base = tempfile::tempdir().unwrap();
    fs::write(base.path().join("f.txt"), b"once").unwrap();
    let mut off = Server::listen("offer", base.path(), &["f.txt"], Stdio::null());
    let first = get(&off.addr, &off.fingerprint, base.path(), &["--out", "a"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(off.wait_exit().0, Some(0));
    let late = get(&off.addr, &off.fingerprint, base.path(), &["--out", "b"]);
    assert_eq!(late.status.code(), Some(8), "{}", text(&late.stderr));
    let said = text(&late.stderr);
    assert!(said.contains("is `pincat offer` running there"), "{said}");
    assert!(!said.contains("pincat serve"), "{said}");
}

#[test]
fn a_mistaken_send_does_not_use_up_the_only_get() {
    let base = tempfile::tempdir().unwrap();
    fs::write(base.path().join("f.txt"), b"for one getter").unwrap();
    let args = ["--keep-open", "--max-gets", "1", "f.txt"];
    let mut off = Server::listen("offer", base.path(), &args, Stdio::null());
    let wrong = send(&off.addr, &off.fingerprint, &[], b"oops");
    assert_eq!(wrong.status.code(), Some(7), "{}", text(&wrong.stderr));
    let mismatch = off.wait_event("error");
    assert!(
        mismatch["message"]
            .as_str()
            .unwrap()
            .contains("role mismatch"),
        "{mismatch}"
    );
    let got = get(&off.addr, &off.fingerprint, base.path(), &["--out", "in"]);
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    assert_eq!(
        fs::read(base.path().join("in/f.txt")).unwrap(),
        b"for one getter"
    );
    assert_eq!(
        off.wait_exit().0,
        Some(0),
        "the offer ends once its get was given"
    );
    assert_eq!(off.seen_named("transfer-done").len(), 1);
}

#[test]
fn a_one_shot_offer_outlasts_a_stray_connection() {
    let base = tempfile::tempdir().unwrap();
    fs::write(base.path().join("f.txt"), b"for the getter").unwrap();
    let mut off = Server::listen("offer", base.path(), &["f.txt"], Stdio::null());
    let wrong = send(&off.addr, &off.fingerprint, &[], b"oops");
    let err = text(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(7), "{err}");
    // Nothing was taken: there is no resume to talk about.
    assert!(
        err.contains("role mismatch") && !err.contains("resume"),
        "{err}"
    );
    off.wait_event("error");
    assert!(off.is_running(), "the offer ended on a stray connection");
    let got = get(&off.addr, &off.fingerprint, base.path(), &["--out", "in"]);
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    assert_eq!(
        fs::read(base.path().join("in/f.txt")).unwrap(),
        b"for the getter"
    );
    assert_eq!(off.wait_exit().0, Some(0));
}

#[test]
fn a_one_shot_stream_offer_outlasts_a_stray_connection() {
    let base = tempfile::tempdir().unwrap();
    let data = crate::util::random_bytes(300_000, 41);
    fs::write(base.path().join("stream.bin"), &data).unwrap();
    let input = fs::File::open(base.path().join("stream.bin")).unwrap();
    let mut off = Server::listen("offer", base.path(), &[], Stdio::from(input));
    // Not a byte of the stream goes before a taker accepts: a mistaken
    // send (no taker) leaves it whole for the real getter.
    let wrong = send(&off.addr, &off.fingerprint, &[], b"oops");
    assert_eq!(wrong.status.code(), Some(7), "{}", text(&wrong.stderr));
    off.wait_event("error");
    assert!(
        off.is_running(),
        "the stream offer ended on a stray connection"
    );
    let got = get(&off.addr, &off.fingerprint, base.path(), &[]);
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    assert!(
        got.stdout == data,
        "{} of {} bytes",
        got.stdout.len(),
        data.len()
    );
    assert_eq!(off.wait_exit().0, Some(0));
}

#[test]
fn serve_raw_refuses_a_terminal_stdout_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let pty = Pty::open();
    let child = pincat()
        .args(["serve", "--raw", "--allow-any", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(pty.stdio())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, WAIT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "binary output to a terminal: add --out FILE, or --out - to write it here anyway"
        ),
        "{err}"
    );
    assert!(!err.contains("listening"), "{err}");
}

/// `pincat serve --allow-any ARGS` in `dir` with its stdout on `pty`.
fn serve_on(pty: &Pty, dir: &Path, args: &[&str]) -> Human {
    let mut cmd = pincat();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--allow-any"])
        .args(args);
    Human::launch(cmd, dir, Stdio::null(), pty.stdio())
}

#[test]
fn a_stream_for_a_terminal_is_refused_and_files_still_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let pty = Pty::open();
    let mut srv = serve_on(&pty, dir.path(), &[]);
    let secret = b"BINARY-BYTES-NOT-FOR-A-TERMINAL";
    let sent = send(&srv.addr, &srv.fingerprint, &[], secret);
    let err = text(&sent.stderr);
    assert_eq!(sent.status.code(), Some(4), "{err}");
    assert!(
        err.contains("the receiver refused the transfer: binary output to a terminal")
            && err.contains("--out -"),
        "{err}"
    );
    srv.wait_line("binary output to a terminal");
    // Files are not for stdout: the same one-shot receiver takes them.
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("a.txt"), b"a file").unwrap();
    let path = src.path().join("a.txt");
    let ok = send(&srv.addr, &srv.fingerprint, &[path.to_str().unwrap()], b"");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert_eq!(srv.wait_exit(), Some(0));
    assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"a file");
    assert!(!pty.text().contains("BINARY-BYTES"), "{}", pty.text());
}

#[test]
fn out_dash_writes_a_stream_to_the_terminal_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let pty = Pty::open();
    let mut srv = serve_on(&pty, dir.path(), &["--out", "-"]);
    let sent = send(&srv.addr, &srv.fingerprint, &[], b"shown on purpose\n");
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert_eq!(srv.wait_exit(), Some(0));
    assert!(pty.wait_for("shown on purpose"), "{}", pty.text());
}

#[test]
fn dev_null_takes_a_stream_and_refuses_files() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--allow-any", "--out", "/dev/null"];
    let mut srv = Human::listen("serve", dir.path(), &args, Stdio::null());
    let data = random_bytes(1 << 20, 27);
    let sent = send(&srv.addr, &srv.fingerprint, &[], &data);
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert_eq!(srv.wait_exit(), Some(0));
    assert!(
        srv.text().contains("pincat: done: 1.0 MiB"),
        "{}",
        srv.text()
    );
    use std::os::unix::fs::FileTypeExt;
    let null = fs::metadata("/dev/null").unwrap();
    assert!(null.file_type().is_char_device(), "/dev/null was replaced");

    // Files into /dev/null make no sense: get says why, and stores nothing.
    fs::write(dir.path().join("f.txt"), b"file").unwrap();
    let mut off = Server::listen("offer", dir.path(), &["f.txt"], Stdio::null());
    let got = get(
        &off.addr,
        &off.fingerprint,
        dir.path(),
        &["--out", "/dev/null"],
    );
    let err = text(&got.stderr);
    assert_eq!(got.status.code(), Some(4), "{err}");
    assert!(
        err.contains("/dev/null is a device: it takes a stream, not files"),
        "{err}"
    );
    off.kill();
}

#[test]
fn a_raw_ncat_client_refused_by_serve_is_reported_once() {
    if !cmd_exists("ncat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = ["--raw", "--allow-any", "--out", "got.bin"];
    let mut srv = Human::listen("serve", dir.path(), &args, Stdio::null());
    let (host, port) = srv.addr.rsplit_once(':').unwrap();
    let client = Command::new("ncat")
        .args(["--ssl", "--send-only", host, port])
        .stdin(stdin_of(dir.path(), &random_bytes(10_000, 28)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = wait_output(client, WAIT);
    if srv.wait_exit() == Some(0) {
        // A newer ncat that ends with close_notify: nothing to refuse.
        return;
    }
    let said = srv.text();
    assert_eq!(said.matches("close_notify").count(), 1, "{said}");
    assert!(!dir.path().join("got.bin").exists());
}
