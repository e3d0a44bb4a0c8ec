//! Hostile servers: each presents the genuine certificate in some illegitimate
//! way. `pincat send` must refuse, and the impostor must receive zero
//! application bytes.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use pincat::Identity;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn key_of(id: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(id.to_pem().as_bytes()).unwrap()
}

/// Serves one connection with `chain` signed by `key` and returns how many
/// application bytes the client sent.
fn impostor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (String, thread::JoinHandle<usize>) {
    let p = provider();
    let signer = p.key_provider.load_private_key(key).unwrap();
    let ck = Arc::new(CertifiedKey::new(chain, signer));
    let config = ServerConfig::builder_with_provider(p)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(ck)));
    let config = Arc::new(config);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let conn = ServerConnection::new(config).unwrap();
        let mut s = StreamOwned::new(conn, sock);
        let mut got = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    });
    (addr, h)
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
        key_of(&thief),
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
        key_of(&thief),
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
        key_of(&genuine),
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
        key_of(&genuine),
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
