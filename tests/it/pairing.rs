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
