//! Each transfer a message: `send --as NAME` into `serve --keep-open --out
//! DIR` stores each named stream as its own file there, never over one
//! that exists (also when two race for a name).

use crate::util::{Server, random_bytes, text};

/// `pincat send --as NAME` of `input` to the listener at `to` (address, pin).
fn send_as(to: (&str, &str), name: &str, input: &[u8]) -> std::process::Output {
    crate::util::send(to.0, to.1, &["--as", name], input)
}

#[test]
fn named_streams_become_files_in_the_directory_never_over_one() {
    let base = tempfile::tempdir().unwrap();
    let srv = Server::start(base.path(), &["--keep-open", "--out", "inbox"]);
    let to = (srv.addr.as_str(), srv.fingerprint.as_str());
    let (a, b) = (random_bytes(300_000, 31), b"second message".to_vec());
    let o = send_as(to, "a.bin", &a);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = send_as(to, "b.txt", &b);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // The same name again: refused, the first kept as it was.
    let o = send_as(to, "a.bin", b"must not replace");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("already exists"),
        "{}",
        text(&o.stderr)
    );
    let inbox = base.path().join("inbox");
    assert_eq!(std::fs::read(inbox.join("a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(inbox.join("b.txt")).unwrap(), b);
    // Unnamed: refused with what to do; a reserved name: refused; a path: a usage error.
    let o = crate::util::send(&srv.addr, &srv.fingerprint, &[], b"no name");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--as NAME"), "{}", text(&o.stderr));
    let o = send_as(to, ".pincat-state", b"x");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    for bad in ["a/b", "..", ""] {
        let o = send_as(to, bad, b"x");
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o.stderr));
    }
    let mut names: Vec<String> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".pincat"))
        .collect();
    names.sort();
    assert_eq!(names, ["a.bin", "b.txt"]);
}

#[test]
fn senders_racing_for_one_name_leave_one_whole_message() {
    let base = tempfile::tempdir().unwrap();
    let srv = Server::start(base.path(), &["--keep-open", "--out", "inbox"]);
    let to = (srv.addr.as_str(), srv.fingerprint.as_str());
    let inputs: Vec<Vec<u8>> = (0..6).map(|i| random_bytes(200_000, 40 + i)).collect();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let hs: Vec<_> = inputs
            .iter()
            .map(|input| s.spawn(move || send_as(to, "race.bin", input)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
    assert!(codes.iter().all(|c| matches!(c, Some(0 | 4))), "{codes:?}");
    let stored = std::fs::read(base.path().join("inbox/race.bin")).unwrap();
    let winner = codes.iter().position(|c| *c == Some(0)).unwrap();
    assert_eq!(stored, inputs[winner], "the one confirmed, whole");
}
