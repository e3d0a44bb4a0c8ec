//! Trees too large to offer whole go in parts: they arrive whole (times
//! and links kept), a transfer cut in a later part resumes with only the
//! rest, a sender whose parts do not follow each other in order is refused
//! with nothing stored, and an output that has the tree already is never
//! touched.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use pincat::protocol::{FrameType, Offer};

use crate::util::fs::{Tmpfs, tree};
use crate::util::peers::fake_sender;
use crate::util::proxy::Proxy;
use crate::util::wire::{self, frame};
use crate::util::{Server, random_bytes, text};

/// More entries than one part holds (`give::PART_ENTRIES` is 50,000).
const DIRS: usize = 61;
const PER_DIR: usize = 1000;

/// `dirs` directories of `per_dir` files of `size` bytes under `root`.
fn make_tree(root: &Path, dirs: usize, per_dir: usize, size: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let body = match size {
                0 => Vec::new(),
                n => random_bytes(n, (d * per_dir + f) as u64),
            };
            fs::write(dir.join(format!("f{f:04}")), body).unwrap();
        }
    }
}

fn set_mtime(p: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::open(p).unwrap().set_modified(t).unwrap();
}

fn mtime(p: &Path) -> u64 {
    let m = fs::symlink_metadata(p).unwrap().modified().unwrap();
    m.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn send_to(srv: &Server, addr: &str, paths: &[&Path]) -> std::process::Output {
    crate::util::cli::send_through(srv, addr, &[], paths)
}

#[test]
fn a_tree_in_parts_arrives_whole_with_its_times_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs_) = Tmpfs::mount(&tmp.path().join("fs"), "1g") else {
        return;
    };
    let base = fs_.path();
    let a = base.join("src/a");
    make_tree(&a, DIRS, PER_DIR, 0);
    fs::write(a.join("d000/f0001"), b"one").unwrap();
    fs::write(a.join("d060/f0999"), b"last").unwrap();
    std::os::unix::fs::symlink("f0001", a.join("d000/link")).unwrap();
    let b = base.join("src/b");
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("note"), b"second top").unwrap();
    for (p, t) in [
        (a.join("d010"), 1_000_000_000),
        (a.join("d059"), 1_100_000_000),
        (a.clone(), 1_200_000_000),
        (b.clone(), 1_300_000_000),
    ] {
        set_mtime(&p, t);
    }
    let mut srv = Server::start(base, &["--out", "dst"]);
    let out = send_to(&srv, &srv.addr.clone(), &[&a, &b]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let done = srv.wait_event("transfer-done");
    assert_eq!(done["files"], DIRS * PER_DIR + 1, "{done}");
    assert_eq!(srv.wait_exit().0, Some(0));
    let dst = base.join("dst");
    assert_eq!(tree(&base.join("src")), tree(&dst), "the trees differ");
    assert_eq!(
        fs::read_link(dst.join("a/d000/link")).unwrap(),
        Path::new("f0001")
    );
    assert_eq!(fs::read(dst.join("a/d060/f0999")).unwrap(), b"last");
    for (p, t) in [
        ("a/d010", 1_000_000_000),
        ("a/d059", 1_100_000_000),
        ("a", 1_200_000_000),
        ("b", 1_300_000_000),
    ] {
        assert_eq!(mtime(&dst.join(p)), t, "{p}");
    }
    assert!(!dst.join(".pincat-state").exists(), "state left behind");
}

#[test]
fn a_tree_cut_in_a_later_part_resumes_with_only_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs_) = Tmpfs::mount(&tmp.path().join("fs"), "2g") else {
        return;
    };
    let base = fs_.path();
    let src = base.join("src/tree");
    // The first part: 49,950 files of 500 bytes (25 MB); the second: eight
    // files of 4 MiB (32 MiB), where the cut comes.
    make_tree(&src, 50, PER_DIR, 500);
    let big = src.join("z-big");
    fs::create_dir(&big).unwrap();
    for i in 0..8u64 {
        fs::write(big.join(format!("b{i}")), random_bytes(4 << 20, i)).unwrap();
    }
    let total = 50 * PER_DIR as u64 * 500 + 8 * (4 << 20);
    let mut srv = Server::start(base, &["--out", "dst"]);
    let proxy = Proxy::start(&srv.addr);
    proxy.cut_after(total * 60 / 100);
    let out = send_to(&srv, &proxy.addr, &[&src]);
    assert_ne!(out.status.code(), Some(0), "the cut transfer succeeded");
    assert!(proxy.take_bytes() >= total * 60 / 100);
    let out = send_to(&srv, &proxy.addr, &[&src]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second = proxy.take_bytes();
    let done = srv.wait_event("transfer-done");
    eprintln!("second attempt: {second} bytes on the wire of {total}; {done}");
    // All of the first part and some of the second were there already.
    let resumed = done["resumed_bytes"].as_u64().unwrap();
    assert!(resumed > 50 * PER_DIR as u64 * 500, "{done}");
    assert!(second * 100 <= total * 70, "{second} bytes the second time");
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(tree(&base.join("src")), tree(&base.join("dst")));
}

/// A files offer of `entries` that says another part follows.
fn part(entries: Vec<pincat::protocol::Entry>, continued: bool) -> Vec<u8> {
    let offer = Offer {
        continued,
        ..wire::files(entries)
    };
    frame(FrameType::Offer, &offer.encode())
}

#[test]
fn parts_out_of_order_are_refused_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("inbox")).unwrap();
    let mut srv = Server::start(tmp.path(), &["--keep-open", "--out", "inbox"]);
    let first = || {
        let mut s = part(vec![wire::dir("t"), wire::file("t/a", 4)], true);
        s.extend(frame(FrameType::Data, b"evil"));
        s.extend(frame(
            FrameType::End,
            &pincat::protocol::encode_counts(1, 4),
        ));
        s
    };
    let cases = [
        ("inside a file", vec![wire::file("t/a/passwd", 0)]),
        ("twice", vec![wire::file("t/a", 0)]),
        ("out of order", vec![wire::file("t/0", 0)]),
        ("a top again", vec![wire::dir("u"), wire::file("t/z", 0)]),
    ];
    for (what, second) in cases {
        let mut script = first();
        script.extend(part(second, false));
        let frames = fake_sender(&srv.addr, &srv.fingerprint, &script);
        let types: Vec<FrameType> = frames.iter().map(|(t, _)| *t).collect();
        assert_eq!(types.last(), Some(&FrameType::Error), "{what}: {types:?}");
        let ev = srv.wait_event("error");
        assert_eq!(ev["code"], "bad-name", "{what}: {ev}");
        assert_eq!(
            fs::read_dir(tmp.path().join("inbox"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n != ".pincat-state")
                .count(),
            0,
            "{what}: something was stored"
        );
    }
    assert!(srv.is_running());
}

#[test]
fn a_tree_in_parts_never_touches_a_tree_already_there() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs_) = Tmpfs::mount(&tmp.path().join("fs"), "1g") else {
        return;
    };
    let base = fs_.path();
    make_tree(&base.join("src/a"), DIRS, PER_DIR, 0);
    fs::create_dir_all(base.join("dst/a")).unwrap();
    fs::write(base.join("dst/a/mine"), b"kept").unwrap();
    let srv = Server::start(base, &["--keep-open", "--out", "dst"]);
    let out = send_to(&srv, &srv.addr, &[&base.join("src/a")]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exists"),
        "{}",
        text(&out.stderr)
    );
    let left: Vec<_> = fs::read_dir(base.join("dst/a")).unwrap().collect();
    assert_eq!(left.len(), 1);
    assert_eq!(fs::read(base.join("dst/a/mine")).unwrap(), b"kept");
    // --update does not go in parts: said before anything is sent.
    let out = send_to(
        &srv,
        &srv.addr,
        &[Path::new("--update"), &base.join("src/a")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("one by one"),
        "{}",
        text(&out.stderr)
    );
}
