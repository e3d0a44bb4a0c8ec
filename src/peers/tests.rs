//! Unit tests of the peers file format, its rewriting, name and address
//! checks, and trust on first use.

use super::*;
use crate::fingerprint::Fingerprint;

fn spki(b: &[u8]) -> Pin {
    Pin::Spki(Fingerprint::of_der(b))
}

const TEXT: &str = "# my peers\n\nbox 10.0.0.2:7878 sha256//n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg= # the NAS\n  # indented comment\nlaptop [::1]:9000\n";

#[test]
fn parses_and_renders_unchanged() {
    let p = Peers::parse(TEXT).unwrap();
    let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["box", "laptop"]);
    assert_eq!(p.get("box").unwrap().pins, vec![spki(b"test")]);
    assert!(p.get("laptop").unwrap().pins.is_empty());
    assert_eq!(p.get("laptop").unwrap().addr, "[::1]:9000");
    assert_eq!(p.render(), TEXT);
    assert!(!p.is_changed());
}

#[test]
fn rewriting_keeps_comments_blank_lines_and_order() {
    let mut p = Peers::parse(TEXT).unwrap();
    assert!(p.set_pins("laptop", vec![spki(b"k")]));
    assert!(!p.insert(
        Peer {
            name: "box".into(),
            addr: "h:1".into(),
            pins: vec![],
            via: None,
        },
        false
    ));
    assert!(p.insert(
        Peer {
            name: "box".into(),
            addr: "nas.lan:7000".into(),
            pins: vec![spki(b"k2")],
            via: None,
        },
        true
    ));
    assert!(p.insert(
        Peer {
            name: "new".into(),
            addr: "192.0.2.1:1".into(),
            pins: vec![],
            via: None,
        },
        false
    ));
    assert!(!p.remove("nope") && p.is_changed());
    let want = format!(
        "# my peers\n\nbox nas.lan:7000 {} # the NAS\n  # indented comment\nlaptop [::1]:9000 {}\nnew 192.0.2.1:1\n",
        spki(b"k2"),
        spki(b"k")
    );
    assert_eq!(p.render(), want);
    assert!(p.remove("box"));
    assert!(!p.render().contains("box"));
    assert!(p.render().starts_with("# my peers\n\n  # indented"));
    // What was written parses back to the same peers.
    let again = Peers::parse(&want).unwrap();
    assert_eq!(again.render(), want);
}

#[test]
fn bad_lines_name_their_number() {
    for (text, line, what) in [
        ("ok h:1\nbad:name h:1\n", 2, "bad peer name"),
        ("# c\n\nonly-name\n", 3, "no HOST:PORT"),
        ("a h:1 abcd\n", 1, "not a SHA-256"),
        ("a h:0\n", 1, "bad address"),
        ("a h\n", 1, "bad address"),
        ("a h:1\na h:2\n", 2, "listed twice"),
        ("a \u{1b}[2J:1\n", 1, "bad address"),
        ("-a h:1\n", 1, "bad peer name"),
    ] {
        let e = Peers::parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(what), "{text:?}: {e}");
        assert!(!e.message.contains('\u{1b}'), "{e}");
    }
}

#[test]
fn names_and_addresses_are_restricted() {
    for good in ["a", "nas-1", "Box.lan_2", &"x".repeat(64)] {
        assert!(check_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "a:b",
        "-a",
        ".a",
        "a b",
        "ä",
        &"x".repeat(65),
        "a\u{202e}",
    ] {
        assert!(check_name(bad).is_err(), "{bad}");
    }
    for good in [
        "h:1",
        "10.0.0.1:65535",
        "[::1]:80",
        "[fe80::1%eth0]:80",
        "a-b.c_d:7",
    ] {
        assert!(check_addr(good).is_ok(), "{good}");
    }
    for bad in [
        "h", ":1", "h:", "h:65536", "h:+1", "a:b:1", "[]:1", "h#:1", "h :1", "[::1:80",
    ] {
        assert!(check_addr(bad).is_err(), "{bad}");
    }
}

#[test]
fn first_use_records_once_and_fails_closed_on_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg").join("peers");
    let file = PeersFile::new(&path);
    file.update(|p| {
        p.insert(
            Peer {
                name: "box".into(),
                addr: "h:1".into(),
                pins: vec![],
                via: None,
            },
            false,
        );
        Ok(())
    })
    .unwrap();
    let known = KnownPeer {
        name: "box".into(),
        file: path.clone(),
        trust_first_use: true,
    };
    let (a, b) = (spki(b"a"), spki(b"b"));
    assert_eq!(
        record_first_use(&known, "h:1", a).unwrap(),
        FirstUse::Recorded
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("box h:1 {a}\n")
    );
    assert_eq!(
        record_first_use(&known, "h:1", a).unwrap(),
        FirstUse::AlreadyRecorded
    );
    assert_eq!(
        record_first_use(&known, "h:1", b).unwrap(),
        FirstUse::Conflict(vec![a])
    );
    // The entry moved or went away meanwhile: nothing is recorded.
    assert!(record_first_use(&known, "h:2", b).is_err());
    let gone = KnownPeer {
        name: "gone".into(),
        ..known
    };
    assert!(record_first_use(&gone, "h:1", b).is_err());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("box h:1 {a}\n")
    );
}

#[test]
fn a_peer_with_a_relay_round_trips_and_may_have_no_address() {
    let rv = "ab".repeat(12);
    let pin = "cd".repeat(32);
    let text = format!("far - via=relay.example:4001/{rv} {pin}\nnear h:1 via=r:1/{rv}\n");
    let p = Peers::parse(&text).unwrap();
    let far = p.get("far").unwrap();
    assert_eq!(far.addr, "");
    assert_eq!(
        far.via.as_ref().unwrap().to_string(),
        format!("relay.example:4001/{rv}")
    );
    assert_eq!(far.pins.len(), 1);
    assert!(
        far.to_string()
            .starts_with(&format!("far - via=relay.example:4001/{rv} "))
    );
    assert_eq!(p.get("near").unwrap().addr, "h:1");
    for bad in ["x -", "x - via=r:1", "x h:1 via=nope"] {
        assert!(Peers::parse(bad).is_err(), "{bad}");
    }
}
