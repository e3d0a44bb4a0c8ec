//! Trust anchored in a private CA: identities issued by pincat and by
//! openssl, `--ca` on the dialing side and `--allow-ca` on the listening
//! side, and every way a certificate can fail the CA check (expired, not
//! yet valid, wrong name, another CA, the right certificate with another
//! key), each refused before any application byte moves.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use pincat::Identity;

use crate::util::cli::feed;
use crate::util::peers::{forged, impostor};
use crate::util::tools::cmd_exists;
use crate::util::{Server, WAIT, pincat, run, text, wait_output};

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// A CA made by `pincat identity new --ca` in `dir`: (CA.id, ca.pem).
pub(crate) fn pincat_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let id = dir.join(format!("{name}.id"));
    let out = run(&["identity", "new", "--ca", id.to_str().unwrap()], |_| {});
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&["identity", "cert", id.to_str().unwrap()], |_| {});
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, &out.stdout).unwrap();
    (id, pem)
}

/// `pincat identity new FILE --issuer CA --name NAME...`; returns FILE.
pub(crate) fn issue(dir: &Path, file: &str, ca: &Path, names: &[&str]) -> PathBuf {
    let path = dir.join(file);
    let mut args = vec![
        "identity",
        "new",
        path.to_str().unwrap(),
        "--issuer",
        ca.to_str().unwrap(),
    ];
    for n in names {
        args.extend(["--name", n]);
    }
    let out = run(&args, |_| {});
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    path
}

/// An identity issued by `ca` through the library, valid only between the
/// two times (for expired and not-yet-valid certificates).
fn issue_between(
    dir: &Path,
    file: &str,
    ca: &Path,
    name: &str,
    from: SystemTime,
    to: SystemTime,
) -> PathBuf {
    let ca = Identity::load(ca).unwrap();
    let id = Identity::issue_between(&ca, &[name.to_string()], from, to).unwrap();
    let path = dir.join(file);
    id.save(&path).unwrap();
    path
}

/// `pincat send ADDR ARGS` with `input`, bounded.
pub(crate) fn send_with(addr: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = pincat()
        .args(["send", addr])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let w = feed(&mut child, input);
    let out = wait_output(child, WAIT);
    let _ = w.join();
    out
}

pub(crate) fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn pincat_issued_identities_work_both_ways_and_openssl_verifies_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, ca_pem) = pincat_ca(d, "ca");
    let srv = issue(d, "srv.id", &ca, &["127.0.0.1", "receiver.example"]);
    let alice = issue(d, "alice.id", &ca, &["alice"]);
    if cmd_exists("openssl") {
        for leaf in [&srv, &alice] {
            let out = Command::new("openssl")
                .args(["verify", "-CAfile", p(&ca_pem), p(leaf)])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert!(text(&out.stdout).contains(": OK"), "{}", text(&out.stdout));
        }
    }
    let mut server = Server::start(
        d,
        &[
            "--identity",
            p(&srv),
            "--allow-ca",
            p(&ca_pem),
            "--allow-name",
            "alice",
            "--out",
            "got",
        ],
    );
    // No fingerprint anywhere: the CA vouches for both sides.
    let out = send_with(
        &server.addr,
        &["--ca", p(&ca_pem), "--identity", p(&alice)],
        b"vouched for",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(server.wait_exit().0, Some(0));
    assert_eq!(std::fs::read(d.join("got")).unwrap(), b"vouched for");

    // The other dialing verbs take --ca too: get from an offer.
    std::fs::write(d.join("offered"), b"pulled with a CA").unwrap();
    let mut offer = Server::listen(
        "offer",
        d,
        &["--allow-any", "--identity", p(&srv), "offered"],
        Stdio::null(),
    );
    let out = run(
        &[
            "get",
            &offer.addr,
            "--ca",
            p(&ca_pem),
            "--name",
            "receiver.example",
            "--out",
            p(&d.join("pulled")),
        ],
        |_| {},
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(d.join("pulled/offered")).unwrap(),
        b"pulled with a CA"
    );
    offer.kill();
}

#[test]
fn ca_refuses_expired_future_wrong_name_and_other_ca_servers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, ca_pem) = pincat_ca(d, "ca");
    let (_, other_pem) = pincat_ca(d, "other");
    let now = SystemTime::now();
    let expired = issue_between(
        d,
        "expired.id",
        &ca,
        "127.0.0.1",
        now - 2 * HOUR,
        now - HOUR,
    );
    let future = issue_between(d, "future.id", &ca, "127.0.0.1", now + HOUR, now + 2 * HOUR);
    let named = issue(d, "named.id", &ca, &["receiver.example"]);
    let good = issue(d, "good.id", &ca, &["127.0.0.1"]);
    let cases: [(&Path, &[&str], &str); 5] = [
        (&expired, &[], "expired"),
        (&future, &[], "not valid yet"),
        // The name defaults to the host dialed, which this one lacks.
        (&named, &[], "does not carry the expected name"),
        (
            &good,
            &["--name", "elsewhere.example"],
            "does not carry the expected name",
        ),
        (&good, &["--ca-other"], "not issued by the trusted CA"),
    ];
    for (i, (id, extra, why)) in cases.iter().enumerate() {
        let out_name = format!("got{i}");
        let mut server =
            Server::start(d, &["--allow-any", "--identity", p(id), "--out", &out_name]);
        let ca_file = if extra == &["--ca-other"] {
            &other_pem
        } else {
            &ca_pem
        };
        let mut args = vec!["--ca", p(ca_file)];
        args.extend(extra.iter().filter(|a| **a != "--ca-other"));
        let out = send_with(&server.addr, &args, b"must not arrive");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "case {i}: {err}");
        assert!(
            err.contains("not trusted by the CA") && err.contains(why),
            "case {i}: {err}"
        );
        server.kill();
        assert!(!d.join(&out_name).exists(), "case {i}: data arrived");
    }
    // The same certificate with the right name passes.
    let mut server = Server::start(d, &["--allow-any", "--identity", p(&named), "--out", "ok"]);
    let out = send_with(
        &server.addr,
        &["--ca", p(&ca_pem), "--name", "receiver.example"],
        b"ok",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(server.wait_exit().0, Some(0));
}

#[test]
fn a_ca_issued_certificate_without_its_key_gets_zero_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, ca_pem) = pincat_ca(d, "ca");
    let genuine = Identity::load(&issue(d, "srv.id", &ca, &["127.0.0.1"])).unwrap();
    let thief = Identity::generate().unwrap();
    let (addr, h) = impostor(vec![genuine.cert_der().clone()], &thief);
    let out = send_with(&addr, &["--ca", p(&ca_pem)], b"the secret");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("could not prove"), "{err}");
    assert_eq!(
        h.join().unwrap(),
        0,
        "the impostor received application bytes"
    );
}

#[test]
fn allow_ca_admits_only_valid_named_senders_of_that_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, ca_pem) = pincat_ca(d, "ca");
    let (other, _) = pincat_ca(d, "other");
    let now = SystemTime::now();
    let alice = issue(d, "alice.id", &ca, &["alice"]);
    let bob = issue(d, "bob.id", &ca, &["bob"]);
    let stale = issue_between(d, "stale.id", &ca, "alice", now - 2 * HOUR, now - HOUR);
    let early = issue_between(d, "early.id", &ca, "alice", now + HOUR, now + 2 * HOUR);
    let foreign = issue(d, "foreign.id", &other, &["alice"]);
    let self_signed = d.join("self.id");
    assert!(
        run(&["identity", "new", p(&self_signed)], |_| {})
            .status
            .success()
    );
    std::fs::create_dir(d.join("in")).unwrap();
    let mut server = Server::start(
        d,
        &[
            "--keep-open",
            "--allow-ca",
            p(&ca_pem),
            "--allow-name",
            "alice",
            "--out",
            "in",
        ],
    );
    let pin = server.fingerprint.clone();
    let try_send = |who: &str, id: Option<&Path>| {
        let file = d.join(who);
        std::fs::write(&file, who).unwrap();
        let mut args = vec!["--pin", &pin, p(&file)];
        if let Some(id) = id {
            args.extend(["--identity", p(id)]);
        }
        let out = send_with(&server.addr, &args, b"");
        eprintln!("{who}: {}", text(&out.stderr));
        out.status.code()
    };
    assert_eq!(try_send("from-alice", Some(&alice)), Some(0));
    assert_eq!(try_send("from-bob", Some(&bob)), Some(5));
    assert_eq!(try_send("from-stale", Some(&stale)), Some(5));
    assert_eq!(try_send("from-early", Some(&early)), Some(5));
    assert_eq!(try_send("from-foreign", Some(&foreign)), Some(5));
    assert_eq!(try_send("from-self-signed", Some(&self_signed)), Some(5));
    assert_eq!(try_send("from-nobody", None), Some(5));
    server.drain(Duration::from_millis(300));
    let refused: Vec<String> = server
        .seen_named("refused")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        refused.iter().any(|m| m.contains("does not carry")),
        "{refused:?}"
    );
    assert!(refused.iter().any(|m| m.contains("expired")), "{refused:?}");
    assert!(
        refused.iter().any(|m| m.contains("not valid yet")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|m| m.contains("not issued by")),
        "{refused:?}"
    );
    server.kill();
    let mut stored: Vec<String> = std::fs::read_dir(d.join("in"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, ["from-alice"]);
}

#[test]
fn a_ca_issued_client_certificate_without_its_key_is_refused() {
    use crate::util::peers::{connect, presenting_client};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, ca_pem) = pincat_ca(d, "ca");
    let alice = Identity::load(&issue(d, "alice.id", &ca, &["alice"])).unwrap();
    let thief = Identity::generate().unwrap();
    let mut server = Server::start(
        d,
        &[
            "--keep-open",
            "--allow-ca",
            p(&ca_pem),
            "--idle-timeout",
            "5s",
            "--out",
            "in",
        ],
    );
    // Alice's certificate with Alice's key gets in (the control), with
    // another key it does not: the handshake signature is the proof.
    for (key_owner, admitted) in [(&alice, true), (&thief, false)] {
        let cert = forged(vec![alice.cert_der().clone()], key_owner);
        let mut tls = connect(&server.addr, presenting_client(&server.fingerprint, cert));
        let _ = tls.write_all(&pincat::protocol::preamble());
        let _ = tls.flush();
        if admitted {
            let ev = server.wait_event("connected");
            assert_eq!(ev["fingerprint"], alice.fingerprint().to_string(), "{ev}");
            continue;
        }
        let mut sink = Vec::new();
        let _ = tls.read_to_end(&mut sink);
        // Skip the control's own end (it left without an offer).
        let ev = loop {
            let ev = server.wait_event("refused");
            if ev["reason"] == "not-allowed" {
                break ev;
            }
        };
        let msg = ev["message"].as_str().unwrap();
        assert!(msg.contains("could not prove"), "{ev}");
    }
    server.kill();
    assert!(!d.join("in").exists() || std::fs::read_dir(d.join("in")).unwrap().next().is_none());
}

/// A CA and a leaf for 127.0.0.1 made by openssl alone, in `dir`:
/// `ca.pem`, and `leaf.id` (key and certificate, mode 0600).
fn openssl_ca_and_leaf(dir: &Path) {
    let sh = |script: &str| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    };
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ops-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
    );
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1",
    );
    sh(
        "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > ext && \
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out leaf.pem",
    );
    sh("umask 077 && cat leaf.key leaf.pem > leaf.id && cat ca.key ca.pem > ca.id");
}

#[test]
fn openssl_made_cas_work_as_anchors_and_issuers() {
    if !cmd_exists("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_ca_and_leaf(d);
    let (ca_pem, leaf) = (d.join("ca.pem"), d.join("leaf.id"));
    // An openssl leaf as the receiver, an openssl CA as the sender's anchor.
    let mut server = Server::start(d, &["--allow-any", "--identity", p(&leaf), "--out", "got"]);
    let out = send_with(&server.addr, &["--ca", p(&ca_pem)], b"openssl-issued");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(server.wait_exit().0, Some(0));
    assert_eq!(std::fs::read(d.join("got")).unwrap(), b"openssl-issued");
    // pincat issues from the openssl CA; openssl and --allow-ca accept it.
    let issued = issue(d, "issued.id", &d.join("ca.id"), &["carol"]);
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", p(&ca_pem), p(&issued)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut server = Server::start(d, &["--allow-ca", p(&ca_pem), "--out", "got2"]);
    let pin = server.fingerprint.clone();
    let out = send_with(
        &server.addr,
        &["--pin", &pin, "--identity", p(&issued)],
        b"carol",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(server.wait_exit().0, Some(0));
}

#[test]
fn ca_mistakes_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, _) = pincat_ca(d, "ca");
    let plain = d.join("plain.id");
    assert!(
        run(&["identity", "new", p(&plain)], |_| {})
            .status
            .success()
    );
    // The CA's key never goes to dialing peers.
    let out = run(&["send", "127.0.0.1:9", "--ca", p(&ca)], |_| {});
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("private key"),
        "{}",
        text(&out.stderr)
    );
    // Only a CA issues.
    let out = run(
        &[
            "identity",
            "new",
            p(&d.join("x.id")),
            "--issuer",
            p(&plain),
            "--name",
            "x",
        ],
        |_| {},
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("not a CA"),
        "{}",
        text(&out.stderr)
    );
    assert!(!d.join("x.id").exists());
    // A name that is neither a DNS name nor an IP address.
    let out = run(
        &[
            "identity",
            "new",
            p(&d.join("y.id")),
            "--issuer",
            p(&ca),
            "--name",
            "bad name!",
        ],
        |_| {},
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(!d.join("y.id").exists());
    // --issuer needs --name; --valid needs --ca or --issuer.
    let out = run(
        &["identity", "new", p(&d.join("z.id")), "--issuer", p(&ca)],
        |_| {},
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["identity", "new", p(&d.join("z.id")), "--valid", "1h"],
        |_| {},
    );
    assert_ne!(out.status.code(), Some(0));
    let line = text(&out.stderr);
    assert_eq!(line.trim().lines().count(), 1, "{line}");
}
