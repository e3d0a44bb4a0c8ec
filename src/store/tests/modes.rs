//! Modes: the sender's permission bits under the receiver's umask, never
//! setuid, setgid or sticky.

use super::*;

/// `staged` pads the offer past what is held open; `tree` leaves out the
/// top-level file, so the staged offer is built as a whole tree.
fn check_modes(umask: u32, staged: bool, tree: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_umask(tmp.path(), umask);
    let mut entries = vec![
        dir_mode("d", 0o7777),
        file_mode("d/all", 5, 0o7777),
        file_mode("d/rwx", 5, 0o777),
        file_mode("d/suid", 5, 0o4755),
        file_mode("d/none", 5, 0),
        dir_mode("d/closed", 0),
        file_mode("d/implicit/x", 5, 0o666),
    ];
    if !tree {
        entries.push(file_mode("top", 5, 0o6644));
    }
    if staged {
        entries.extend(many("d/pad", MAX_HELD, 1));
    }
    let offer = files(entries);
    let mut t = begin(&store, &offer);
    // A tree is built out of sight; otherwise the directories are made
    // (and checked) before any data.
    assert_eq!(tmp.path().join("d").exists(), !(staged && tree));
    feed(&mut t, &offer);
    commit(&mut t);
    drop(t);
    let o = tmp.path();
    let dmode = |m: u32| (m & 0o777 & !umask) | 0o700;
    let fmode = |m: u32| m & 0o777 & !umask;
    let ctx = format!("umask {umask:03o}, staged {staged}, tree {tree}");
    assert_eq!(mode_of(&o.join("d")), dmode(0o7777), "{ctx}");
    assert_eq!(mode_of(&o.join("d/all")), fmode(0o7777), "{ctx}");
    assert_eq!(mode_of(&o.join("d/rwx")), fmode(0o777), "{ctx}");
    assert_eq!(mode_of(&o.join("d/suid")), fmode(0o755), "{ctx}");
    assert_eq!(mode_of(&o.join("d/none")), 0, "{ctx}");
    assert_eq!(mode_of(&o.join("d/closed")), 0o700, "{ctx}");
    assert_eq!(mode_of(&o.join("d/implicit")), dmode(0o777), "{ctx}");
    assert_eq!(mode_of(&o.join("d/implicit/x")), fmode(0o666), "{ctx}");
    if !tree {
        assert_eq!(mode_of(&o.join("top")), fmode(0o644), "{ctx}");
    }
    for (name, node) in snapshot(o) {
        if let Node::Dir { mode, .. } | Node::File { mode, .. } = node {
            assert_eq!(mode & 0o7000, 0, "{ctx}: {name} has special bits {mode:o}");
        }
    }
    assert_received(o, &offer);
}

#[test]
fn modes_are_masked_by_the_umask_and_never_special() {
    for umask in [0o022, 0o077, 0o027, 0o002, 0o000] {
        check_modes(umask, false, false);
        check_modes(umask, true, false);
        check_modes(umask, true, true);
    }
}

#[test]
fn the_umask_of_the_process_is_the_one_used() {
    // No override: whatever the test process runs with.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let umask = crate::sys::umask();
    let offer = files(vec![file_mode("x", 1, 0o777)]);
    let mut t = begin(&store, &offer);
    feed(&mut t, &offer);
    commit(&mut t);
    assert_eq!(mode_of(&tmp.path().join("x")), 0o777 & !umask);
}

#[test]
fn stream_file_mode_follows_the_umask() {
    for (umask, want) in [
        (0o077, 0o600),
        (0o022, 0o644),
        (0o027, 0o640),
        (0o000, 0o666),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("got.bin");
        let store = open_umask(&target, umask);
        let mut t = begin(&store, &stream());
        t.write(b"stream bytes").unwrap();
        t.finish(0, 12).unwrap();
        commit(&mut t);
        drop(t);
        assert_eq!(fs::read(&target).unwrap(), b"stream bytes");
        assert_eq!(mode_of(&target), want, "umask {umask:03o}");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1, "leftovers");
    }
}
