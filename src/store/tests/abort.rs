//! An abort removes only what no other live transfer uses.

use super::*;

fn two_transfers_one_aborts(out: &Path, store_out: &Path, first: Offer, second: Offer) {
    let store = open(store_out);
    let mut t1 = begin(&store, &first);
    let mut t2 = begin(&store, &second);
    write_all(&mut t1, &first);
    feed(&mut t2, &second);
    t1.abort();
    drop(t1);
    commit(&mut t2);
    drop(t2);
    assert_received(out, &second);
    for e in first.entries.iter().filter(|e| !e.is_dir) {
        assert!(
            !out.join(&e.name).exists(),
            "{} of the aborted transfer",
            e.name
        );
    }
    assert!(!out.join(STATE_DIR).exists());
}

#[test]
fn abort_keeps_a_new_directory_another_transfer_uses() {
    type Case = (Vec<Entry>, Vec<Entry>);
    let cases: Vec<Case> = vec![
        // Files only, no directory entries.
        (vec![file("inbox/a", 10)], vec![file("inbox/b", 10)]),
        // As the pincat sender offers them: directories first.
        (
            vec![dir("inbox"), file("inbox/a", 10)],
            vec![dir("inbox"), file("inbox/b", 10)],
        ),
        // Both into inbox/sub.
        (
            vec![dir("inbox"), dir("inbox/sub"), file("inbox/sub/a", 1)],
            vec![dir("inbox"), dir("inbox/sub"), file("inbox/sub/b", 1)],
        ),
        // Staged (many files) on both sides.
        (
            many("inbox/a", MAX_HELD + 5, 10),
            many("inbox/b", MAX_HELD + 5, 10),
        ),
        // One staged, one held.
        (many("inbox/a", MAX_HELD + 5, 10), vec![file("inbox/b", 10)]),
        (vec![file("inbox/a", 10)], many("inbox/b", MAX_HELD + 5, 10)),
    ];
    for (first, second) in cases {
        let tmp = tempfile::tempdir().unwrap();
        two_transfers_one_aborts(tmp.path(), tmp.path(), files(first), files(second));
    }
}

#[test]
fn abort_keeps_a_new_output_directory_another_transfer_uses() {
    // `--out inbox` where inbox does not exist yet: the first transfer
    // creates it, the second uses it.
    type Case = (Vec<Entry>, Vec<Entry>);
    let cases: Vec<Case> = vec![
        (vec![file("a", 10)], vec![file("b", 10)]),
        (vec![dir("da"), file("da/a", 1)], vec![file("b", 10)]),
        (
            vec![dir("da"), file("da/a", 1)],
            vec![dir("db"), file("db/b", 1)],
        ),
        (many("a", MAX_HELD + 5, 10), vec![file("b", 10)]),
        (vec![file("a", 10)], many("b", MAX_HELD + 5, 10)),
    ];
    for (first, second) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = tmp.path().join("inbox");
        two_transfers_one_aborts(&inbox, &inbox, files(first), files(second));
    }
}

#[test]
fn abort_keeps_an_intermediate_directory_another_transfer_uses() {
    // The first transfer creates inbox/ on the way to inbox/sub/ without
    // listing inbox itself; the second puts a file directly in inbox/.
    let tmp = tempfile::tempdir().unwrap();
    two_transfers_one_aborts(
        tmp.path(),
        tmp.path(),
        files(vec![file("inbox/sub/a", 10)]),
        files(vec![dir("inbox"), file("inbox/b", 10)]),
    );
}

#[test]
fn abort_of_a_held_transfer_removes_the_output_directory_it_made() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    let store = open(&inbox);
    let offer = files(vec![dir("d"), file("d/a", 10), file("b", 10)]);
    let mut t = begin(&store, &offer);
    write_all(&mut t, &offer);
    t.abort();
    assert!(!inbox.exists(), "inbox left behind");
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn abort_of_a_staged_transfer_removes_the_output_directory_it_made() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    let store = open(&inbox);
    let offer = files(many("f", MAX_HELD + 4, 10));
    let mut t = begin(&store, &offer);
    write_all(&mut t, &offer);
    t.abort();
    let left: Vec<String> = snapshot(tmp.path())
        .into_keys()
        .filter(|k| !k.is_empty())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
