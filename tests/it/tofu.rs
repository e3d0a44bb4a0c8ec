//! Trust on first use: a known peer with no pin is trusted with the key it
//! proves it holds, recorded once (even when two dials race), and a changed
//! key is refused with what to do.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use pincat::Identity;
use serde_json::Value;

use crate::peers::{command, identity, ok, peers_file, with_peers};
use crate::util::data::json_lines;
use crate::util::peers::impostor;
use crate::util::{Server, WAIT, text, wait_output};

/// The first event named `name` a dialing pincat printed with --json.
fn event(out: &Output, name: &str) -> Option<Value> {
    json_lines(&out.stderr)
        .into_iter()
        .find(|v| v["event"] == name)
}

/// The recorded peer `box` at `addr` restarted with another key: exit 3,
/// both pins and the update command shown, nothing stored, the entry
/// unchanged (`keys`: the new identity, the recorded pin, the new pin).
fn a_changed_key_is_refused(
    file: &Path,
    base: &tempfile::TempDir,
    addr: &str,
    keys: (&str, &str, &str),
) {
    let (id_b, spki_a, spki_b) = keys;
    let inbox = base.path().join("inbox");
    let mut srv = Server::start_on(
        addr,
        &inbox,
        &[
            "--allow-any",
            "--identity",
            id_b,
            "--keep-open",
            "--out",
            ".",
        ],
    );
    let third = base.path().join("third.txt");
    fs::write(&third, b"third").unwrap();
    let out = with_peers(file, &["send", "box", third.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains(spki_a) && said.contains(spki_b), "{said}");
    assert!(
        said.contains(&format!(
            "pincat peers add box {addr} --pin {spki_b} --replace"
        )),
        "{said}"
    );
    let out = with_peers(
        file,
        &["send", "box", "--tofu", "--json", third.to_str().unwrap()],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(event(&out, "error").unwrap()["code"], "pin-mismatch");
    srv.drain(std::time::Duration::from_millis(300));
    assert!(
        srv.seen_named("transfer-started").is_empty(),
        "{:?}",
        srv.seen
    );
    assert!(!inbox.join("third.txt").exists());
    assert_eq!(
        fs::read_to_string(file).unwrap(),
        format!("box {addr} {spki_a}\n")
    );
}

#[test]
fn tofu_records_the_key_once_and_a_changed_key_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let (id_a, spki_a) = identity(base.path(), "a.id");
    let (id_b, spki_b) = identity(base.path(), "b.id");
    let inbox = base.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let mut srv = Server::start(
        &inbox,
        &[
            "--allow-any",
            "--identity",
            &id_a,
            "--keep-open",
            "--out",
            ".",
        ],
    );
    let addr = srv.addr.clone();
    ok(&with_peers(&file, &["peers", "add", "box", &addr], b""));

    // First use, loud in both forms, then the transfer.
    let first = base.path().join("first.txt");
    fs::write(&first, b"first").unwrap();
    let out = with_peers(
        &file,
        &["send", "box", "--tofu", first.to_str().unwrap()],
        b"",
    );
    ok(&out);
    let said = text(&out.stderr);
    assert!(
        said.contains("FIRST USE") && said.contains(&spki_a),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("box {addr} {spki_a}\n")
    );
    assert_eq!(fs::read(inbox.join("first.txt")).unwrap(), b"first");

    // Recorded once: later dials (with or without --tofu) use the pin.
    let second = base.path().join("second.txt");
    fs::write(&second, b"second").unwrap();
    let out = with_peers(
        &file,
        &["send", "box", "--tofu", "--json", second.to_str().unwrap()],
        b"",
    );
    ok(&out);
    assert!(event(&out, "first-use").is_none(), "{}", text(&out.stderr));
    assert_eq!(fs::read(inbox.join("second.txt")).unwrap(), b"second");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("box {addr} {spki_a}\n")
    );

    srv.kill();
    a_changed_key_is_refused(&file, &base, &addr, (&id_b, &spki_a, &spki_b));
}

#[test]
fn tofu_first_use_event_has_its_fields() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let (id, spki) = identity(base.path(), "a.id");
    let mut srv = Server::start(
        base.path(),
        &["--allow-any", "--identity", &id, "--out", "got"],
    );
    ok(&with_peers(&file, &["peers", "add", "box", &srv.addr], b""));
    let out = with_peers(&file, &["send", "box", "--tofu", "--json"], b"payload");
    ok(&out);
    let ev = event(&out, "first-use").expect("a first-use event");
    assert_eq!(ev["name"], "box");
    assert_eq!(ev["pin"], spki.as_str());
    assert_eq!(ev["fingerprint"], srv.fingerprint.as_str());
    assert_eq!(ev["peer"], srv.addr.as_str());
    assert_eq!(ev["file"], file.to_str().unwrap());
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(fs::read(base.path().join("got")).unwrap(), b"payload");
}

#[test]
fn concurrent_first_uses_record_one_key() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let (id, spki) = identity(base.path(), "a.id");
    let inbox = base.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let srv = Server::start(
        &inbox,
        &[
            "--allow-any",
            "--identity",
            &id,
            "--keep-open",
            "--out",
            ".",
        ],
    );
    ok(&with_peers(&file, &["peers", "add", "box", &srv.addr], b""));
    let names: Vec<PathBuf> = (0..6)
        .map(|i| {
            let p = base.path().join(format!("f{i}"));
            fs::write(&p, format!("data {i}")).unwrap();
            p
        })
        .collect();
    let children: Vec<_> = names
        .iter()
        .map(|p| {
            command(&file, &["send", "box", "--tofu", p.to_str().unwrap()])
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        ok(&wait_output(c, WAIT));
    }
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("box {} {spki}\n", srv.addr)
    );
    for i in 0..6 {
        assert_eq!(
            fs::read_to_string(inbox.join(format!("f{i}"))).unwrap(),
            format!("data {i}")
        );
    }
}

#[test]
fn tofu_never_records_a_key_the_server_cannot_prove() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let genuine = Identity::generate().unwrap();
    let thief = Identity::generate().unwrap();
    let (addr, h) = impostor(vec![genuine.cert_der().clone()], &thief);
    ok(&with_peers(&file, &["peers", "add", "box", &addr], b""));
    let before = fs::read(&file).unwrap();
    let out = with_peers(&file, &["send", "box", "--tofu"], b"the secret");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("FIRST USE"));
    assert_eq!(
        h.join().unwrap(),
        0,
        "the impostor received application bytes"
    );
    assert_eq!(fs::read(&file).unwrap(), before);
}
