//! Hostile servers: each presents the genuine certificate in some illegitimate
//! way. `pincat send` must refuse, and the impostor must receive zero
//! application bytes.

use std::io::Read;
use std::thread;

use pincat::Identity;
use rustls::SupportedProtocolVersion;
use rustls::pki_types::CertificateDer;

use crate::util::peers::{ServerTls, forged, presenting_server, tls_listener};
use crate::util::{send, text};

/// Serves one connection with `chain` signed by `key_owner`'s key and
/// returns how many application bytes the client sent.
fn impostor(
    chain: Vec<CertificateDer<'static>>,
    key_owner: &Identity,
    versions: &[&'static SupportedProtocolVersion],
) -> (String, thread::JoinHandle<usize>) {
    let config = presenting_server(forged(chain, key_owner), versions);
    tls_listener(config, |s: &mut ServerTls| {
        let mut got = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    })
}

fn run_send(addr: &str, pin: &str) -> std::process::Output {
    send(addr, pin, &[], b"the secret the impostor wants")
}

#[test]
fn genuine_certificate_with_another_key_is_refused() {
    let genuine = Identity::generate().unwrap();
    let thief = Identity::generate().unwrap();
    let (addr, h) = impostor(
        vec![genuine.cert_der().clone()],
        &thief,
        &[&rustls::version::TLS13],
    );
    let out = run_send(&addr, &genuine.fingerprint().to_string());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("could not prove"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        h.join().unwrap(),
        0,
        "the impostor received application bytes"
    );
}

#[test]
fn genuine_certificate_appended_behind_own_leaf_is_refused() {
    let genuine = Identity::generate().unwrap();
    let thief = Identity::generate().unwrap();
    let (addr, h) = impostor(
        vec![thief.cert_der().clone(), genuine.cert_der().clone()],
        &thief,
        &[&rustls::version::TLS13],
    );
    let out = run_send(&addr, &genuine.fingerprint().to_string());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&thief.fingerprint().to_string()), "{err}");
    assert_eq!(h.join().unwrap(), 0);
}

#[test]
fn tls12_only_server_is_refused_even_with_the_real_key() {
    let genuine = Identity::generate().unwrap();
    let (addr, h) = impostor(
        vec![genuine.cert_der().clone()],
        &genuine,
        &[&rustls::version::TLS12],
    );
    let out = run_send(&addr, &genuine.fingerprint().to_string());
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("TLS 1.3"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(h.join().unwrap(), 0);
}

#[test]
fn genuine_server_with_real_key_is_accepted_by_the_same_harness() {
    // Control: the harness itself is not what makes the cases above fail.
    let genuine = Identity::generate().unwrap();
    let (addr, h) = impostor(
        vec![genuine.cert_der().clone()],
        &genuine,
        &[&rustls::version::TLS13],
    );
    let out = send(
        &addr,
        &genuine.fingerprint().to_string(),
        &["--idle-timeout", "1s"],
        b"x",
    );
    // The harness never answers the protocol, so send times out, but only
    // after the pin passed and the offer went out.
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(h.join().unwrap() > 0);
}
