//! Symbolic links on the way are never followed: refused at begin, and
//! a parent swapped for a link before the first write or the commit fails
//! it without touching anything outside.

use super::*;

#[test]
fn symlink_on_the_way_is_refused_with_exists_and_nothing_outside_changes() {
    let a = area();
    symlink(&a.outside, a.out.join("link")).unwrap();
    fs::create_dir_all(a.out.join("real/inner")).unwrap();
    symlink(&a.outside, a.out.join("real/inner/link")).unwrap();
    // A link to a directory inside the output is not followed either.
    symlink(a.out.join("real"), a.out.join("inlink")).unwrap();
    fs::write(a.out.join("plain"), b"a file").unwrap();
    let outside = snapshot(&a.outside);
    let inside = snapshot(&a.out);
    let store = open(&a.out);
    let offers = [
        files(vec![file("link/x", 3)]),
        files(vec![file("link/sub/x", 3)]),
        files(vec![file("link/new/deeper/x", 3)]),
        files(vec![dir("link")]),
        files(vec![dir("link/new")]),
        files(vec![
            dir("real"),
            dir("real/inner"),
            file("real/inner/link/x", 1),
        ]),
        files(vec![file("real/inner/link/sub/deep", 1)]),
        files(vec![file("inlink/inner/x", 1)]),
        files(vec![file("plain/x", 1)]),
        // Refused however late in the offer the bad entry comes.
        files(vec![
            file("ok1", 1),
            dir("fine"),
            file("fine/ok2", 1),
            file("link/x", 1),
        ]),
        files(
            many("many/f", MAX_HELD + 4, 1)
                .into_iter()
                .chain([file("link/x", 1)])
                .collect(),
        ),
    ];
    for offer in &offers {
        let (code, msg) = refused(&store, offer);
        assert_eq!(
            code,
            RejectCode::Exists,
            "{:?}: {msg}",
            offer.entries.last()
        );
        assert_eq!(snapshot(&a.outside), outside, "outside changed");
        assert_eq!(snapshot(&a.out), inside, "output changed after {msg}");
    }
}

/// Begins and fills a transfer of `offer` (files under `d/`), puts a
/// symlink to `outside` at `out/d` (swapped for the directory the transfer
/// made, or where a staged tree will go), and checks that the commit fails
/// without touching anything outside or naming anything.
fn swap_before_commit(offer: Offer) {
    let a = area();
    let outside = snapshot(&a.outside);
    let store = open(&a.out);
    let mut t = begin(&store, &offer);
    feed(&mut t, &offer);
    let made = a.out.join("d").exists();
    if made {
        fs::rename(a.out.join("d"), a.out.join("d.real")).unwrap();
    }
    symlink(&a.outside, a.out.join("d")).unwrap();
    let Err((code, msg)) = t.commit() else {
        panic!("commit through a symlink succeeded");
    };
    assert_eq!(code, RejectCode::Exists, "{msg}");
    let why = if made {
        "symbolic link"
    } else {
        "appeared on the receiver"
    };
    assert!(msg.contains(why), "{msg}");
    assert_eq!(snapshot(&a.outside), outside, "outside changed at commit");
    t.abort();
    drop(t);
    assert_eq!(snapshot(&a.outside), outside, "outside changed at abort");
    assert_eq!(fs::read_link(a.out.join("d")).unwrap(), a.outside);
    assert_eq!(
        regular_files(&a.out),
        Vec::<String>::new(),
        "something was linked"
    );
    assert!(!a.out.join(STATE_DIR).exists());
}

#[test]
fn swapping_the_parent_for_a_symlink_before_commit_fails_held() {
    swap_before_commit(files(vec![
        dir("d"),
        file("d/a", 10),
        file("d/b", 100_000),
        file("d/empty", 0),
    ]));
}

#[test]
fn swapping_the_parent_for_a_symlink_before_commit_fails_staged() {
    let mut entries = vec![dir("d")];
    entries.extend(many("d/f", MAX_HELD * 2, 100));
    swap_before_commit(files(entries));
}

#[test]
fn swapping_a_deeper_parent_for_a_symlink_before_commit_fails() {
    // Only the second-level directory is swapped; the first file's
    // directory stays real. No file may be left linked either way.
    let a = area();
    let outside = snapshot(&a.outside);
    let store = open(&a.out);
    let offer = files(vec![dir("d"), file("d/a", 5), dir("d/s"), file("d/s/b", 5)]);
    let mut t = begin(&store, &offer);
    feed(&mut t, &offer);
    fs::rename(a.out.join("d/s"), a.out.join("s.real")).unwrap();
    symlink(&a.outside, a.out.join("d/s")).unwrap();
    assert!(t.commit().is_err(), "commit through a symlink succeeded");
    drop(t);
    assert_eq!(snapshot(&a.outside), outside);
    assert_eq!(
        regular_files(&a.out),
        Vec::<String>::new(),
        "a file stayed linked"
    );
}

#[test]
fn swapping_the_parent_for_a_symlink_before_the_first_write_fails() {
    let a = area();
    let outside = snapshot(&a.outside);
    let store = open(&a.out);
    let offer = files(vec![dir("d"), file("d/a", 5000)]);
    let mut t = begin(&store, &offer);
    fs::rename(a.out.join("d"), a.out.join("d.real")).unwrap();
    symlink(&a.outside, a.out.join("d")).unwrap();
    let Err((code, msg)) = t.write(&content("d/a", 5000)) else {
        panic!("write through a symlink succeeded");
    };
    assert_eq!(code, RejectCode::Exists, "{msg}");
    drop(t);
    assert_eq!(snapshot(&a.outside), outside);
    assert_eq!(regular_files(&a.out), Vec::<String>::new());
}

#[test]
fn a_refusal_at_write_time_quotes_the_name_once() {
    let a = area();
    let store = open(&a.out);
    let offer = files(vec![dir("d"), file("d/a", 5)]);
    let mut t = begin(&store, &offer);
    fs::rename(a.out.join("d"), a.out.join("d.real")).unwrap();
    symlink(&a.outside, a.out.join("d")).unwrap();
    let Err((_, msg)) = t.write(b"12345") else {
        panic!("write through a symlink succeeded");
    };
    assert!(msg.contains(r#""d/a""#), "{msg}");
    assert!(!msg.contains('\\'), "escaped twice: {msg}");
}
