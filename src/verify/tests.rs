//! Unit tests of the verifiers over in-memory handshakes: who is accepted,
//! who is refused, and what is recorded either way.

use rustls::{ClientConfig, ServerConfig};

use super::*;
use crate::identity::Identity;

/// Drives an in-memory handshake; returns the client and server results.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> (Result<(), Error>, Result<(), Error>) {
    let p = memory::Pair::new(client, server).unwrap();
    (p.client_result, p.server_result)
}

#[test]
fn accepts_only_the_pinned_server() {
    let id = Identity::generate().unwrap();
    let server = server_config(&id, None, Presented::default()).unwrap();
    let seen = Presented::default();
    let ok = client_config(Some(id.fingerprint()), None, seen.clone()).unwrap();
    let (c, s) = handshake(ok, server.clone());
    assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
    assert_eq!(seen.get(), Some(id.fingerprint()));

    let other = Identity::generate().unwrap();
    let seen = Presented::default();
    let wrong = client_config(Some(other.fingerprint()), None, seen.clone()).unwrap();
    let (c, _) = handshake(wrong, server);
    assert!(c.is_err());
    assert_eq!(seen.get(), Some(id.fingerprint()));
}

#[test]
fn no_pin_records_and_refuses() {
    let id = Identity::generate().unwrap();
    let server = server_config(&id, None, Presented::default()).unwrap();
    let seen = Presented::default();
    let (c, _) = handshake(client_config(None, None, seen.clone()).unwrap(), server);
    assert!(c.is_err());
    assert_eq!(seen.get(), Some(id.fingerprint()));
}

#[test]
fn first_use_accepts_a_proven_key_and_records_its_pin() {
    let id = Identity::generate().unwrap();
    let server = server_config(&id, None, Presented::default()).unwrap();
    let seen = Presented::default();
    let (c, s) = handshake(client_config_first_use(None, seen.clone()).unwrap(), server);
    assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
    assert_eq!(seen.get(), Some(id.fingerprint()));
    let spki = seen.spki().unwrap();
    assert_eq!(spki, Pin::Spki(spki_of_der(id.cert_der()).unwrap()));
    assert!(seen.matches(&[spki]) && seen.matches(&[Pin::Cert(id.fingerprint())]));
    assert!(!seen.matches(&[Pin::Spki(Fingerprint::of_der(b"other"))]));
    // The chain rule holds for a first use too.
    let other = Identity::generate().unwrap();
    let v = PinnedServerVerifier::first_use(Presented::default());
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let chain = [other.cert_der().clone()];
    assert!(
        v.verify_server_cert(id.cert_der(), &chain, &name, &[], UnixTime::now())
            .is_err()
    );
    // Garbage is not a certificate whose key could be recorded.
    let junk = CertificateDer::from(&b"junk"[..]);
    assert!(
        v.verify_server_cert(&junk, &[], &name, &[], UnixTime::now())
            .is_err()
    );
}

#[test]
fn mutual_pinning_admits_listed_client_only() {
    let server_id = Identity::generate().unwrap();
    let client_id = Identity::generate().unwrap();
    let stranger = Identity::generate().unwrap();
    let allowed = Allow::pins([Pin::Cert(client_id.fingerprint())]);
    let pin = Some(server_id.fingerprint());

    let seen = Presented::default();
    let server = server_config(&server_id, Some(&allowed), seen.clone()).unwrap();
    let client = client_config(pin, Some(&client_id), Presented::default()).unwrap();
    let (c, s) = handshake(client, server);
    assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
    assert_eq!(seen.get(), Some(client_id.fingerprint()));

    let seen = Presented::default();
    let server = server_config(&server_id, Some(&allowed), seen.clone()).unwrap();
    let client = client_config(pin, Some(&stranger), Presented::default()).unwrap();
    let (_, s) = handshake(client, server);
    assert!(s.is_err());
    assert_eq!(seen.get(), Some(stranger.fingerprint()));

    let server = server_config(&server_id, Some(&allowed), Presented::default()).unwrap();
    let client = client_config(pin, None, Presented::default()).unwrap();
    let (_, s) = handshake(client, server);
    assert!(s.is_err(), "a client without a certificate got through");
}

#[test]
fn a_code_listener_admits_any_client_and_records_the_key_it_proved() {
    let server_id = Identity::generate().unwrap();
    let client_id = Identity::generate().unwrap();
    let pin = Some(server_id.fingerprint());
    let seen = Presented::default();
    let server = server_config_any_client(&server_id, seen.clone()).unwrap();
    let client = client_config(pin, Some(&client_id), Presented::default()).unwrap();
    let (c, s) = handshake(client, server);
    assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
    assert_eq!(seen.get(), Some(client_id.fingerprint()));

    let seen = Presented::default();
    let server = server_config_any_client(&server_id, seen.clone()).unwrap();
    let client = client_config(pin, None, Presented::default()).unwrap();
    let (c, s) = handshake(client, server);
    assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
    assert_eq!(seen.get(), None);
}

#[test]
fn intermediates_are_refused_even_if_leaf_matches() {
    let id = Identity::generate().unwrap();
    let other = Identity::generate().unwrap();
    let seen = Presented::default();
    let v = PinnedServerVerifier::new(Some(id.fingerprint()), seen);
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let now = UnixTime::now();
    assert!(
        v.verify_server_cert(id.cert_der(), &[], &name, &[], now)
            .is_ok()
    );
    assert!(
        v.verify_server_cert(id.cert_der(), &[other.cert_der().clone()], &name, &[], now)
            .is_err()
    );
    // The genuine certificate behind another leaf: refused.
    assert!(
        v.verify_server_cert(other.cert_der(), &[id.cert_der().clone()], &name, &[], now)
            .is_err()
    );
}
