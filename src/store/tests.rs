//! Unit tests of the store, without sockets: offers made by hand, the disk
//! checked directly (contents, modes, identities, and what lies outside the
//! output), the way a local attacker or a hostile sender would probe it.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::protocol::{Entry, Offer, RejectCode, TransferKind};

fn file(name: &str, size: u64) -> Entry {
    file_mode(name, size, 0o644)
}

fn file_mode(name: &str, size: u64, mode: u32) -> Entry {
    Entry {
        name: name.into(),
        is_dir: false,
        mode,
        size,
    }
}

fn dir(name: &str) -> Entry {
    dir_mode(name, 0o755)
}

fn dir_mode(name: &str, mode: u32) -> Entry {
    Entry {
        name: name.into(),
        is_dir: true,
        mode,
        size: 0,
    }
}

fn files(entries: Vec<Entry>) -> Offer {
    Offer {
        kind: TransferKind::Files,
        entries,
    }
}

fn stream() -> Offer {
    Offer {
        kind: TransferKind::Stream,
        entries: vec![],
    }
}

/// `n` files named `prefix0000...` of `size` bytes each.
fn many(prefix: &str, n: usize, size: u64) -> Vec<Entry> {
    (0..n)
        .map(|i| file(&format!("{prefix}{i:04}"), size))
        .collect()
}

fn open(out: &Path) -> Arc<Store> {
    Arc::new(Store::open(&Output::Path(out.to_path_buf())).expect("Store::open"))
}

/// A store that behaves as if the process umask were `umask`.
fn open_umask(out: &Path, umask: u32) -> Arc<Store> {
    let mut s = Store::open(&Output::Path(out.to_path_buf())).expect("Store::open");
    s.umask = umask;
    Arc::new(s)
}

fn begin(store: &Arc<Store>, offer: &Offer) -> Transfer {
    match store.begin(offer.clone()) {
        Ok(t) => t,
        Err((code, msg)) => panic!("begin refused: {code:?}: {msg}"),
    }
}

fn refused(store: &Arc<Store>, offer: &Offer) -> Fail {
    match store.begin(offer.clone()) {
        Ok(_) => panic!("begin accepted {:?}", offer.entries),
        Err(f) => f,
    }
}

/// The bytes the tests send for file `name`: different for every name.
fn content(name: &str, size: u64) -> Vec<u8> {
    let mut x = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut v = Vec::with_capacity(size as usize + 8);
    while (v.len() as u64) < size {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(size as usize);
    v
}

/// Every file's bytes, in data order.
fn offer_bytes(offer: &Offer) -> Vec<u8> {
    let mut all = Vec::new();
    for e in offer.entries.iter().filter(|e| !e.is_dir) {
        all.extend(content(&e.name, e.size));
    }
    all
}

/// Writes every file's bytes in odd-sized chunks that straddle file
/// boundaries, as DATA frames would.
fn write_all(t: &mut Transfer, offer: &Offer) {
    for chunk in offer_bytes(offer).chunks(7919) {
        if let Err((code, msg)) = t.write(chunk) {
            panic!("write failed: {code:?}: {msg}");
        }
    }
}

/// Writes everything and ends the transfer.
fn feed(t: &mut Transfer, offer: &Offer) {
    write_all(t, offer);
    if let Err((code, msg)) = t.finish(offer.file_count(), offer.total_bytes()) {
        panic!("finish failed: {code:?}: {msg}");
    }
}

fn commit(t: &mut Transfer) {
    if let Err((code, msg)) = t.commit() {
        panic!("commit failed: {code:?}: {msg}");
    }
}

/// Every file of the offer is under `out` with its content.
fn assert_received(out: &Path, offer: &Offer) {
    for e in &offer.entries {
        let p = out.join(&e.name);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{}: {err}", e.name));
        if e.is_dir {
            assert!(m.is_dir(), "{} is not a directory", e.name);
        } else {
            assert!(m.is_file(), "{} is not a file", e.name);
            assert!(
                fs::read(&p).unwrap() == content(&e.name, e.size),
                "{}: wrong content",
                e.name
            );
        }
    }
}

/// What a path is, without following anything.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
        ino: u64,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        ino: u64,
        nlink: u64,
        uid: u32,
        gid: u32,
        data: Vec<u8>,
    },
    Link(PathBuf),
    Other(u32),
}

/// Everything under `root` (root included as ""), never following a link.
fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, Node>) {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = m.file_type();
        let node = if ft.is_symlink() {
            Node::Link(fs::read_link(p).unwrap())
        } else if ft.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
            Node::Dir {
                mode: m.mode(),
                ino: m.ino(),
                uid: m.uid(),
                gid: m.gid(),
            }
        } else if ft.is_file() {
            Node::File {
                mode: m.mode(),
                ino: m.ino(),
                nlink: m.nlink(),
                uid: m.uid(),
                gid: m.gid(),
                data: fs::read(p).unwrap(),
            }
        } else {
            Node::Other(m.mode())
        };
        out.insert(rel, node);
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Regular files under `root` (relative names), never following a link.
fn regular_files(root: &Path) -> Vec<String> {
    snapshot(root)
        .into_iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .map(|(k, _)| k)
        .collect()
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// A scratch area: `out` (the output, existing) and `outside` (a directory
/// an attacker would like the receiver to write into), with some content.
struct Area {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    outside: PathBuf,
}

fn area() -> Area {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let outside = tmp.path().join("outside");
    fs::create_dir(&out).unwrap();
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("keep"), b"outside, must not change").unwrap();
    fs::write(outside.join("sub/deep"), b"also outside").unwrap();
    Area {
        out,
        outside,
        _tmp: tmp,
    }
}

// 1. Symbolic links on the way are never followed.

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

// 2. An abort removes only what no other live transfer uses.

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

// 3. Modes: the sender's permission bits under the receiver's umask, never
// setuid, setgid or sticky.

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

// 4. Staging for many-file offers.

/// The staging directories under `out`'s state dir, and the regular files
/// in each (at any depth).
fn staged(out: &Path) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    let Ok(rd) = fs::read_dir(out.join(STATE_DIR)) else {
        return m;
    };
    for e in rd {
        let e = e.unwrap();
        m.insert(
            e.file_name().to_string_lossy().into_owned(),
            regular_files(&e.path()),
        );
    }
    m
}

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

// 4b. Foreign entries at the state directory's name, and a rename race
// between the store's mkdir and its open of the name.

/// What a local user does between a mkdir of the store and the open of
/// its name: `(directory, name)` of the new entry.
type Attacker = Box<dyn FnMut(BorrowedFd<'_>, &OsStr)>;

thread_local! {
    /// The attacker of this thread, if any (see `after_mkdir`).
    pub(super) static AFTER_MKDIR: std::cell::RefCell<Option<Attacker>> =
        const { std::cell::RefCell::new(None) };
}

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

// 5. Deep paths.

/// `depth` directories `a/a/.../a` then `leaf`.
fn deep_name(depth: usize, leaf: &str) -> String {
    let mut s = "a/".repeat(depth);
    s.push_str(leaf);
    s
}

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

// 6. Descriptors.

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
    if !in_child("store::tests::descriptors_stay_bounded") {
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

// 7. Existing things are never replaced.

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

// Write-behind: the disk starts writing while data still arrives.

/// A transfer of more than WRITE_BEHIND_EVERY bytes onto a real disk runs
/// the write-behind flusher, stops it at commit and still receives every
/// byte; on tmpfs it never starts one.
#[test]
fn write_behind_runs_on_a_disk_and_stops_at_commit() {
    let disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    fs::create_dir_all(&disk).unwrap();
    let mut places = vec![(tempfile::tempdir_in(&disk).unwrap(), false)];
    if Path::new("/dev/shm").is_dir() {
        places.push((tempfile::tempdir_in("/dev/shm").unwrap(), true));
    }
    for (tmp, memory) in places {
        let fd = File::open(tmp.path()).unwrap();
        let memory = memory || sys::in_memory_fs(fd.as_fd());
        for entries in [many("big", 40, 256 << 10), many("held", 2, 5 << 20)] {
            let offer = files(entries);
            let store = open(tmp.path());
            let mut t = begin(&store, &offer);
            feed(&mut t, &offer);
            assert_eq!(
                t.behind.is_some(),
                !memory,
                "write-behind on memory fs: {memory}"
            );
            commit(&mut t);
            assert!(t.behind.is_none(), "the flusher outlived the commit");
            assert_received(tmp.path(), &offer);
        }
    }
}
