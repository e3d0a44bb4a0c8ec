//! Foreign entries at the state directory's name, and a rename race
//! between the store's mkdir and its open of the name.

use super::*;

/// The fallback state directories (`.pincat-state-*`) in `out`.
fn fallbacks(out: &Path) -> Vec<PathBuf> {
    let prefix = format!("{STATE_DIR}-");
    let mut v: Vec<PathBuf> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    v.sort();
    v
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Offers of more than [`MAX_HELD`] files that take each staged path: a
/// new top-level tree (built whole, renamed in) and files into a directory
/// the output has (staged under numbers, linked at commit).
fn staged_offers(out: &Path, tag: &str) -> [Offer; 2] {
    fs::create_dir(out.join(format!("{tag}-in"))).unwrap();
    let mut tree = vec![dir(&format!("{tag}-tree"))];
    tree.extend(many(&format!("{tag}-tree/f"), MAX_HELD + 4, 300));
    let into = files(many(&format!("{tag}-in/f"), MAX_HELD + 4, 300));
    [files(tree), into]
}

/// Puts a foreign `.pincat-state` in the output: a directory of the
/// receiver's user that is not private (0755, with a file in it), a
/// symbolic link to `outside`, or a regular file.
fn plant_state(a: &Area, kind: &str) {
    let p = a.out.join(STATE_DIR);
    match kind {
        "dir" => {
            fs::create_dir(&p).unwrap();
            chmod(&p, 0o755);
            fs::write(p.join("theirs"), b"keep").unwrap();
        }
        "symlink" => symlink(&a.outside, &p).unwrap(),
        "file" => fs::write(&p, b"not a directory").unwrap(),
        _ => unreachable!("{kind}"),
    }
}

#[test]
fn a_foreign_entry_named_like_the_state_dir_never_blocks_staging_nor_changes() {
    for kind in ["dir", "symlink", "file"] {
        let a = area();
        chmod(&a.outside, 0o755);
        plant_state(&a, kind);
        let planted = snapshot(&a.out.join(STATE_DIR));
        let outside = snapshot(&a.outside);
        let store = open(&a.out);
        for offer in staged_offers(&a.out, "x") {
            let mut t = begin(&store, &offer);
            let fb = fallbacks(&a.out);
            assert_eq!(fb.len(), 1, "{kind}: staged where? {fb:?}");
            assert_eq!(mode_of(&fb[0]), 0o1700, "{kind}: {fb:?}");
            feed(&mut t, &offer);
            commit(&mut t);
            drop(t);
            assert_received(&a.out, &offer);
        }
        // An abort also takes its fallback away.
        let offer = files(many("aborted/f", MAX_HELD + 4, 300));
        let mut t = begin(&store, &offer);
        write_all(&mut t, &offer);
        drop(t);
        assert!(!a.out.join("aborted").exists(), "{kind}");
        assert_eq!(snapshot(&a.out.join(STATE_DIR)), planted, "{kind}");
        assert_eq!(snapshot(&a.outside), outside, "{kind}");
        assert_eq!(fallbacks(&a.out), Vec::<PathBuf>::new(), "{kind}: left");
    }
}

/// Arms the attacker: right after the store's mkdir of the state name, the
/// new directory is renamed aside and `swap_in` takes its name.
fn swap_after_state_mkdir(out: &Path, swap_in: impl Fn(&Path) + 'static) {
    let out = out.to_path_buf();
    let mut armed = true;
    AFTER_MKDIR.with(|h| {
        *h.borrow_mut() = Some(Box::new(move |_, name| {
            if armed && name == STATE_DIR {
                armed = false;
                fs::rename(out.join(STATE_DIR), out.join("aside")).unwrap();
                swap_in(&out.join(STATE_DIR));
            }
        }))
    });
}

#[test]
fn a_directory_swapped_in_for_the_new_state_dir_is_never_changed() {
    for swap in ["empty", "full", "symlink"] {
        let a = area();
        let victim = a.out.join("victim");
        fs::create_dir(&victim).unwrap();
        chmod(&victim, 0o755);
        if swap == "full" {
            fs::write(victim.join("a.jpg"), b"photo").unwrap();
        }
        chmod(&a.outside, 0o755);
        let (before, outside) = (snapshot(&victim), snapshot(&a.outside));
        let store = open(&a.out);
        let (v, o) = (victim.clone(), a.outside.clone());
        swap_after_state_mkdir(&a.out, move |state| match swap {
            "symlink" => symlink(&o, state).unwrap(),
            _ => fs::rename(&v, state).unwrap(),
        });
        let offer = files(many("f", MAX_HELD + 4, 300));
        let mut t = begin(&store, &offer);
        AFTER_MKDIR.with(|h| h.borrow_mut().take());
        if swap != "symlink" {
            // Neither chmodded nor staged into while the transfer runs.
            assert_eq!(snapshot(&a.out.join(STATE_DIR)), before, "{swap}");
        }
        feed(&mut t, &offer);
        commit(&mut t);
        drop(t);
        assert_received(&a.out, &offer);
        if swap != "symlink" {
            fs::rename(a.out.join(STATE_DIR), &victim).unwrap();
            assert_eq!(snapshot(&victim), before, "{swap}");
            assert_eq!(mode_of(&victim), 0o755, "{swap}");
        }
        assert_eq!(snapshot(&a.outside), outside, "{swap}");
        assert_eq!(fallbacks(&a.out), Vec::<PathBuf>::new(), "{swap}: left");
    }
}

#[test]
fn a_second_receiver_on_the_same_output_stages_in_its_own_state_dir() {
    let a = area();
    let (first, second) = (open(&a.out), open(&a.out));
    let [one, _] = staged_offers(&a.out, "one");
    let [two, _] = staged_offers(&a.out, "two");
    let mut t1 = begin(&first, &one);
    let mine = staged(&a.out);
    let mut t2 = begin(&second, &two);
    // The first receiver's state directory is not the second's to use.
    assert_eq!(
        staged(&a.out).keys().collect::<Vec<_>>(),
        mine.keys().collect::<Vec<_>>()
    );
    assert_eq!(fallbacks(&a.out).len(), 1);
    for (t, offer) in [(&mut t1, &one), (&mut t2, &two)] {
        feed(t, offer);
        commit(t);
    }
    drop((t1, t2));
    assert_received(&a.out, &one);
    assert_received(&a.out, &two);
    assert!(!a.out.join(STATE_DIR).exists());
    assert_eq!(fallbacks(&a.out), Vec::<PathBuf>::new());
}

#[test]
fn the_sweep_clears_a_crashed_fallback_state_dir_and_nothing_foreign() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    // As a crashed receiver leaves them: private, sticky, a dead staging
    // directory inside.
    let dead = |state: &Path, mode: u32| {
        fs::create_dir_all(state.join("1-0")).unwrap();
        fs::write(state.join("1-0/0"), b"crashed").unwrap();
        chmod(&state.join("1-0"), 0o1700);
        chmod(state, mode);
    };
    let crashed = out.join(format!("{STATE_DIR}-00112233aabbccdd"));
    dead(&crashed, 0o1700);
    // Alike but not private, or not a fallback name: someone else's.
    let foreign = out.join(format!("{STATE_DIR}-ffeeddccbbaa9988"));
    dead(&foreign, 0o755);
    let odd = out.join(format!("{STATE_DIR}-notes"));
    dead(&odd, 0o1700);
    let (f, o) = (snapshot(&foreign), snapshot(&odd));
    drop(open(out));
    assert!(!crashed.exists(), "the crashed fallback was not swept");
    assert_eq!(snapshot(&foreign), f);
    assert_eq!(snapshot(&odd), o);
}

#[test]
fn received_names_in_the_state_dirs_namespace_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let fallback = format!("{STATE_DIR}-0123456789abcdef");
    for name in [
        STATE_DIR.to_string(),
        format!("{STATE_DIR}/x"),
        fallback.clone(),
        format!("{fallback}/x"),
        format!("{STATE_DIR}-x"),
    ] {
        let (code, msg) = refused(&store, &files(vec![file(&name, 3)]));
        assert_eq!(code, RejectCode::BadName, "{name}: {msg}");
    }
    // Near misses are ordinary names.
    let offer = files(vec![
        file(&format!("{STATE_DIR}ful"), 3),
        file(&format!("x/{fallback}"), 3),
    ]);
    let mut t = begin(&store, &offer);
    feed(&mut t, &offer);
    commit(&mut t);
    assert_received(tmp.path(), &offer);
}

#[test]
fn staging_works_in_a_setgid_output() {
    // New directories inherit the setgid bit there: the state directory is
    // 3700, and must still be taken for the receiver's.
    let a = area();
    chmod(&a.out, 0o2775);
    let store = open(&a.out);
    for offer in staged_offers(&a.out, "g") {
        let mut t = begin(&store, &offer);
        assert_eq!(mode_of(&a.out.join(STATE_DIR)) & !0o2000, 0o1700);
        feed(&mut t, &offer);
        commit(&mut t);
        drop(t);
        assert_received(&a.out, &offer);
    }
    assert!(!a.out.join(STATE_DIR).exists());
    assert_eq!(fallbacks(&a.out), Vec::<PathBuf>::new());
}
