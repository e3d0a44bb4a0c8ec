//! CA anchors and chains: an anchor outside its validity or that is not a
//! CA trusts nothing, and only a leaf the anchor signed directly is
//! trusted (rcgen-made CAs and leaves against a counting server).

use std::time::SystemTime;

use pincat::Identity;

use crate::ca::{HOUR, p, send_with};
use crate::util::peers::impostor;
use crate::util::{Server, run, text};

/// A self-signed CA certificate made with rcgen, valid only between the
/// two times, and its issuer for signing leaves (and intermediates).
fn rcgen_ca(
    name: &str,
    from: SystemTime,
    to: SystemTime,
) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params.not_before = from.into();
    params.not_after = to.into();
    let pem = params.self_signed(&key).unwrap().pem();
    (rcgen::Issuer::new(params, key), pem)
}

/// A leaf for `name` signed by `issuer` (or a CA, with `ca`): its identity
/// PEM (key, then certificate) and its certificate DER.
fn rcgen_signed(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    name: &str,
    ca: bool,
) -> (rcgen::KeyPair, rcgen::CertificateParams, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    } else {
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    let pem = format!("{}{}", key.serialize_pem(), cert.pem());
    (key, params, pem, cert.der().to_vec())
}

#[test]
fn an_anchor_outside_its_validity_or_not_a_ca_trusts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = SystemTime::now();
    // A CA that expired an hour ago, and its still-valid leaf.
    let (old_ca, old_pem) = rcgen_ca("old CA", now - 3 * HOUR, now - HOUR);
    let old_ca_file = d.join("old-ca.pem");
    std::fs::write(&old_ca_file, &old_pem).unwrap();
    let (_, _, leaf_pem, leaf_der) = rcgen_signed(&old_ca, "127.0.0.1", false);
    let leaf = Identity::from_pem(leaf_pem.as_bytes()).unwrap();
    let (addr, h) = impostor(vec![leaf_der.into()], &leaf);
    let out = send_with(&addr, &["--ca", p(&old_ca_file)], b"must not arrive");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("CA certificate itself is expired"), "{err}");
    assert_eq!(h.join().unwrap(), 0);
    // The same leaf offered as a client to --allow-ca of the expired CA.
    let leaf_file = d.join("leaf.id");
    leaf.save(&leaf_file).unwrap();
    let mut server = Server::start(d, &["--allow-ca", p(&old_ca_file), "--out", "got"]);
    let pin = server.fingerprint.clone();
    let out = send_with(
        &server.addr,
        &["--pin", &pin, "--identity", p(&leaf_file)],
        b"x",
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let ev = server.wait_event("refused");
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .contains("CA certificate itself"),
        "{ev}"
    );
    server.kill();
    assert!(!d.join("got").exists());
    // A peer's ordinary certificate is no CA: its key could sign any name.
    let plain = d.join("plain.id");
    assert!(
        run(&["identity", "new", p(&plain)], |_| {})
            .status
            .success()
    );
    let cert = run(&["identity", "cert", p(&plain)], |_| {});
    std::fs::write(d.join("plain.pem"), &cert.stdout).unwrap();
    let out = send_with("127.0.0.1:9", &["--ca", p(&d.join("plain.pem"))], b"x");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("not a CA certificate"),
        "{}",
        text(&out.stderr)
    );
    // pincat will not issue from an expired CA either.
    let old_id = d.join("old-ca.id");
    let (k, _) = (old_ca.key().serialize_pem(), ());
    std::fs::write(&old_id, format!("{k}{old_pem}")).unwrap();
    std::fs::set_permissions(&old_id, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = run(
        &[
            "identity",
            "new",
            p(&d.join("late.id")),
            "--issuer",
            p(&old_id),
            "--name",
            "x",
        ],
        |_| {},
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("expired"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn only_a_leaf_the_ca_signed_directly_is_trusted() {
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (root, root_pem) = rcgen_ca("root", now - HOUR, now + HOUR);
    std::fs::write(d.join("root.pem"), &root_pem).unwrap();
    // An intermediate CA under the root, and a leaf it signed: a chain
    // pincat's CA mode does not follow (the CA signs leaves directly).
    let (ikey, iparams, _, ider) = rcgen_signed(&root, "intermediate", true);
    let inter = rcgen::Issuer::new(iparams, ikey);
    let (_, _, leaf_pem, leaf_der) = rcgen_signed(&inter, "127.0.0.1", false);
    let leaf = Identity::from_pem(leaf_pem.as_bytes()).unwrap();
    let (addr, h) = impostor(vec![leaf_der.into(), ider.into()], &leaf);
    let out = send_with(&addr, &["--ca", p(&d.join("root.pem"))], b"must not arrive");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("not issued by the trusted CA"), "{err}");
    assert_eq!(h.join().unwrap(), 0);
    // The control: a leaf the root signed directly is trusted.
    let (_, _, direct_pem, direct_der) = rcgen_signed(&root, "127.0.0.1", false);
    let direct = Identity::from_pem(direct_pem.as_bytes()).unwrap();
    let (addr, h) = impostor(vec![direct_der.into()], &direct);
    let out = send_with(&addr, &["--ca", p(&d.join("root.pem"))], b"arrives");
    // The counting server is no pincat: the transfer itself fails after
    // the handshake, but the bytes reached it, so the CA trusted it.
    assert_ne!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(h.join().unwrap() > 0);
}
