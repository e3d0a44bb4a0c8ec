//! Descriptors: what a transfer holds open stays bounded, however many
//! files or levels the offer has.

use std::sync::atomic::Ordering;

use super::*;

fn open_fds() -> usize {
    // read_dir holds one descriptor of its own while listing.
    fs::read_dir("/proc/self/fd").unwrap().count() - 1
}

const FD_CHILD: &str = "PINCAT_STORE_TESTS_FD_CHILD";

/// Runs this test again alone in a child process, where no other test's
/// descriptors come and go.
fn in_child(test: &str) -> bool {
    if std::env::var_os(FD_CHILD).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(FD_CHILD, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    eprint!("{text}");
    assert!(out.status.success(), "child failed");
    assert!(text.contains("1 passed"), "the child did not run the test");
    false
}

/// Counts descriptors in a thread while `f` runs; returns the peak.
fn peak_fds<T>(f: impl FnOnce() -> T) -> (T, usize) {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(open_fds(), Ordering::SeqCst);
            }
        })
    };
    let r = f();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    // The sampler's own descriptors are already excluded by open_fds.
    (r, peak.load(Ordering::SeqCst))
}

#[test]
fn descriptors_stay_bounded() {
    if !in_child("store::tests::descriptors::descriptors_stay_bounded") {
        return;
    }
    crate::sys::raise_fd_limit();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let base = open_fds();
    let store = open(out);
    let with_store = open_fds();

    // 1000 files in 10 directories, written one DATA chunk at a time.
    let mut entries = Vec::new();
    for d in 0..10 {
        entries.push(dir(&format!("d{d}")));
        entries.extend(many(&format!("d{d}/f"), 100, 700));
    }
    let offer = files(entries);
    let (mut t, begin_peak) = peak_fds(|| begin(&store, &offer));
    let mut write_peak = 0;
    for chunk in offer_bytes(&offer).chunks(1000) {
        t.write(chunk).unwrap();
        write_peak = write_peak.max(open_fds());
    }
    t.finish(offer.file_count(), offer.total_bytes()).unwrap();
    let ((), commit_peak) = peak_fds(|| commit(&mut t));
    let after_commit = open_fds();
    drop(t);
    let after_drop = open_fds();
    eprintln!(
        "FDS 1000 files: base {base}, store {with_store}, begin peak {begin_peak}, write peak {write_peak}, commit peak {commit_peak}, after commit {after_commit}, after drop {after_drop}"
    );
    let limit = with_store + MAX_HELD + 10;
    assert!(begin_peak <= limit, "begin: {begin_peak} > {limit}");
    assert!(write_peak <= limit, "write: {write_peak} > {limit}");
    assert!(commit_peak <= limit, "commit: {commit_peak} > {limit}");
    assert_eq!(after_drop, with_store, "descriptors leaked by the transfer");
    assert_received(out, &offer);

    // MAX_HELD files, each in its own directory: the held worst case.
    let mut entries = Vec::new();
    for d in 0..MAX_HELD {
        entries.push(dir(&format!("h{d}")));
        entries.push(file(&format!("h{d}/x"), 10));
    }
    let offer = files(entries);
    let ((), held_peak) = peak_fds(|| {
        let mut t = begin(&store, &offer);
        feed(&mut t, &offer);
        commit(&mut t);
    });
    let after = open_fds();
    eprintln!(
        "FDS {MAX_HELD} held files in {MAX_HELD} directories: peak {held_peak}, after {after}"
    );
    assert!(held_peak <= with_store + 3 * MAX_HELD, "held: {held_peak}");
    assert_eq!(after, with_store);

    // An aborted staged transfer gives everything back too.
    let offer = files(many("ab/f", 300, 10));
    let mut t = begin(&store, &offer);
    write_all(&mut t, &offer);
    drop(t);
    assert_eq!(open_fds(), with_store, "leak after abort");

    // A deep path: one descriptor per level while directories are made.
    let offer = files(vec![file(&deep_name(2000, "f"), 1)]);
    let ((), deep_peak) = peak_fds(|| {
        let mut t = begin(&store, &offer);
        feed(&mut t, &offer);
        commit(&mut t);
    });
    eprintln!("FDS one file 2000 levels deep: peak {deep_peak} (store alone {with_store})");
    assert_eq!(open_fds(), with_store);
    drop(store);
    assert_eq!(open_fds(), base, "the store leaked");
}
