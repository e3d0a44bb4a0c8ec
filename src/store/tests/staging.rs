//! Staging for many-file offers: the state directory, its sweep, whole
//! trees renamed into place and taken back, other receivers on the same
//! output.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::*;
use crate::store::commit::tree::remove_offered;
use crate::sys;

#[test]
fn the_sweep_leaves_a_directory_renamed_to_the_state_name_alone() {
    // A local user renames someone's directory to .pincat-state to have
    // the next start delete its files: only private, receiver-shaped
    // staging directories are swept.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let victim = out.join(STATE_DIR).join("2023");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("a.jpg"), b"photo").unwrap();
    let shaped = out.join(STATE_DIR).join("12-3");
    fs::create_dir(&shaped).unwrap();
    fs::write(shaped.join("0"), b"theirs").unwrap();
    drop(open(out));
    assert_eq!(fs::read(victim.join("a.jpg")).unwrap(), b"photo");
    // The state directory is not private (0755): nothing in it is touched.
    assert_eq!(fs::read(shaped.join("0")).unwrap(), b"theirs");
    fs::set_permissions(
        out.join(STATE_DIR),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    drop(open(out));
    // Private now, but "2023" is no staging name and "12-3" is not private.
    assert_eq!(fs::read(victim.join("a.jpg")).unwrap(), b"photo");
    assert_eq!(fs::read(shaped.join("0")).unwrap(), b"theirs");
    // What a hostile sender can make a receiver create: directories of mode
    // 0700 (state-shaped, staging-shaped, with a tree inside). Received
    // modes are never sticky, so none of it is taken for pincat's.
    let p = |path: &Path, mode: u32| {
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    fs::create_dir_all(shaped.join("t/s")).unwrap();
    fs::write(shaped.join("t/s/x"), b"received").unwrap();
    p(&shaped, 0o700);
    drop(open(out));
    assert_eq!(fs::read(shaped.join("t/s/x")).unwrap(), b"received");
    assert_eq!(fs::read(shaped.join("0")).unwrap(), b"theirs");
    // The very mode pincat gives its own: swept.
    p(&out.join(STATE_DIR), 0o1700);
    p(&shaped, 0o1700);
    drop(open(out));
    assert!(!shaped.exists(), "a real staging directory was not swept");
    assert_eq!(fs::read(victim.join("a.jpg")).unwrap(), b"photo");
}

#[test]
fn taking_back_a_tree_removes_only_the_offers_names() {
    // What a failed commit does to a tree it had already renamed in:
    // someone else's files and directories put in it meanwhile stay.
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    let mut entries = vec![dir("t"), dir("t/a")];
    entries.extend(many("t/a/f", 5, 10));
    entries.extend(many("t/b/c/g", 3, 10));
    let offer = files(entries);
    for e in &offer.entries {
        let path = tmp.path().join(&e.name);
        if e.is_dir {
            fs::create_dir_all(&path).unwrap();
        } else {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, b"ours").unwrap();
        }
    }
    fs::create_dir(t.join("b/theirs")).unwrap();
    fs::write(t.join("b/theirs/keep"), b"theirs").unwrap();
    fs::write(t.join("a/keep"), b"theirs").unwrap();
    symlink(tmp.path().join("elsewhere"), t.join("b/c/link")).unwrap();
    let fd = crate::sys::open_dir(&t).unwrap();
    remove_offered(fd.as_fd(), "t", &offer);
    let mut left = regular_files(&t);
    left.sort();
    assert_eq!(
        left,
        vec!["a/keep".to_string(), "b/theirs/keep".to_string()]
    );
    assert!(
        t.join("b/c/link").is_symlink(),
        "a link not offered was removed"
    );
    assert!(!t.join("a/f0000").exists());
}

#[test]
fn a_second_open_spares_a_live_staged_transfer_and_sweeps_dead_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let store = open(out);
    let mut entries = vec![dir("many")];
    entries.extend(many("many/f", 60, 3000));
    let offer = files(entries);
    let mut t = begin(&store, &offer);
    // Half the data.
    let all = offer_bytes(&offer);
    let half = all.len() / 2;
    t.write(&all[..half]).unwrap();
    let live = staged(out);
    assert_eq!(live.len(), 1, "{live:?}");
    let (live_name, live_files) = live.iter().next().unwrap();
    assert!(live_files.len() >= 29, "{live_files:?}");
    // What a crashed receiver would have left: unlocked, with files.
    let dead = out.join(STATE_DIR).join("1-0");
    fs::create_dir(&dead).unwrap();
    // As a receiver makes them: private to its user.
    fs::set_permissions(&dead, std::os::unix::fs::PermissionsExt::from_mode(0o1700)).unwrap();
    fs::write(dead.join("0"), b"crashed").unwrap();
    fs::write(dead.join("1"), b"crashed").unwrap();
    // And a half-built tree, files under their final names.
    fs::create_dir_all(dead.join("t/s/u")).unwrap();
    fs::write(dead.join("t/s/u/f"), b"crashed").unwrap();
    fs::write(dead.join("t/g"), b"crashed").unwrap();

    let again = open(out);
    let after = staged(out);
    assert_eq!(
        after.get(live_name),
        Some(live_files),
        "the live transfer lost its files"
    );
    assert!(!dead.exists(), "the dead staging directory was not swept");
    assert_eq!(after.len(), 1, "{after:?}");

    t.write(&all[half..]).unwrap();
    t.finish(offer.file_count(), offer.total_bytes()).unwrap();
    commit(&mut t);
    drop(t);
    assert_received(out, &offer);
    assert!(!out.join(STATE_DIR).exists(), "state dir left after commit");
    // The second store is usable too.
    let second = files(many("more/g", MAX_HELD + 3, 10));
    let mut t = begin(&again, &second);
    feed(&mut t, &second);
    commit(&mut t);
    drop(t);
    assert_received(out, &second);
    assert!(!out.join(STATE_DIR).exists());
}

#[test]
fn staged_commit_and_abort_leave_no_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    fs::write(out.join("user-file"), b"mine").unwrap();
    let store = open(out);
    let mut entries = vec![dir("two")];
    entries.extend(many("two/f", 200, 100));
    let offer = files(entries);
    let mut t = begin(&store, &offer);
    feed(&mut t, &offer);
    commit(&mut t);
    drop(t);
    assert_received(out, &offer);
    assert!(!out.join(STATE_DIR).exists());

    let offer = files(many("aborted/f", 200, 100));
    let mut t = begin(&store, &offer);
    write_all(&mut t, &offer);
    assert!(out.join(STATE_DIR).exists(), "not staged?");
    // While staged, nothing but the directories is beside the user's files.
    assert!(!out.join("aborted/f0000").exists());
    drop(t);
    assert!(!out.join(STATE_DIR).exists());
    assert!(!out.join("aborted").exists());
    assert_eq!(fs::read(out.join("user-file")).unwrap(), b"mine");
}

#[test]
fn a_new_tree_is_built_out_of_sight_and_renamed_into_place() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    fs::create_dir(out.join("old")).unwrap();
    fs::write(out.join("old/keep"), b"mine").unwrap();
    let store = open(out);
    let mut entries = vec![dir("t"), dir_mode("t/s", 0o750)];
    entries.extend(many("t/s/f", 40, 700));
    entries.extend(many("t/deep/er/g", 5, 10));
    entries.push(file("t/empty", 0));
    let offer = files(entries);
    let mut t = begin(&store, &offer);
    let all = offer_bytes(&offer);
    t.write(&all[..all.len() / 2]).unwrap();
    // Nothing in the output yet; the files wait under their own names.
    assert!(!out.join("t").exists());
    let live = staged(out);
    let files_now = live.values().next().unwrap();
    assert!(files_now.contains(&"t/s/f0000".to_string()), "{live:?}");
    t.write(&all[all.len() / 2..]).unwrap();
    t.finish(offer.file_count(), offer.total_bytes()).unwrap();
    commit(&mut t);
    drop(t);
    assert_received(out, &offer);
    let umask = crate::sys::umask();
    assert_eq!(mode_of(&out.join("t/s")), (0o750 & !umask) | 0o700);
    assert_eq!(fs::read(out.join("old/keep")).unwrap(), b"mine");
    assert!(!out.join(STATE_DIR).exists(), "state dir left after commit");
}

#[test]
fn a_failed_tree_commit_takes_back_what_it_renamed_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let store = open(out);
    let mut entries = vec![dir("a")];
    entries.extend(many("a/f", MAX_HELD, 10));
    entries.push(dir("b"));
    entries.extend(many("b/f", MAX_HELD, 10));
    let offer = files(entries);
    let mut t = begin(&store, &offer);
    feed(&mut t, &offer);
    // A local user makes "b" before the commit: "a" is already renamed in
    // when "b" fails, and must go; the user's "b" must stay as it is.
    fs::create_dir(out.join("b")).unwrap();
    fs::write(out.join("b/f0000"), b"theirs").unwrap();
    let Err((code, msg)) = t.commit() else {
        panic!("commit over an existing directory succeeded");
    };
    assert_eq!(code, RejectCode::Exists, "{msg}");
    assert!(msg.contains("\"b\" appeared on the receiver"), "{msg}");
    drop(t);
    assert!(!out.join("a").exists(), "the renamed tree was left");
    assert_eq!(regular_files(out), vec!["b/f0000".to_string()]);
    assert_eq!(fs::read(out.join("b/f0000")).unwrap(), b"theirs");
    assert!(!out.join(STATE_DIR).exists());
}

#[test]
fn a_renamed_tree_replaced_by_the_user_is_not_taken_back() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let store = open(out);
    let mut entries = vec![dir("a")];
    entries.extend(many("a/f", MAX_HELD + 1, 10));
    let offer = files(entries);
    let mut t = begin(&store, &offer);
    feed(&mut t, &offer);
    commit(&mut t);
    // Committed: a later abort (as on drop) leaves the user's tree alone,
    // even once the user replaced it with one of the same name.
    fs::rename(out.join("a"), out.join("a.old")).unwrap();
    fs::create_dir(out.join("a")).unwrap();
    fs::write(out.join("a/x"), b"new").unwrap();
    t.abort();
    drop(t);
    assert_eq!(fs::read(out.join("a/x")).unwrap(), b"new");
    assert_eq!(regular_files(&out.join("a.old")).len(), MAX_HELD + 1);
}

#[test]
fn a_failed_staging_does_not_break_later_many_file_transfers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let store = open(out);
    // The first staging directory is swapped for a file right after its
    // mkdir (any failure after the state directory is made will do:
    // ENOSPC, EMFILE, a race).
    let mut armed = true;
    AFTER_MKDIR.with(|h| {
        *h.borrow_mut() = Some(Box::new(move |dir, name| {
            if armed && !name.as_bytes().starts_with(STATE_DIR.as_bytes()) {
                armed = false;
                sys::rename_at(dir, name, OsStr::new("aside")).unwrap();
                sys::create_new_at(dir, name, 0o600).unwrap();
            }
        }))
    });
    let (code, msg) = refused(&store, &files(many("f", MAX_HELD + 2, 10)));
    AFTER_MKDIR.with(|h| h.borrow_mut().take());
    assert_eq!(code, RejectCode::Io, "{msg}");
    for round in 0..2 {
        let offer = files(many(&format!("r{round}/f"), MAX_HELD + 2, 10));
        let mut t = begin(&store, &offer);
        feed(&mut t, &offer);
        commit(&mut t);
        drop(t);
        assert_received(out, &offer);
    }
}

#[test]
fn staged_transfers_survive_other_receivers_starting_on_the_same_output() {
    use std::sync::atomic::AtomicBool;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (stop, out) = (stop.clone(), out.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                drop(Store::open(&Output::Path(out.clone())).unwrap());
                n += 1;
            }
            n
        })
    };
    let store = open(&out);
    let attempt = |i: usize| {
        let offer = files(many(&format!("r{i}/f"), MAX_HELD + 2, 10));
        store.begin(offer.clone()).and_then(|mut t| {
            t.write(&offer_bytes(&offer))?;
            t.finish(offer.file_count(), offer.total_bytes())?;
            t.commit()
        })
    };
    // Until the first failure (bounded), then 20 more with no one racing.
    let (mut ok, mut first) = (0, None);
    let t0 = Instant::now();
    let mut i = 0;
    while first.is_none() && t0.elapsed() < std::time::Duration::from_secs(10) {
        i += 1;
        match attempt(i) {
            Ok(()) => ok += 1,
            Err(e) => first = Some(e),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let sweeps = sweeper.join().unwrap();
    let after = (0..20).filter(|k| attempt(i + 1 + k).is_err()).count();
    eprintln!(
        "SWEEP RACE: {ok} ok before the first failure {first:?} ({sweeps} starts, {:?}); then {after} of 20 failed with no one racing",
        t0.elapsed()
    );
    assert!(first.is_none(), "failed after {ok} transfers: {first:?}");
}

#[test]
fn a_received_file_named_like_the_state_dir_does_not_break_staging() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let planted = files(vec![file(STATE_DIR, 3)]);
    if let Ok(mut t) = store.begin(planted.clone()) {
        feed(&mut t, &planted);
        let _ = t.commit();
    }
    let offer = files(many("f", MAX_HELD + 4, 10));
    let mut t = begin(&store, &offer);
    feed(&mut t, &offer);
    commit(&mut t);
    assert_received(tmp.path(), &offer);
}

#[test]
fn a_received_file_under_the_state_dir_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let planted = files(vec![
        dir(STATE_DIR),
        dir(".pincat-state/x"),
        file(".pincat-state/x/y", 3),
    ]);
    let Ok(mut t) = store.begin(planted.clone()) else {
        return; // Refused up front: nothing to lose.
    };
    feed(&mut t, &planted);
    if t.commit().is_err() {
        return;
    }
    drop(t);
    assert_received(tmp.path(), &planted);
    let _restart = open(tmp.path());
    assert_received(tmp.path(), &planted);
}
