//! The default admission: a listener serves only the dialer that proves
//! its code. Strangers who connect first get nothing; wrong codes end a
//! one-shot listener; the code alone is a complete dial line.

use std::io::{Read, Write};
use std::process::Stdio;

use crate::util::peers::{connect, prove_code};
use crate::util::{Server, WAIT, pincat, run, text, wait_output};
use pincat::verify::{self, Presented};

fn client_config() -> std::sync::Arc<rustls::ClientConfig> {
    verify::client_config_first_use(None, Presented::default()).unwrap()
}

#[test]
fn strangers_who_connect_first_get_nothing_and_the_real_taker_then_gets_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"the secret").unwrap();
    let mut off = Server::listen("offer", dir.path(), &["secret.txt"], Stdio::null());
    let code = off.code.clone().expect("a code by default");
    assert!(
        off.seen[0]["command"]
            .as_str()
            .unwrap()
            .contains(&format!("--code {code}"))
    );
    // A silent TLS client, one that sends an offer frame without proving,
    // and one that aborts right after the listener's share: none gets a byte.
    let mut silent = connect(&off.addr, client_config());
    let _ = silent.write_all(b"");
    let mut framed = connect(&off.addr, client_config());
    let _ = framed.write_all(&pincat::protocol::preamble());
    let mut got = Vec::new();
    let _ = framed.read_to_end(&mut got);
    assert!(
        !got.windows(10).any(|w| w == b"the secret"),
        "no offer byte leaked"
    );
    drop(silent);
    // The real taker with the code alone (no --pin).
    let out = run(&["get", &off.addr, "--code", &code, "--out", "got"], |c| {
        c.current_dir(dir.path());
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(dir.path().join("got/secret.txt")).unwrap(),
        b"the secret"
    );
    assert_eq!(off.wait_exit().0, Some(0));
}

#[test]
fn three_wrong_codes_end_a_one_shot_serve_with_exit_10_and_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "in"]);
    for i in 0..3 {
        let mut c = pincat();
        c.args(["send", &srv.addr, "--code", "acid-acorn-acre"]);
        let child = c
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, WAIT);
        assert_eq!(
            out.status.code(),
            Some(9),
            "attempt {i}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("the code was not confirmed"));
    }
    let (code, _) = srv.wait_exit();
    assert_eq!(code, Some(10));
    assert!(
        !dir.path().join("in").exists()
            || std::fs::read_dir(dir.path().join("in"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn a_stranger_with_a_wrong_code_uses_an_attempt_and_the_real_sender_still_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let mut tls = connect(&srv.addr, client_config());
    let r = prove_code(&mut tls, &srv.fingerprint, "wrong code here");
    assert!(r.is_err());
    drop(tls);
    let out = crate::util::send(&srv.addr, &srv.fingerprint, &[], b"real data");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (code, stdout) = srv.wait_exit();
    assert_eq!((code, stdout), (Some(0), b"real data".to_vec()));
    assert!(
        srv.seen_named("refused")
            .iter()
            .any(|e| e["reason"] == "code")
    );
}

#[test]
fn allow_any_serves_anyone_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = pincat()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-any",
            "--timeout",
            "200ms",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("anyone who connects first is served"),
        "{}",
        text(&out.stderr)
    );
}

/// A new identity file in `dir`; returns its path.
fn new_identity(dir: &std::path::Path, name: &str) -> String {
    let p = dir.join(name).to_str().unwrap().to_string();
    let out = run(&["identity", "new", &p], |_| {});
    assert!(out.status.success(), "{}", text(&out.stderr));
    p
}

/// `pincat send TARGET ARGS` with the peers file `peers`, "hello" on stdin.
fn send_by(peers: &std::path::Path, target: &str, args: &[&str]) -> std::process::Output {
    let mut c = pincat();
    c.args(["send", target])
        .args(args)
        .env("PINCAT_PEERS", peers)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let w = crate::util::cli::feed(&mut child, b"hello");
    let out = wait_output(child, WAIT);
    let _ = w.join();
    out
}

#[test]
fn save_records_the_code_confirmed_key_and_later_dials_by_name_check_it() {
    let dir = tempfile::tempdir().unwrap();
    let peers = dir.path().join("peers");
    let srv_id = new_identity(dir.path(), "server.id");
    let spki = run(&["fingerprint", "--spki", &srv_id], |_| {});
    let spki = text(&spki.stdout).trim().to_string();
    let mut srv = Server::start(dir.path(), &["--identity", &srv_id]);
    let code = srv.code.clone().unwrap();
    let out = send_by(&peers, &srv.addr, &["--code", &code, "--save", "office"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(srv.wait_exit(), (Some(0), b"hello".to_vec()));
    let saved = std::fs::read_to_string(&peers).unwrap();
    assert!(saved.contains("office") && saved.contains(&spki), "{saved}");
    // The same key on the same address: dialing by name checks it.
    let addr = srv.addr.clone();
    let mut again = Server::start_on(&addr, dir.path(), &["--identity", &srv_id]);
    let code = again.code.clone().unwrap();
    let out = send_by(&peers, "office", &["--code", &code]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(again.wait_exit(), (Some(0), b"hello".to_vec()));
    // Another key there, even with its own right code: a pin mismatch.
    let mut other = Server::start_on(&addr, dir.path(), &[]);
    let code = other.code.clone().unwrap();
    let out = send_by(&peers, "office", &["--code", &code]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(other.is_running());
    other.kill();
    assert!(
        other.seen_named("transfer-started").is_empty(),
        "{:?}",
        other.seen
    );
}

/// Whether a file a program wrote with `env` holds the key or its variable.
fn leaks(env_dump: &str) -> bool {
    env_dump.contains("PRIVATE KEY") || env_dump.contains("PINCAT_TEST_KEY")
}

#[test]
fn identities_from_the_environment_never_reach_a_pipe_exec_program() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let srv_pem = std::fs::read_to_string(new_identity(d, "server.id")).unwrap();
    let cli_pem = std::fs::read_to_string(new_identity(d, "client.id")).unwrap();
    let listener_env = d.join("listener.env");
    let script = format!("env > '{}'; cat", listener_env.display());
    let mut lis = Server::listen_with(
        "pipe",
        d,
        &[
            "--identity",
            "env:PINCAT_TEST_KEY",
            "--exec",
            "sh",
            "-c",
            &script,
        ],
        Stdio::null(),
        |c| {
            c.env("PINCAT_TEST_KEY", &srv_pem);
        },
    );
    let dialer_env = d.join("dialer.env");
    let script = format!(
        "env > '{}'; echo from-dialer; exec cat > /dev/null",
        dialer_env.display()
    );
    let out = run(
        &[
            "pipe",
            &lis.addr,
            "--code",
            lis.code.as_deref().unwrap(),
            "--identity",
            "env:PINCAT_TEST_KEY",
            "--exec",
            "sh",
            "-c",
            &script,
        ],
        |c| {
            c.env("PINCAT_TEST_KEY", &cli_pem);
        },
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(lis.wait_exit().0, Some(0));
    for f in [&listener_env, &dialer_env] {
        let dump = std::fs::read_to_string(f).unwrap();
        assert!(dump.contains("PATH="), "{dump}");
        assert!(!leaks(&dump), "{} holds the key", f.display());
    }
}

#[test]
fn a_dialing_pipe_exec_runs_nothing_when_the_dial_fails() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let script = format!("echo started >> '{}'; cat", marker.display());
    let dial = |target: &str, auth: [&str; 2]| {
        let args = [
            "pipe", target, auth[0], auth[1], "--exec", "sh", "-c", &script,
        ];
        run(&args, |_| {})
    };
    let wrong_pin = "ab".repeat(32);
    // Nothing listens there: exit 8.
    let nobody = format!("127.0.0.1:{}", crate::util::free_port());
    let out = dial(&nobody, ["--pin", &wrong_pin]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    // A listener with another key: exit 3.
    let mut lis = Server::listen("pipe", dir.path(), &["--allow-any"], Stdio::null());
    let out = dial(&lis.addr, ["--pin", &wrong_pin]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    lis.kill();
    // A wrong code: exit 9.
    let mut lis = Server::listen("pipe", dir.path(), &[], Stdio::null());
    let out = dial(&lis.addr, ["--code", "wrong-guess-here"]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    lis.kill();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!marker.exists(), "the program ran although the dial failed");
}
