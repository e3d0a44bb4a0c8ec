//! Unit tests of the store, without sockets: offers made by hand, the disk
//! checked directly (contents, modes, identities, and what lies outside the
//! output), the way a local attacker or a hostile sender would probe it.
//! One submodule per concern; this file holds the helpers they share
//! (offers, contents, snapshots of the disk, the rename attacker).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::protocol::{Entry, Offer, RejectCode, TransferKind};

mod abort;
mod deep;
mod descriptors;
mod modes;
mod no_replace;
mod staging;
mod state_dir;
mod symlinks;
mod write_behind;

fn file(name: &str, size: u64) -> Entry {
    file_mode(name, size, 0o644)
}

fn file_mode(name: &str, size: u64, mode: u32) -> Entry {
    Entry {
        name: name.into(),
        is_dir: false,
        mode,
        size,
        mtime: None,
        link: None,
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
        mtime: None,
        link: None,
    }
}

fn files(entries: Vec<Entry>) -> Offer {
    Offer {
        kind: TransferKind::Files,
        entries,
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
    }
}

fn stream() -> Offer {
    Offer {
        kind: TransferKind::Stream,
        entries: vec![],
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
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

/// What a local user does between a mkdir of the store and the open of
/// its name: `(directory, name)` of the new entry.
type Attacker = Box<dyn FnMut(BorrowedFd<'_>, &OsStr)>;

thread_local! {
    /// The attacker of this thread, if any (see `after_mkdir`).
    pub(super) static AFTER_MKDIR: std::cell::RefCell<Option<Attacker>> =
        const { std::cell::RefCell::new(None) };
}

/// `depth` directories `a/a/.../a` then `leaf`.
fn deep_name(depth: usize, leaf: &str) -> String {
    let mut s = "a/".repeat(depth);
    s.push_str(leaf);
    s
}
