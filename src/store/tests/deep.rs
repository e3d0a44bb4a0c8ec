//! Deep paths: thousands of levels received and aborted, in time linear
//! in the offer.

use std::time::Instant;

use super::*;
use crate::store::walk::split_parent;

fn read_deep(out: &Path, name: &str) -> Vec<u8> {
    let (parent, leaf) = split_parent(name);
    let root = crate::sys::open_dir(out).unwrap();
    let d = crate::sys::open_dir_beneath(root.as_fd(), parent).unwrap();
    fs::read(format!("/proc/self/fd/{}/{leaf}", d.as_raw_fd())).unwrap()
}

#[test]
fn a_file_2000_directories_deep_is_received() {
    // The walk holds a descriptor per level; the server raises its soft
    // limit the same way.
    crate::sys::raise_fd_limit();
    let name = deep_name(2000, "f");
    assert!(name.len() <= crate::protocol::MAX_NAME, "{}", name.len());
    let offer = files(vec![file(&name, 5000)]);
    // The protocol accepts it.
    assert_eq!(Offer::decode(&offer.encode()).unwrap(), offer);
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let t0 = Instant::now();
    let mut t = begin(&store, &offer);
    let t1 = Instant::now();
    feed(&mut t, &offer);
    commit(&mut t);
    drop(t);
    let t2 = Instant::now();
    eprintln!(
        "TIMING deep file, 2000 levels ({} bytes): begin {:?}, write+finish+commit {:?}",
        name.len(),
        t1 - t0,
        t2 - t1
    );
    assert_eq!(read_deep(tmp.path(), &name), content(&name, 5000));
}

#[test]
fn aborting_a_deep_file_removes_only_the_directories_it_made() {
    crate::sys::raise_fd_limit();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    // The user already has a/a/ with a file in it.
    fs::create_dir_all(out.join("a/a")).unwrap();
    fs::write(out.join("a/a/mine"), b"mine").unwrap();
    let store = open(out);
    for depth in [1100, 2040] {
        let name = deep_name(depth, "f");
        let offer = files(vec![file(&name, 100)]);
        let t0 = Instant::now();
        let mut t = begin(&store, &offer);
        write_all(&mut t, &offer);
        // The whole chain exists before the abort...
        let root = crate::sys::open_dir(out).unwrap();
        assert!(crate::sys::open_dir_beneath(root.as_fd(), split_parent(&name).0).is_ok());
        t.abort();
        drop(t);
        eprintln!(
            "TIMING deep file, {depth} levels: begin+write+abort {:?}",
            t0.elapsed()
        );
        // ...and only the user's part is left.
        let left: Vec<String> = snapshot(out).into_keys().collect();
        assert_eq!(left, ["", "a", "a/a", "a/a/mine"], "depth {depth}");
    }
}

fn deep_entries(n: usize, depth: usize) -> Offer {
    // t000/a/a/.../f: `depth` directories in all.
    files(
        (0..n)
            .map(|i| file(&format!("t{i:03}/{}", deep_name(depth - 1, "f")), 0))
            .collect(),
    )
}

/// Begins and aborts `n` entries of `depth` directories each, in distinct
/// top-level directories; prints the times and checks nothing is left.
fn deep_entries_begin_abort(cases: &[(usize, usize)]) {
    crate::sys::raise_fd_limit();
    for &(n, depth) in cases {
        let offer = deep_entries(n, depth);
        let t0 = Instant::now();
        let decoded = Offer::decode(&offer.encode()).unwrap();
        let decode = t0.elapsed();
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let t0 = Instant::now();
        let mut t = begin(&store, &decoded);
        let t1 = Instant::now();
        t.abort();
        let t2 = Instant::now();
        drop(t);
        eprintln!(
            "TIMING {n} entries x {depth} levels ({} dirs): decode {decode:?}, begin {:?}, abort {:?}, begin+abort {:?}",
            n * depth,
            t1 - t0,
            t2 - t1,
            t2 - t0
        );
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{n} x {depth}: left behind"
        );
    }
}

#[test]
fn many_deep_entries_begin_and_abort() {
    deep_entries_begin_abort(&[(10, 1000), (20, 1000), (20, 500)]);
}

#[test]
#[ignore = "long (about a minute in a debug build): the full 200 x 1000 measurement; run with --ignored"]
fn many_deep_entries_begin_and_abort_full_size() {
    deep_entries_begin_abort(&[(100, 1000), (200, 1000), (200, 500)]);
}
