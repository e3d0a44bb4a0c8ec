//! Existing things are never replaced: files, symbolic links and streams
//! already there, or appearing before the commit.

use super::*;
use crate::store::walk::fresh_dir;
use crate::sys;

#[test]
fn an_existing_file_is_refused_and_left_identical() {
    let a = area();
    fs::create_dir(a.out.join("d")).unwrap();
    fs::write(a.out.join("x"), b"precious").unwrap();
    fs::write(a.out.join("d/y"), b"precious too").unwrap();
    fs::set_permissions(a.out.join("x"), fs::Permissions::from_mode(0o640)).unwrap();
    let before = snapshot(&a.out);
    let store = open(&a.out);
    for offer in [
        files(vec![file("x", 3)]),
        files(vec![file("new", 1), file("x", 0)]),
        files(vec![dir("d"), file("d/y", 3)]),
        files(vec![file("d/y", 3)]),
        // A directory entry where a file is.
        files(vec![dir("x")]),
        files(
            many("m/f", MAX_HELD + 2, 1)
                .into_iter()
                .chain([file("x", 1)])
                .collect(),
        ),
    ] {
        let (code, msg) = refused(&store, &offer);
        assert_eq!(code, RejectCode::Exists, "{msg}");
        assert_eq!(snapshot(&a.out), before, "{msg}");
    }
}

/// A file (or symlink) appears at a target between begin and commit.
fn appears_before_commit(offer: Offer, late: &str, as_link: bool) {
    let a = area();
    let outside = snapshot(&a.outside);
    let store = open(&a.out);
    let mut t = begin(&store, &offer);
    feed(&mut t, &offer);
    let p = a.out.join(late);
    if as_link {
        symlink(a.outside.join("keep"), &p).unwrap();
    } else {
        fs::write(&p, b"appeared").unwrap();
    }
    let Err((code, msg)) = t.commit() else {
        panic!("commit replaced {late}");
    };
    assert_eq!(code, RejectCode::Exists, "{msg}");
    drop(t);
    if as_link {
        assert_eq!(fs::read_link(&p).unwrap(), a.outside.join("keep"));
    } else {
        assert_eq!(fs::read(&p).unwrap(), b"appeared");
    }
    assert_eq!(snapshot(&a.outside), outside);
    // Everything else of the failed transfer is undone.
    let files_left = regular_files(&a.out);
    let expect: Vec<String> = if as_link {
        vec![]
    } else {
        vec![late.to_string()]
    };
    assert_eq!(files_left, expect);
}

#[test]
fn a_file_appearing_before_commit_is_not_replaced_and_the_rest_is_undone() {
    let held = || files(vec![file("a", 3), file("b", 3), file("c", 3)]);
    let staged = || files(many("f", MAX_HELD + 4, 3));
    for as_link in [false, true] {
        appears_before_commit(held(), "b", as_link);
        appears_before_commit(held(), "c", as_link);
        appears_before_commit(staged(), "f0010", as_link);
        appears_before_commit(staged(), &format!("f{:04}", MAX_HELD + 3), as_link);
    }
}

#[test]
fn an_existing_symlink_at_a_target_is_refused_and_its_target_untouched() {
    let a = area();
    symlink(a.outside.join("keep"), a.out.join("x")).unwrap();
    symlink(a.outside.join("missing"), a.out.join("dangling")).unwrap();
    fs::create_dir(a.out.join("d")).unwrap();
    symlink(a.outside.join("sub/deep"), a.out.join("d/y")).unwrap();
    let outside = snapshot(&a.outside);
    let inside = snapshot(&a.out);
    let store = open(&a.out);
    for offer in [
        files(vec![file("x", 3)]),
        files(vec![file("dangling", 3)]),
        files(vec![dir("d"), file("d/y", 3)]),
        files(
            many("m/f", MAX_HELD + 2, 1)
                .into_iter()
                .chain([file("dangling", 1)])
                .collect(),
        ),
    ] {
        let (code, msg) = refused(&store, &offer);
        assert_eq!(code, RejectCode::Exists, "{msg}");
        assert_eq!(snapshot(&a.outside), outside, "{msg}");
        assert_eq!(snapshot(&a.out), inside, "{msg}");
    }
    assert!(!a.outside.join("missing").exists());
}

#[test]
fn a_stream_never_replaces_an_existing_file() {
    let a = area();
    let target = a.out.join("got.bin");
    // Existing before the store opens: refused.
    fs::write(&target, b"precious").unwrap();
    let store = open(&target);
    let (code, _) = refused(&store, &stream());
    assert_eq!(code, RejectCode::Exists);
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    fs::remove_file(&target).unwrap();

    // Appearing after the store opened, before begin: refused.
    let store = open(&target);
    fs::write(&target, b"precious").unwrap();
    let (code, _) = refused(&store, &stream());
    assert_eq!(code, RejectCode::Exists);
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    fs::remove_file(&target).unwrap();

    // Appearing during the transfer: the commit fails, the file stays.
    for as_link in [false, true] {
        let store = open(&target);
        let mut t = begin(&store, &stream());
        t.write(b"stream data").unwrap();
        t.finish(0, 11).unwrap();
        if as_link {
            symlink(a.outside.join("keep"), &target).unwrap();
        } else {
            fs::write(&target, b"precious").unwrap();
        }
        let Err((code, msg)) = t.commit() else {
            panic!("the stream replaced the file");
        };
        assert_eq!(code, RejectCode::Exists, "{msg}");
        drop(t);
        if as_link {
            assert_eq!(fs::read_link(&target).unwrap(), a.outside.join("keep"));
            fs::remove_file(&target).unwrap();
        } else {
            assert_eq!(fs::read(&target).unwrap(), b"precious");
            fs::remove_file(&target).unwrap();
        }
        assert_eq!(fs::read_dir(&a.out).unwrap().count(), 0, "leftovers");
    }

    // A dangling symlink at --out: refused, nothing created where it points.
    symlink(a.outside.join("made-by-stream"), &target).unwrap();
    let outside = snapshot(&a.outside);
    let store = open(&target);
    let (code, _) = refused(&store, &stream());
    assert_eq!(code, RejectCode::Exists);
    assert_eq!(snapshot(&a.outside), outside);
    fs::remove_file(&target).unwrap();

    // A symlink at --out to an existing file: refused, the file unchanged.
    symlink(a.outside.join("keep"), &target).unwrap();
    let store = open(&target);
    let (code, _) = refused(&store, &stream());
    assert_eq!(code, RejectCode::Exists);
    assert_eq!(snapshot(&a.outside), outside);
}

#[test]
fn an_abort_after_a_partial_commit_removes_only_the_files_it_linked() {
    // The first name is linked, the second collides; before the abort, a
    // local user puts someone else's file at the first name.
    for staged in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let mut entries = vec![file("stage/report.pdf", 3)];
        if staged {
            entries.extend(many("stage/f", MAX_HELD + 2, 2));
        }
        entries.push(file("zz", 1));
        let offer = files(entries);
        let mut t = begin(&store, &offer);
        feed(&mut t, &offer);
        fs::write(tmp.path().join("zz"), b"appeared").unwrap();
        assert!(t.commit().is_err(), "zz appeared: the commit must fail");
        let ours = tmp.path().join("stage/report.pdf");
        fs::remove_file(&ours).unwrap();
        fs::write(&ours, b"IMPORTANT").unwrap();
        t.abort();
        assert_eq!(fs::read(&ours).unwrap(), b"IMPORTANT", "staged={staged}");
        assert_eq!(fs::read(tmp.path().join("zz")).unwrap(), b"appeared");
        if staged {
            // The files it did link, and still names, are gone.
            assert!(!tmp.path().join("stage/f0").exists());
        }
    }
}

#[test]
fn a_directory_swapped_in_after_mkdir_is_not_taken_for_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sys::open_dir(tmp.path()).unwrap();
    fs::create_dir(tmp.path().join("busy")).unwrap();
    fs::write(tmp.path().join("busy/key"), b"k").unwrap();
    fs::create_dir_all(tmp.path().join("parent/child")).unwrap();
    fs::create_dir(tmp.path().join("new")).unwrap();
    let open = |n: &str| sys::open_dir_at(root.as_fd(), OsStr::new(n)).unwrap();
    assert!(fresh_dir(open("busy").as_fd()).is_err(), "not empty");
    assert!(
        fresh_dir(open("parent").as_fd()).is_err(),
        "has a subdirectory"
    );
    assert!(fresh_dir(open("new").as_fd()).is_ok());
}
