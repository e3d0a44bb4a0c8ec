//! Trust that lasts: the key exchange pincat negotiates (hybrid
//! post-quantum by default, classical with peers that lack it).

use std::process::{Command, Stdio};

use crate::util::tools::cmd_exists;
use crate::util::{Server, WAIT, send, text, wait_output};

#[test]
fn pincat_peers_agree_on_hybrid_post_quantum_key_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "got"]);
    let out = send(&srv.addr, &srv.fingerprint, &["--json"], b"hello");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ev = srv.wait_event("connected");
    assert_eq!(ev["key_exchange"], "X25519MLKEM768", "{ev}");
    assert_eq!(ev["tls_version"], "TLSv1_3");
    assert!(ev["cipher_suite"].as_str().unwrap().starts_with("TLS13_"));
    // The sender reports the same on its side.
    let sent = text(&out.stderr);
    assert!(
        sent.contains("\"key_exchange\":\"X25519MLKEM768\""),
        "{sent}"
    );
}

#[test]
fn a_classical_peer_still_gets_in() {
    if !cmd_exists("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--raw", "--out", "got"]);
    let client = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(printf classical; sleep 0.5) | openssl s_client -nocommands -tls1_3 -groups X25519 -connect {}",
            srv.addr
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_output(client, WAIT);
    let ev = srv.wait_event("connected");
    assert_eq!(ev["key_exchange"], "X25519", "{ev}");
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(std::fs::read(dir.path().join("got")).unwrap(), b"classical");
}
