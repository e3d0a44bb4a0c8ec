//! The receiver's disk: everything a transfer writes goes through one
//! directory handle opened at start, never through a path. Files are
//! invisible until the whole transfer is durable, then linked into place
//! without ever replacing anything; an abort removes only what this
//! transfer made.
//!
//! Two ways to hold a transfer's files until commit:
//! - *held*: up to [`MAX_HELD`] unnamed `O_TMPFILE` files kept open (a crash
//!   leaves no file); each is fsynced, linked, and its directory synced.
//! - *staged*: more files than that go, one open at a time, into a private
//!   locked directory `<state>/<transfer>/` under the output, where
//!   `<state>` is a directory this store made (`.pincat-state`, or a fresh
//!   random `.pincat-state-*` when that name is taken; see `state.rs`); the
//!   commit is `syncfs`, link all, `syncfs` (two flushes whatever the file
//!   count). A crash can leave that directory; the next start on the same
//!   output removes every one no live process holds locked.
//!   When every top-level entry of the offer is a directory the output does
//!   not have yet (`send DIR` into a new place, the common case), those
//!   directories are built whole in the staging directory, files under
//!   their final names, and the commit renames each into the output
//!   (never replacing): one rename per top-level directory instead of a
//!   link and an unlink per file.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::events::human_bytes;
use crate::protocol::{Offer, RejectCode, TransferKind, escape_name};
use crate::sys::{self, Kind, Stat};

/// A refusal or failure to report to the sender: code and one-line message.
pub type Fail = (RejectCode, String);

/// Most unnamed temporary files one transfer holds open; larger offers are
/// staged in the state directory with one descriptor at a time.
pub const MAX_HELD: usize = 16;

/// Most directory descriptors one walk keeps along its path.
const MAX_WALK_FDS: usize = 32;

/// Most top-level directories one transfer builds whole in its staging
/// directory (each is held open from the commit on, to undo it safely).
const MAX_TREE_TOPS: usize = 16;

mod state;
pub use state::STATE_DIR;
use state::StateDir;

/// Where received data goes.
#[derive(Debug, Clone, Default)]
pub enum Output {
    /// Streams to stdout, files into the current directory.
    #[default]
    Default,
    /// Streams to this file, or files into this directory.
    Path(PathBuf),
}

/// What the output path was when the store opened it.
enum Base {
    /// Streams go to stdout; files into this directory (the current one).
    Stdout(OwnedFd),
    /// An existing directory: files go in, streams are refused.
    Dir(OwnedFd),
    /// A name that does not exist yet in this directory: a stream becomes
    /// that file, files go into a new directory of that name.
    Missing(OwnedFd, OsString),
    /// Something that is not a directory: everything is refused.
    NotDir,
}

/// The receiving store: one per server.
pub struct Store {
    base: Base,
    /// For messages only: the output as the user named it.
    display: PathBuf,
    umask: u32,
    /// The umask the kernel applies to what this process creates; equal to
    /// `umask` except in tests that pretend another one.
    kernel_umask: u32,
    /// Serializes directory walks, commits and aborts: they hold a
    /// descriptor per level of a deep path, and the in-use table below must
    /// not change under them.
    walk: Mutex<Registry>,
    /// Bytes promised to transfers in progress and not yet written.
    reserved: AtomicU64,
    seq: AtomicU64,
    /// Whether the output's file system has O_TMPFILE, learnt by the first
    /// transfer that asks (0 unknown, 1 yes, 2 no).
    tmpfile: std::sync::atomic::AtomicU8,
    /// Whether renameat2(RENAME_NOREPLACE) works there, learnt the same way.
    renames: std::sync::atomic::AtomicU8,
}

/// Directories (device, inode) that live transfers use, with a count each,
/// and the state directories while staged transfers exist.
#[derive(Default)]
struct Registry {
    in_use: HashMap<(u64, u64), u32>,
    /// The state directories this store made (one per output directory)
    /// with the staged transfers in each: the last one out removes it.
    states: Vec<StateDir>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the output's file system can do, probed once per store: `flag` is
/// 0 (not known yet), 1 (yes) or 2 (no). A probe that gives no answer
/// (`None`: it could not be tried) counts as no this time only.
fn known(flag: &std::sync::atomic::AtomicU8, probe: impl FnOnce() -> Option<bool>) -> bool {
    match flag.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let answer = probe();
            if let Some(yes) = answer {
                flag.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            }
            answer == Some(true)
        }
    }
}

fn io_fail(what: String, e: io::Error) -> Fail {
    let code = match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => RejectCode::NoSpace,
        _ => RejectCode::Io,
    };
    (code, format!("{what}: {e}"))
}

impl Store {
    /// Opens the output once. Missing parent directories of `--out` are
    /// created here, before any peer is involved.
    pub fn open(output: &Output) -> anyhow::Result<Store> {
        use anyhow::Context;
        let (base, display) = match output {
            Output::Default => (
                Base::Stdout(sys::open_dir(Path::new("."))?),
                PathBuf::from("."),
            ),
            Output::Path(p) => {
                let base = match std::fs::metadata(p) {
                    Ok(m) if m.is_dir() => Base::Dir(
                        sys::open_dir(p).with_context(|| format!("cannot open {}", p.display()))?,
                    ),
                    Ok(_) => Base::NotDir,
                    Err(_) => {
                        let name = p.file_name().ok_or_else(|| {
                            anyhow::anyhow!("--out {} has no file name", p.display())
                        })?;
                        let parent = match p.parent() {
                            Some(d) if !d.as_os_str().is_empty() => d,
                            _ => Path::new("."),
                        };
                        std::fs::create_dir_all(parent)
                            .with_context(|| format!("cannot create {}", parent.display()))?;
                        let fd = sys::open_dir(parent)
                            .with_context(|| format!("cannot open {}", parent.display()))?;
                        Base::Missing(fd, name.to_owned())
                    }
                };
                (base, p.clone())
            }
        };
        let umask = sys::umask();
        let store = Store {
            base,
            display,
            umask,
            kernel_umask: umask,
            walk: Mutex::new(Registry::default()),
            reserved: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            tmpfile: std::sync::atomic::AtomicU8::new(0),
            renames: std::sync::atomic::AtomicU8::new(0),
        };
        if let Base::Dir(fd) | Base::Stdout(fd) = &store.base {
            state::sweep(fd.as_fd());
        }
        Ok(store)
    }

    /// Checks an accepted offer against the disk and prepares to receive it.
    /// Nothing is visible under the output until [`Transfer::commit`].
    pub fn begin(self: &Arc<Self>, offer: Offer) -> Result<Transfer, Fail> {
        let mut t = Transfer::new(self.clone(), offer);
        match t.offer.kind {
            TransferKind::Stream => t.begin_stream()?,
            TransferKind::Files => t.begin_files()?,
        }
        Ok(t)
    }

    fn reserve(&self, root: BorrowedFd<'_>, need: u64) -> Result<u64, Fail> {
        let Some(free) = sys::available_space(root) else {
            return Ok(0);
        };
        let mut cur = self.reserved.load(Ordering::SeqCst);
        loop {
            if cur.saturating_add(need) > free {
                return Err((
                    RejectCode::NoSpace,
                    format!(
                        "the transfer needs {} but the receiver has {} free ({} promised to transfers in progress)",
                        human_bytes(need),
                        human_bytes(free),
                        human_bytes(cur)
                    ),
                ));
            }
            match self.reserved.compare_exchange(
                cur,
                cur + need,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Ok(need),
                Err(v) => cur = v,
            }
        }
    }

    fn release(&self, n: u64) {
        let _ = self
            .reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_sub(n))
            });
    }
}

/// Empties a private staging directory, or a tree this transfer made: what
/// this user owns in it, files and, down to `depth` levels, directories; a
/// symbolic link is removed, never followed.
fn remove_staged(dir: BorrowedFd<'_>, depth: usize) {
    let me = sys::euid();
    for f in sys::list_dir(dir).unwrap_or_default() {
        let name = OsStr::from_bytes(f.as_bytes());
        match sys::stat_at(dir, name) {
            Ok(Some(st)) if st.uid == me && st.kind == Kind::Dir && depth > 0 => {
                if let Ok(sub) = sys::open_dir_at(dir, name) {
                    remove_staged(sub.as_fd(), depth - 1);
                }
                let _ = sys::unlink_at(dir, name, true);
            }
            Ok(Some(st)) if st.uid == me && st.kind != Kind::Dir => {
                let _ = sys::unlink_at(dir, name, false);
            }
            _ => {}
        }
    }
}

/// Removes from the tree `top_fd` (the offer's top-level directory `top`)
/// exactly the offer's names below it: each file only while it is a
/// regular file of this user, then each directory (offered, or made for an
/// offered file) only if empty, deepest first. Never follows a link, never
/// touches a name the offer does not have.
fn remove_offered(top_fd: BorrowedFd<'_>, top: &str, offer: &Offer) {
    let prefix = format!("{top}/");
    let me = sys::euid();
    let mut dirs: HashSet<&str> = HashSet::new();
    let mut w = Walker::new(top_fd);
    for e in offer.entries.iter().rev() {
        let Some(rel) = e.name.strip_prefix(&prefix) else {
            continue;
        };
        if e.is_dir {
            dirs.insert(rel);
            continue;
        }
        let (parent, leaf) = split_parent(rel);
        let mut p = parent;
        while !p.is_empty() && dirs.insert(p) {
            p = split_parent(p).0;
        }
        let leaf = OsStr::new(leaf);
        if w.goto(parent, None).is_ok()
            && matches!(sys::stat_at(w.fd(), leaf), Ok(Some(st)) if st.kind == Kind::File && st.uid == me)
        {
            let _ = sys::unlink_at(w.fd(), leaf, false);
        }
    }
    let mut dirs: Vec<&str> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in dirs {
        let (parent, leaf) = split_parent(d);
        if w.goto(parent, None).is_ok() {
            let _ = sys::unlink_at(w.fd(), OsStr::new(leaf), true);
        }
    }
}

/// How deep a staging directory's tree can go: a staged tree is at most
/// [`MAX_WALK_FDS`] components deep.
const STAGED_DEPTH: usize = MAX_WALK_FDS + 1;

/// Keeps descriptors along one directory path below the root, so moving
/// between nearby paths costs only the components that differ (linear in
/// the offer, however deep it goes). Nothing is followed: every step is
/// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) or openat(O_NOFOLLOW).
struct Walker<'a> {
    root: BorrowedFd<'a>,
    path: String,
    /// (end of the prefix of `path`, descriptor of that directory)
    stack: Vec<(usize, OwnedFd)>,
}

/// A directory a transfer created: where its name ends in the entry's
/// name, and its identity.
#[derive(Debug, Clone, Copy)]
struct Made {
    entry: u32,
    len: u32,
    stat: Stat,
}

/// How a walk creates missing directories: a callback told of each one
/// made (where its name ends, its identity) and the mode to make them with.
type Make<'m> = (&'m mut dyn FnMut(usize, Stat), u32);

impl<'a> Walker<'a> {
    fn new(root: BorrowedFd<'a>) -> Self {
        Walker {
            root,
            path: String::new(),
            stack: Vec::new(),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.stack.last().map_or(self.root, |(_, f)| f.as_fd())
    }

    /// Moves to the directory `target` ("" is the root). With `make`, missing
    /// directories are created (mode `dir_mode`, before umask) and reported.
    fn goto(&mut self, target: &str, make: Option<Make<'_>>) -> io::Result<()> {
        let common = common_dirs(&self.path, target);
        while self.stack.last().is_some_and(|(end, _)| *end > common) {
            self.stack.pop();
        }
        let base = self.stack.last().map_or(0, |(e, _)| *e);
        self.path.clear();
        let rest = target[base..].trim_start_matches('/');
        if !rest.is_empty() {
            let r = match sys::open_dir_beneath(self.fd(), rest) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && make.is_some() => {
                    self.make_each(target, base, make)
                }
                Err(e) => Err(e),
                Ok(fd) => {
                    self.stack.push((target.len(), fd));
                    self.trim();
                    Ok(())
                }
            };
            if let Err(e) = r {
                self.stack.clear();
                return Err(e);
            }
        }
        self.path.push_str(target);
        Ok(())
    }

    fn make_each(&mut self, target: &str, base: usize, make: Option<Make<'_>>) -> io::Result<()> {
        let Some((report, mode)) = make else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let mut pos = base;
        for comp in target[base..].split('/') {
            let end = pos + comp.len();
            pos = end + 1;
            if comp.is_empty() {
                continue;
            }
            let name = OsStr::new(comp);
            let fd = match sys::open_dir_at(self.fd(), name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::mkdir_at(self.fd(), name, mode) {
                        Ok(()) => {
                            let fd = sys::open_dir_at(self.fd(), name)?;
                            let st = fresh_dir(fd.as_fd())?;
                            // Exact mode whatever the umask (the owner must
                            // be able to fill it); on the descriptor, which
                            // is the verified new directory whatever its
                            // name now points to.
                            sys::fchmod(fd.as_fd(), mode)?;
                            report(end, st);
                            fd
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            sys::open_dir_at(self.fd(), name)?
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            self.stack.push((end, fd));
            self.trim();
        }
        Ok(())
    }

    /// Keeps at most [`MAX_WALK_FDS`] descriptors: the shallowest go (a
    /// later move above them reopens from the root, still in one step).
    fn trim(&mut self) {
        if self.stack.len() > MAX_WALK_FDS {
            self.stack.drain(..self.stack.len() - MAX_WALK_FDS);
        }
    }
}

/// Checks that a directory just made and opened by name is really the new
/// one: a local user who can rename entries in its parent could have
/// swapped another directory in between the mkdir and the open. A new
/// directory is ours, empty, and has no subdirectories.
fn fresh_dir(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let st = sys::stat_fd(fd)?;
    let empty = sys::list_dir(fd).map(|v| v.is_empty()).unwrap_or(false);
    if st.kind != Kind::Dir || st.uid != sys::euid() || st.nlink != 2 || !empty {
        // Reported like a symlink on the way: the path is not ours to use.
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(st)
}

/// Length of the longest common prefix of two relative directory paths
/// that ends at a component boundary in both.
fn common_dirs(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let boundary = |s: &[u8], i: usize| i == s.len() || s[i] == b'/';
    if boundary(a, n) && boundary(b, n) {
        return n;
    }
    a[..n].iter().rposition(|&c| c == b'/').unwrap_or(0)
}

/// Splits "a/b/c" into ("a/b", "c") and "c" into ("", "c").
fn split_parent(name: &str) -> (&str, &str) {
    match name.rfind('/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("", name),
    }
}

/// Where a transfer's bytes wait until commit.
enum Holding {
    /// Standard output: nothing to hold.
    Stdout,
    /// Unnamed files, one per offered file (or the one stream file).
    Held(Vec<Option<File>>),
    /// Named files in a private locked staging directory.
    Staged {
        state: OwnedFd,
        sub: OwnedFd,
        name: OsString,
        open: Option<File>,
        /// Set when the offer's top-level directories are built whole there.
        tree: Option<Tree>,
    },
}

/// A staged transfer's new top-level directories, built inside the staging
/// directory with every file under its final name.
struct Tree {
    /// The top-level directory names, in offer order, each with the mode it
    /// gets once every one is in place (0o700 until then, so nobody else
    /// can put anything in a tree a failed commit may have to take back).
    tops: Vec<(OsString, u32)>,
    /// The staged directory files go into now, and its path there.
    dir: Option<(String, OwnedFd)>,
    /// Top-level directories already renamed into the output, each with a
    /// descriptor that pins its identity (undone on a later failure).
    placed: Vec<(OsString, OwnedFd)>,
}

impl Tree {
    /// Creates the staged file `name` (its directories exist already).
    fn create(&mut self, sub: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<File> {
        let (parent, leaf) = split_parent(name);
        if self.dir.as_ref().is_none_or(|(p, _)| p != parent) {
            self.dir = None;
            self.dir = Some((parent.to_owned(), sys::open_dir_beneath(sub, parent)?));
        }
        let dir = self.dir.as_ref().map(|(_, fd)| fd.as_fd()).unwrap_or(sub);
        sys::create_new_at(dir, OsStr::new(leaf), mode)
    }
}

/// Bytes written between two write-behind flushes.
const WRITE_BEHIND_EVERY: u64 = 4 << 20;

/// A thread that flushes the output's file system (`syncfs`) every
/// [`WRITE_BEHIND_EVERY`] bytes while a transfer still writes, so the disk
/// works while data still arrives and the commit's own flush finds little
/// left to do. It only starts writeback early: the receipt still waits for
/// the commit's flushes. None on tmpfs, where a flush writes nothing.
struct WriteBehind {
    tx: std::sync::mpsc::SyncSender<()>,
    /// Ends with the first error a flush reported: the flusher's descriptor
    /// shares the root's open file, so an error it saw is one the commit's
    /// own `syncfs` would no longer report.
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl WriteBehind {
    fn start(fd: OwnedFd) -> Option<WriteBehind> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("write-behind".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    sys::syncfs(fd.as_fd())?;
                }
                Ok(())
            })
            .ok()?;
        Some(WriteBehind { tx, thread })
    }

    fn poke(&self) {
        let _ = self.tx.try_send(());
    }

    /// Waits for a flush in progress; the first error any flush reported.
    fn stop(self) -> Result<(), Fail> {
        drop(self.tx);
        let r = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the write-behind thread panicked")));
        r.map_err(|e| io_fail("cannot sync the received files".into(), e))
    }
}

/// One transfer in progress.
pub struct Transfer {
    store: Arc<Store>,
    offer: Offer,
    /// The directory files go into, while the transfer lives.
    root: Option<OwnedFd>,
    /// For a stream into a file: its name in `root`.
    stream_name: Option<OsString>,
    holding: Holding,
    /// Offer indices of the regular files, in data order.
    files: Vec<u32>,
    current: usize,
    left: u64,
    written: u64,
    reserved: u64,
    made: Vec<Made>,
    made_root: bool,
    in_use: HashSet<(u64, u64)>,
    /// Files already given their final name (undone on a later failure).
    /// (offer index, device, inode) of each file linked so far.
    linked: Vec<(u32, u64, u64)>,
    /// Starts writeback of what this transfer wrote while it goes on.
    behind: Option<WriteBehind>,
    /// Whether starting `behind` was already considered (once per transfer).
    behind_tried: bool,
    done: bool,
}

impl Transfer {
    fn new(store: Arc<Store>, offer: Offer) -> Transfer {
        let files: Vec<u32> = (0..offer.entries.len() as u32)
            .filter(|&i| !offer.entries[i as usize].is_dir)
            .collect();
        Transfer {
            store,
            offer,
            root: None,
            stream_name: None,
            holding: Holding::Stdout,
            files,
            current: 0,
            left: 0,
            written: 0,
            reserved: 0,
            made: Vec::new(),
            made_root: false,
            in_use: HashSet::new(),
            linked: Vec::new(),
            behind: None,
            behind_tried: false,
            done: false,
        }
    }

    /// Payload bytes stored so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// True when this transfer writes to standard output.
    pub fn to_stdout(&self) -> bool {
        matches!(self.holding, Holding::Stdout)
    }

    fn begin_stream(&mut self) -> Result<(), Fail> {
        let store = self.store.clone();
        match &store.base {
            Base::Stdout(_) => Ok(()),
            Base::Dir(_) => Err((
                RejectCode::Unsupported,
                "the receiver writes into a directory and cannot take a stream; send files instead"
                    .into(),
            )),
            Base::NotDir => Err(exists_fail(&store.display.display().to_string())),
            Base::Missing(dir, name) => {
                if sys::stat_at(dir.as_fd(), name)
                    .map_err(|e| io_fail("cannot check the output".into(), e))?
                    .is_some()
                {
                    return Err(exists_fail(&store.display.display().to_string()));
                }
                let f = sys::tmpfile_in(dir.as_fd(), 0o600).map_err(|e| {
                    io_fail(
                        format!("cannot create a file beside {}", store.display.display()),
                        e,
                    )
                })?;
                self.root = Some(
                    sys::dup(dir.as_fd())
                        .map_err(|e| io_fail("cannot open the output".into(), e))?,
                );
                self.stream_name = Some(name.clone());
                self.holding = Holding::Held(vec![Some(f)]);
                Ok(())
            }
        }
    }

    fn begin_files(&mut self) -> Result<(), Fail> {
        let reserved = |n: &str| state::reserved_top(n.split('/').next().unwrap_or(n));
        if let Some(e) = self.offer.entries.iter().find(|e| reserved(&e.name)) {
            return Err((
                RejectCode::BadName,
                format!(
                    "refused file name {}: {STATE_DIR} and names that start with {STATE_DIR}- are reserved on the receiver for transfers in progress",
                    escape_name(&e.name)
                ),
            ));
        }
        let store = self.store.clone();
        let root = self.files_root(&store)?;
        let need = self.space_needed();
        let reserved = store.reserve(root.as_fd(), need);
        self.root = Some(root);
        self.reserved = reserved?;
        let root = self
            .root
            .as_ref()
            .ok_or((RejectCode::Io, "no output".into()))?;
        let root =
            sys::dup(root.as_fd()).map_err(|e| io_fail("cannot open the output".into(), e))?;
        let many = self.files.len() > MAX_HELD || !self.can_hold();
        if many && let Some(tops) = self.tree_tops(root.as_fd()) {
            let mut reg = lock(&store.walk);
            let here = sys::stat_fd(root.as_fd())
                .map_err(|err| io_fail("cannot check the output".into(), err))?;
            self.mark_in_use(&mut reg, (here.dev, here.ino));
            self.holding = self.stage(&mut reg)?;
            drop(reg);
            if self.can_rename() {
                self.make_tree(tops)?;
                self.left = self.size_of(0);
                return Ok(());
            }
        }
        self.check_and_make(&store, root.as_fd())?;
        if !matches!(self.holding, Holding::Staged { .. }) {
            self.holding = if many {
                self.stage(&mut lock(&store.walk))?
            } else {
                Holding::Held((0..self.files.len()).map(|_| None).collect())
            };
        }
        self.left = self.size_of(0);
        Ok(())
    }

    /// The offer's top-level directories when it can be staged as whole
    /// trees: every top-level entry a directory the output does not have,
    /// at most [`MAX_TREE_TOPS`] of them, no entry deeper than a walk keeps
    /// open.
    fn tree_tops(&self, root: BorrowedFd<'_>) -> Option<Vec<OsString>> {
        let mut tops: Vec<&str> = Vec::new();
        for e in &self.offer.entries {
            let top = match e.name.split_once('/') {
                Some((top, _)) => top,
                None if e.is_dir => e.name.as_str(),
                None => return None,
            };
            if e.name.split('/').count() > MAX_WALK_FDS {
                return None;
            }
            if !tops.contains(&top) {
                if tops.len() == MAX_TREE_TOPS {
                    return None;
                }
                tops.push(top);
            }
        }
        let absent = |t: &&str| matches!(sys::stat_at(root, OsStr::new(t)), Ok(None));
        tops.iter()
            .all(absent)
            .then(|| tops.iter().map(OsString::from).collect())
    }

    /// True when the output's file system renames without replacing
    /// (probed once per store, in this transfer's staging directory).
    fn can_rename(&self) -> bool {
        known(&self.store.renames, || {
            let Holding::Staged { sub, .. } = &self.holding else {
                return None;
            };
            let (a, b) = (OsStr::new("probe"), OsStr::new("probed"));
            // No directory to try with (no space?): no answer, ask next time.
            sys::mkdir_at(sub.as_fd(), a, 0o700).ok()?;
            let r = sys::rename_noreplace(sub.as_fd(), a, sub.as_fd(), b);
            let _ = sys::unlink_at(sub.as_fd(), a, true);
            let _ = sys::unlink_at(sub.as_fd(), b, true);
            match r.map_err(|e| e.raw_os_error()) {
                Ok(()) => Some(true),
                Err(Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) => Some(false),
                Err(_) => None,
            }
        })
    }

    /// Builds the offer's directories inside the staging directory, with
    /// their final modes (masked, and always usable by the receiver).
    fn make_tree(&mut self, tops: Vec<OsString>) -> Result<(), Fail> {
        let umask = self.store.umask;
        let implicit = (0o777 & !umask) | 0o700;
        let Transfer { offer, holding, .. } = self;
        let Holding::Staged { sub, tree, .. } = holding else {
            return Err((RejectCode::Io, "not staged".into()));
        };
        let mut w = Walker::new(sub.as_fd());
        let mut made = |_: usize, _: Stat| {};
        for e in &offer.entries {
            let target = if e.is_dir {
                e.name.as_str()
            } else {
                split_parent(&e.name).0
            };
            w.goto(target, Some((&mut made, implicit)))
                .map_err(|err| walk_fail(&e.name, err))?;
            let top = !e.name.contains('/');
            if e.is_dir && !top {
                sys::fchmod(w.fd(), (e.mode & 0o777 & !umask) | 0o700).map_err(|err| {
                    io_fail(
                        format!("cannot set the mode of {}", escape_name(&e.name)),
                        err,
                    )
                })?;
            }
        }
        let mut moded = Vec::with_capacity(tops.len());
        for t in tops {
            let e = offer.entries.iter().find(|e| e.is_dir && *e.name == *t);
            let mode = e.map_or(implicit, |e| (e.mode & 0o777 & !umask) | 0o700);
            let fd = sys::open_dir_at(sub.as_fd(), &t);
            fd.and_then(|fd| sys::fchmod(fd.as_fd(), 0o700))
                .map_err(|err| io_fail("cannot prepare a received directory".into(), err))?;
            moded.push((t, mode));
        }
        let tops = moded;
        *tree = Some(Tree {
            tops,
            dir: None,
            placed: Vec::new(),
        });
        Ok(())
    }

    /// Opens (or, for a missing `--out`, creates) the directory files go into.
    fn files_root(&mut self, store: &Store) -> Result<OwnedFd, Fail> {
        let open_fail = |e| io_fail(format!("cannot open {}", store.display.display()), e);
        match &store.base {
            Base::Stdout(fd) | Base::Dir(fd) => sys::dup(fd.as_fd()).map_err(open_fail),
            Base::NotDir => Err((
                RejectCode::Unsupported,
                format!(
                    "the receiver's output {} is a file, not a directory; send a stream instead",
                    store.display.display()
                ),
            )),
            Base::Missing(dir, name) => match sys::open_dir_at(dir.as_fd(), name) {
                Ok(fd) => Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::mkdir_at(dir.as_fd(), name, 0o777) {
                        // Another transfer made it first: use it, it is not ours.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            return sys::open_dir_at(dir.as_fd(), name).map_err(open_fail);
                        }
                        r => r.map_err(open_fail)?,
                    }
                    let fd = sys::open_dir_at(dir.as_fd(), name).map_err(open_fail)?;
                    fresh_dir(fd.as_fd()).map_err(open_fail)?;
                    self.made_root = true;
                    Ok(fd)
                }
                Err(e) => Err(open_fail(e)),
            },
        }
    }

    /// Bytes the files will take on disk: whole blocks, plus a block for
    /// each entry's metadata.
    fn space_needed(&self) -> u64 {
        self.offer
            .entries
            .iter()
            .map(|e| {
                e.size
                    .div_ceil(4096)
                    .saturating_mul(4096)
                    .saturating_add(4096)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Refuses existing targets and anything in the way (symlinks, files),
    /// creates the directories, and marks every directory used as in use.
    /// The in-use table is locked per entry, so a huge offer does not stall
    /// other transfers while it is checked.
    fn check_and_make(&mut self, store: &Store, root: BorrowedFd<'_>) -> Result<(), Fail> {
        let umask = self.store.umask;
        let implicit = (0o777 & !umask) | 0o700;
        let mut w = Walker::new(root);
        let mut made: HashMap<(u64, u64), usize> = HashMap::new();
        for i in 0..self.offer.entries.len() {
            let mut reg = lock(&store.walk);
            let e = &self.offer.entries[i];
            let target = if e.is_dir {
                e.name.as_str()
            } else {
                split_parent(&e.name).0
            };
            let mut report = |end: usize, stat: Stat| {
                made.insert((stat.dev, stat.ino), self.made.len());
                self.made.push(Made {
                    entry: i as u32,
                    len: end as u32,
                    stat,
                });
            };
            w.goto(target, Some((&mut report, implicit)))
                .map_err(|err| walk_fail(&e.name, err))?;
            let here = sys::stat_fd(w.fd())
                .map_err(|err| io_fail("cannot check a directory".into(), err))?;
            let key = (here.dev, here.ino);
            if e.is_dir {
                if made.contains_key(&key) {
                    let mode = (e.mode & 0o777 & !umask) | 0o700;
                    sys::fchmod(w.fd(), mode).map_err(|err| {
                        io_fail(
                            format!("cannot set the mode of {}", escape_name(&e.name)),
                            err,
                        )
                    })?;
                }
            } else {
                let leaf = OsStr::new(split_parent(&e.name).1);
                match sys::stat_at(w.fd(), leaf) {
                    Ok(None) => {}
                    Ok(Some(s)) if s.kind == Kind::Symlink => {
                        return Err((
                            RejectCode::Exists,
                            format!(
                                "{} exists on the receiver as a symbolic link; it is never followed or overwritten",
                                escape_name(&e.name)
                            ),
                        ));
                    }
                    Ok(Some(_)) => return Err(exists_fail(&escape_name(&e.name))),
                    Err(err) => {
                        return Err(io_fail(
                            format!("cannot check {}", escape_name(&e.name)),
                            err,
                        ));
                    }
                }
            }
            self.mark_in_use(&mut reg, key);
        }
        Ok(())
    }

    /// True when the output's file system has unnamed temporary files
    /// (probed once per store, not per transfer).
    fn can_hold(&self) -> bool {
        known(&self.store.tmpfile, || {
            let root = self.root.as_ref();
            Some(root.is_some_and(|r| sys::tmpfile_in(r.as_fd(), 0o600).is_ok()))
        })
    }

    /// Makes this transfer's private staging directory in the store's state
    /// directory for this output (made first when there is none).
    fn stage(&mut self, reg: &mut Registry) -> Result<Holding, Fail> {
        let root = self
            .root
            .as_ref()
            .ok_or((RejectCode::Io, "no output directory".into()))?;
        let state_fail = |e| {
            io_fail(
                "cannot make a private directory for the transfer in the receiver's output".into(),
                e,
            )
        };
        let here = sys::stat_fd(root.as_fd()).map_err(state_fail)?;
        let mine = |s: &StateDir| s.root == (here.dev, here.ino);
        let mut last = io::Error::from(io::ErrorKind::NotFound);
        // Another receiver starting on the same output sweeps unlocked
        // staging directories, and then an empty state directory: a race
        // with it just means another try.
        for _ in 0..32 {
            let i = match reg.states.iter().position(mine) {
                Some(i) => i,
                None => {
                    reg.states
                        .push(StateDir::make(root.as_fd()).map_err(state_fail)?);
                    reg.states.len() - 1
                }
            };
            match reg.states[i].stage(&self.store.seq) {
                Ok((state, sub, name)) => {
                    return Ok(Holding::Staged {
                        state,
                        sub,
                        name,
                        open: None,
                        tree: None,
                    });
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EEXIST)) => last = e,
                Err(e) => {
                    last = e;
                    break;
                }
            }
            if reg.states[i].gone() {
                reg.states.swap_remove(i);
            }
        }
        // A state directory made for this transfer alone goes again.
        if let Some(i) = reg.states.iter().position(|s| mine(s) && s.idle()) {
            reg.states.swap_remove(i).remove(root.as_fd());
        }
        Err(state_fail(last))
    }

    fn size_of(&self, file: usize) -> u64 {
        self.files
            .get(file)
            .map_or(0, |&i| self.offer.entries[i as usize].size)
    }

    /// Stores the next bytes of the transfer, in offer order.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), Fail> {
        if self.offer.kind == TransferKind::Stream {
            return self.write_stream(data);
        }
        while !data.is_empty() {
            while self.left == 0 {
                self.next_file()?;
            }
            let n = (data.len() as u64).min(self.left) as usize;
            let r = self.current_file()?.write_all(&data[..n]);
            r.map_err(|e| io_fail(format!("cannot write {}", self.current_name()), e))?;
            self.left -= n as u64;
            self.account(n as u64);
            data = &data[n..];
        }
        Ok(())
    }

    /// Stores the next bytes of the transfer given as slices, in offer
    /// order: one vectored write per file they fall in, not one per slice.
    pub fn write_slices(&mut self, bufs: &[io::IoSlice<'_>]) -> Result<(), Fail> {
        let mut total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.offer.kind == TransferKind::Stream {
            if let Holding::Held(v) = &mut self.holding
                && let Some(Some(f)) = v.first_mut()
            {
                write_prefix(f, bufs, total).map_err(|e| {
                    io_fail(format!("cannot write {}", self.store.display.display()), e)
                })?;
                self.written += total as u64;
                return Ok(());
            }
            return bufs.iter().try_for_each(|b| self.write_stream(b));
        }
        let mut rest: Vec<io::IoSlice<'_>> = bufs.to_vec();
        let mut rest = &mut rest[..];
        while total > 0 {
            while self.left == 0 {
                self.next_file()?;
            }
            let n = (total as u64).min(self.left) as usize;
            let r = write_prefix(self.current_file()?, rest, n);
            r.map_err(|e| io_fail(format!("cannot write {}", self.current_name()), e))?;
            self.left -= n as u64;
            self.account(n as u64);
            io::IoSlice::advance_slices(&mut rest, n);
            total -= n;
        }
        Ok(())
    }

    fn account(&mut self, n: u64) {
        let before = self.written / WRITE_BEHIND_EVERY;
        self.written += n;
        if self.written / WRITE_BEHIND_EVERY != before {
            self.write_behind();
        }
        let r = n.min(self.reserved);
        self.reserved -= r;
        self.store.release(r);
    }

    fn write_stream(&mut self, data: &[u8]) -> Result<(), Fail> {
        match &mut self.holding {
            Holding::Stdout => io::stdout()
                .lock()
                .write_all(data)
                .map_err(|e| io_fail("cannot write to standard output".into(), e))?,
            Holding::Held(v) => {
                if let Some(Some(f)) = v.first_mut() {
                    f.write_all(data).map_err(|e| {
                        io_fail(format!("cannot write {}", self.store.display.display()), e)
                    })?;
                }
            }
            Holding::Staged { .. } => return Err((RejectCode::Io, "stream staged".into())),
        }
        self.written += data.len() as u64;
        Ok(())
    }

    fn current_name(&self) -> String {
        self.files.get(self.current).map_or_else(String::new, |&i| {
            escape_name(&self.offer.entries[i as usize].name)
        })
    }

    /// The file receiving data now, created on first use.
    fn current_file(&mut self) -> Result<&mut File, Fail> {
        let Some(&entry) = self.files.get(self.current) else {
            return Err((
                RejectCode::Protocol,
                "the sender sent more bytes than it announced".into(),
            ));
        };
        // Its final mode from the start: the staging directory is private.
        let staged_mode = self.file_mode(self.current);
        let raw = self.offer.entries[entry as usize].name.as_str();
        let fail = |e| io_fail(format!("cannot create {}", escape_name(raw)), e);
        match &mut self.holding {
            Holding::Held(v) => {
                if v[self.current].is_none() {
                    let store = self.store.clone();
                    let _g = lock(&store.walk);
                    let root = self
                        .root
                        .as_ref()
                        .ok_or((RejectCode::Io, "no output".into()))?;
                    let mut w = Walker::new(root.as_fd());
                    let parent = split_parent(raw).0;
                    w.goto(parent, None).map_err(|e| walk_fail(raw, e))?;
                    v[self.current] = Some(sys::tmpfile_in(w.fd(), 0o600).map_err(fail)?);
                }
                v[self.current]
                    .as_mut()
                    .ok_or((RejectCode::Io, "file missing".into()))
            }
            Holding::Staged {
                sub, open, tree, ..
            } => {
                if open.is_none() {
                    let f = match tree {
                        Some(t) => t.create(sub.as_fd(), raw, staged_mode),
                        None => sys::create_new_at(
                            sub.as_fd(),
                            OsStr::new(&self.current.to_string()),
                            staged_mode,
                        ),
                    }
                    .map_err(fail)?;
                    *open = Some(f);
                }
                open.as_mut().ok_or((RejectCode::Io, "file missing".into()))
            }
            Holding::Stdout => Err((RejectCode::Io, "no file".into())),
        }
    }

    /// Closes the current file (making sure it exists, even when empty) and
    /// moves to the next.
    fn next_file(&mut self) -> Result<(), Fail> {
        if self.current >= self.files.len() {
            return Err((
                RejectCode::Protocol,
                "the sender sent more bytes than it announced".into(),
            ));
        }
        self.current_file()?;
        if let Holding::Staged { open, .. } = &mut self.holding {
            // One descriptor at a time: the staged file is named, so close it.
            // Created with its final mode when the kernel applies the same
            // umask (always, outside tests): no chmod (a journaled inode
            // update) per file.
            if let Some(f) = open.take()
                && self.store.umask != self.store.kernel_umask
            {
                let mode = self.file_mode(self.current);
                sys::fchmod(f.as_fd(), mode)
                    .map_err(|e| io_fail("cannot set a file's mode".into(), e))?;
            }
        }
        self.current += 1;
        if self.current > self.files.len() {
            return Err((
                RejectCode::Protocol,
                "the sender sent more bytes than it announced".into(),
            ));
        }
        self.left = self.size_of(self.current);
        Ok(())
    }

    fn file_mode(&self, file: usize) -> u32 {
        let m = self
            .files
            .get(file)
            .map_or(0o644, |&i| self.offer.entries[i as usize].mode);
        m & 0o777 & !self.store.umask
    }

    /// Checks the sender's END against what arrived and creates the empty
    /// files at the end of the offer.
    pub fn finish(&mut self, files: u32, bytes: u64) -> Result<(), Fail> {
        if bytes != self.written {
            return Err((
                RejectCode::Protocol,
                format!(
                    "the sender claims {bytes} bytes but {} arrived",
                    self.written
                ),
            ));
        }
        if self.offer.kind == TransferKind::Stream {
            return Ok(());
        }
        if files != self.offer.file_count() || bytes != self.offer.total_bytes() {
            return Err((
                RejectCode::Protocol,
                format!(
                    "the sender announced {} file(s) and {} bytes but ended after {files} and {bytes}",
                    self.offer.file_count(),
                    self.offer.total_bytes()
                ),
            ));
        }
        while self.current < self.files.len() {
            self.next_file()?;
        }
        Ok(())
    }

    /// Makes everything durable, then gives every file its final name
    /// (never replacing anything), then makes the names durable.
    pub fn commit(&mut self) -> Result<(), Fail> {
        // Before any flush of the commit: a flush in progress ends first,
        // and an error it saw fails the commit.
        if let Some(b) = self.behind.take() {
            b.stop()?;
        }
        let r = match &self.holding {
            Holding::Stdout => {
                io::stdout()
                    .lock()
                    .flush()
                    .map_err(|e| io_fail("cannot flush standard output".into(), e))?;
                sys::sync_stdout();
                Ok(())
            }
            Holding::Held(_) => self.commit_held(),
            Holding::Staged { tree: Some(_), .. } => self.commit_tree(),
            Holding::Staged { .. } => self.commit_staged(),
        };
        if r.is_ok() {
            self.done = true;
            self.release_all();
        }
        r
    }

    fn commit_held(&mut self) -> Result<(), Fail> {
        let Holding::Held(v) = &self.holding else {
            return Ok(());
        };
        let sync_fail = |e| io_fail("cannot sync a received file".into(), e);
        for (i, f) in v.iter().enumerate() {
            if let Some(f) = f {
                let mode = match &self.stream_name {
                    Some(_) => 0o666 & !self.store.umask,
                    None => self.file_mode(i),
                };
                sys::fchmod(f.as_fd(), mode).map_err(sync_fail)?;
                f.sync_all().map_err(sync_fail)?;
            }
        }
        let store = self.store.clone();
        let _g = lock(&store.walk);
        let root = self
            .root
            .as_ref()
            .ok_or((RejectCode::Io, "no output".into()))?;
        if let Some(name) = &self.stream_name {
            if let Some(Some(f)) = v.first() {
                let st = sys::stat_fd(f.as_fd()).map_err(sync_fail)?;
                sys::link_unnamed(f, root.as_fd(), name)
                    .map_err(|e| link_fail(&store.display.display().to_string(), e))?;
                self.linked.push((0, st.dev, st.ino));
            }
            return sys::fsync(root.as_fd()).map_err(sync_fail);
        }
        let mut w = Walker::new(root.as_fd());
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut linked = Vec::new();
        for (i, f) in v.iter().enumerate() {
            let entry = self.files[i];
            let name = &self.offer.entries[entry as usize].name;
            let (parent, leaf) = split_parent(name);
            let r = w
                .goto(parent, None)
                .map_err(|e| walk_fail(name, e))
                .and_then(|()| {
                    let f = f.as_ref().ok_or((RejectCode::Io, "file missing".into()))?;
                    let st = sys::stat_fd(f.as_fd()).map_err(sync_fail)?;
                    sys::link_unnamed(f, w.fd(), OsStr::new(leaf))
                        .map_err(|e| link_fail(&escape_name(name), e))?;
                    Ok(st)
                });
            match r {
                Ok(st) => linked.push((entry, st.dev, st.ino)),
                Err(e) => {
                    self.linked = linked;
                    return Err(e);
                }
            }
            if dirs.len() < MAX_HELD && !dirs.iter().any(|d| same_dir(d.as_fd(), w.fd())) {
                dirs.push(sys::dup(w.fd()).map_err(sync_fail)?);
            }
        }
        self.linked = linked;
        if self.made.is_empty() && !self.made_root {
            dirs.iter()
                .try_for_each(|d| sys::fsync(d.as_fd()))
                .map_err(sync_fail)
        } else {
            sys::syncfs(root.as_fd()).map_err(sync_fail)
        }
    }

    /// Asks the write-behind thread to flush; the first call decides, once,
    /// whether this transfer has one (not for stdout, not on tmpfs).
    fn write_behind(&mut self) {
        if !std::mem::replace(&mut self.behind_tried, true)
            && !matches!(self.holding, Holding::Stdout)
            && let Some(root) = &self.root
            && !sys::in_memory_fs(root.as_fd())
            && let Ok(fd) = sys::dup(root.as_fd())
        {
            self.behind = WriteBehind::start(fd);
        }
        if let Some(b) = &self.behind {
            b.poke();
        }
    }

    /// A staged commit's first flush: every byte written so far, durable.
    fn sync_output(&self) -> Result<(), Fail> {
        let root = self
            .root
            .as_ref()
            .ok_or((RejectCode::Io, "no output".into()))?;
        sys::syncfs(root.as_fd()).map_err(|e| io_fail("cannot sync the received files".into(), e))
    }

    /// Makes the staged trees durable, renames each top-level directory
    /// into the output (never replacing), then makes the names durable.
    fn commit_tree(&mut self) -> Result<(), Fail> {
        self.sync_output()?;
        // Placed and, on failure, taken back under the walk lock: no other
        // transfer of this receiver can enter a tree in between.
        let store = self.store.clone();
        let _g = lock(&store.walk);
        let r = self.place_tree();
        if r.is_err() {
            self.unplace_tree();
        }
        r
    }

    /// Renames every top-level tree into the output (never replacing), then
    /// gives each its mode, then makes it all durable.
    fn place_tree(&mut self) -> Result<(), Fail> {
        let sync_fail = |e| io_fail("cannot sync the received files".into(), e);
        let (
            Some(root),
            Holding::Staged {
                sub,
                tree: Some(tree),
                open,
                ..
            },
        ) = (&self.root, &mut self.holding)
        else {
            return Err((RejectCode::Io, "not staged".into()));
        };
        *open = None;
        tree.dir = None;
        for (top, _) in &tree.tops {
            let fd = sys::open_dir_at(sub.as_fd(), top).map_err(sync_fail)?;
            let name = escape_name(&top.to_string_lossy());
            sys::rename_noreplace(sub.as_fd(), top, root.as_fd(), top)
                .map_err(|e| link_fail(&name, e))?;
            tree.placed.push((top.clone(), fd));
        }
        for ((_, mode), (_, fd)) in tree.tops.iter().zip(&tree.placed) {
            sys::fchmod(fd.as_fd(), *mode).map_err(sync_fail)?;
        }
        sys::syncfs(root.as_fd()).map_err(sync_fail)
    }

    /// Removes the top-level directories a failed commit had already
    /// renamed into the output: the offer's names in each, through the
    /// descriptor held since the rename (the very directory, whatever is
    /// named what now), then the top's name, only while it still is that
    /// directory.
    fn unplace_tree(&mut self) {
        let Transfer {
            root: Some(root),
            holding: Holding::Staged {
                tree: Some(tree), ..
            },
            offer,
            ..
        } = self
        else {
            return;
        };
        for (top, fd) in tree.placed.drain(..).rev() {
            remove_offered(fd.as_fd(), &top.to_string_lossy(), offer);
            let ours = matches!(
                (sys::stat_at(root.as_fd(), &top), sys::stat_fd(fd.as_fd())),
                (Ok(Some(a)), Ok(b)) if a.same(&b)
            );
            if ours {
                let _ = sys::unlink_at(root.as_fd(), &top, true);
            }
        }
    }

    fn commit_staged(&mut self) -> Result<(), Fail> {
        let Holding::Staged { sub, .. } = &self.holding else {
            return Ok(());
        };
        self.sync_output()?;
        let sync_fail = |e| io_fail("cannot sync the received files".into(), e);
        let root = self
            .root
            .as_ref()
            .ok_or((RejectCode::Io, "no output".into()))?;
        let store = self.store.clone();
        let _g = lock(&store.walk);
        let mut w = Walker::new(root.as_fd());
        let mut linked = Vec::new();
        for (i, &entry) in self.files.iter().enumerate() {
            let name = &self.offer.entries[entry as usize].name;
            let (parent, leaf) = split_parent(name);
            let staged = i.to_string();
            let r = w
                .goto(parent, None)
                .map_err(|e| walk_fail(name, e))
                .and_then(|()| {
                    let staged = OsStr::new(&staged);
                    let st = sys::stat_at(sub.as_fd(), staged)
                        .map_err(sync_fail)?
                        .ok_or((RejectCode::Io, "a staged file vanished".into()))?;
                    place_staged(sub.as_fd(), staged, w.fd(), OsStr::new(leaf))
                        .map_err(|e| link_fail(&escape_name(name), e))?;
                    Ok(st)
                });
            match r {
                Ok(st) => linked.push((entry, st.dev, st.ino)),
                Err(e) => {
                    self.linked = linked;
                    return Err(e);
                }
            }
        }
        self.linked = linked;
        sys::syncfs(root.as_fd()).map_err(sync_fail)
    }

    /// Undoes everything this transfer put on disk: its temporary data, the
    /// names it linked, and the directories it created that no other live
    /// transfer uses and that are empty. Nothing else is touched.
    pub fn abort(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let store = self.store.clone();
        let mut reg = lock(&store.walk);
        // Names first, while the held files and staged names still keep the
        // linked inodes alive (a freed inode number could be reused by a
        // file that is not ours and pass the identity check).
        if let Some(root) = &self.root {
            self.unlink_linked(root.as_fd());
        }
        self.unplace_tree();
        if let Holding::Held(v) = &mut self.holding {
            v.clear();
        }
        // The staging directory next: it may sit in a directory this
        // transfer made, which can only be removed once empty.
        self.release_staging(&mut reg);
        if let Some(root) = &self.root {
            self.remove_made(&reg, root.as_fd());
        }
        self.release_in_use(&mut reg);
        drop(reg);
        self.store.release(self.reserved);
        self.reserved = 0;
    }

    /// Removes the names this transfer linked, each only while it still
    /// names the very file linked (a local user may have moved things).
    fn unlink_linked(&self, root: BorrowedFd<'_>) {
        let ours = |dir: BorrowedFd<'_>, leaf: &OsStr, dev: u64, ino: u64| {
            if matches!(sys::stat_at(dir, leaf), Ok(Some(s)) if s.dev == dev && s.ino == ino) {
                let _ = sys::unlink_at(dir, leaf, false);
            }
        };
        if let Some(name) = &self.stream_name {
            if let Some(&(_, dev, ino)) = self.linked.first() {
                ours(root, name, dev, ino);
            }
            return;
        }
        let mut w = Walker::new(root);
        for &(entry, dev, ino) in self.linked.iter().rev() {
            let (parent, leaf) = split_parent(&self.offer.entries[entry as usize].name);
            if w.goto(parent, None).is_ok() {
                ours(w.fd(), OsStr::new(leaf), dev, ino);
            }
        }
    }

    fn remove_made(&self, reg: &Registry, root: BorrowedFd<'_>) {
        let mut w = Walker::new(root);
        for m in self.made.iter().rev() {
            let key = (m.stat.dev, m.stat.ino);
            let ours = u32::from(self.in_use.contains(&key));
            if reg.in_use.get(&key).copied().unwrap_or(0) > ours {
                continue;
            }
            let name = &self.offer.entries[m.entry as usize].name[..m.len as usize];
            let (parent, leaf) = split_parent(name);
            if w.goto(parent, None).is_err() {
                continue;
            }
            let leaf = OsStr::new(leaf);
            // Only the very directory we made, still a directory.
            if matches!(sys::stat_at(w.fd(), leaf), Ok(Some(s)) if s.same(&m.stat)) {
                let _ = sys::unlink_at(w.fd(), leaf, true);
            }
        }
        if self.made_root
            && let Base::Missing(dir, name) = &self.store.base
            && let Ok(st) = sys::stat_fd(root)
        {
            let ours = u32::from(self.in_use.contains(&(st.dev, st.ino)));
            let users = reg.in_use.get(&(st.dev, st.ino)).copied().unwrap_or(0);
            if users <= ours
                && matches!(sys::stat_at(dir.as_fd(), name), Ok(Some(s)) if s.same(&st))
            {
                let _ = sys::unlink_at(dir.as_fd(), name, true);
            }
        }
    }

    /// Gives back the space promise, the in-use marks and the staging area.
    fn release_all(&mut self) {
        self.store.release(self.reserved);
        self.reserved = 0;
        let store = self.store.clone();
        let mut reg = lock(&store.walk);
        self.release_staging(&mut reg);
        self.release_in_use(&mut reg);
    }

    /// Counts this transfer once among the users of directory `key`.
    fn mark_in_use(&mut self, reg: &mut Registry, key: (u64, u64)) {
        if self.in_use.insert(key) {
            *reg.in_use.entry(key).or_insert(0) += 1;
        }
    }

    fn release_in_use(&mut self, reg: &mut Registry) {
        for key in self.in_use.drain() {
            if let Some(c) = reg.in_use.get_mut(&key) {
                *c -= 1;
                if *c == 0 {
                    reg.in_use.remove(&key);
                }
            }
        }
    }

    /// Removes this transfer's staging directory (what is still in it was
    /// not linked), and the state directory when no staged transfer is left.
    fn release_staging(&mut self, reg: &mut Registry) {
        let holding = std::mem::replace(&mut self.holding, Holding::Stdout);
        let Holding::Staged {
            state,
            sub,
            name,
            open,
            tree,
        } = holding
        else {
            self.holding = holding;
            return;
        };
        drop(open);
        drop(tree);
        remove_staged(sub.as_fd(), STAGED_DEPTH);
        let _ = sys::unlink_at(state.as_fd(), &name, true);
        if let Some(root) = &self.root {
            state::release(&mut reg.states, state.as_fd(), root.as_fd());
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Links a staged file to its final name; where the file system has no
/// hard links, renames it without replacing.
fn place_staged(
    sub: BorrowedFd<'_>,
    staged: &OsStr,
    dir: BorrowedFd<'_>,
    leaf: &OsStr,
) -> io::Result<()> {
    // A link, not a rename: the staged name keeps the inode alive until
    // the transfer ends, so an undo that checks (device, inode) cannot be
    // fooled by a new file reusing a freed inode number.
    match sys::link_at(sub, staged, dir, leaf) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK)
            ) =>
        {
            sys::rename_noreplace(sub, staged, dir, leaf)
        }
        r => r,
    }
}

fn same_dir(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    matches!((sys::stat_fd(a), sys::stat_fd(b)), (Ok(x), Ok(y)) if x.same(&y))
}

fn exists_fail(name: &str) -> Fail {
    (
        RejectCode::Exists,
        format!("{name} already exists on the receiver; it is never overwritten"),
    )
}

fn walk_fail(name: &str, e: io::Error) -> Fail {
    match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV) => (
            RejectCode::Exists,
            format!(
                "the way to {} on the receiver goes through a symbolic link or a file; it is never followed",
                escape_name(name)
            ),
        ),
        Some(libc::ENOENT) => (
            RejectCode::Io,
            format!(
                "a directory on the way to {} vanished on the receiver during the transfer",
                escape_name(name)
            ),
        ),
        _ => io_fail(
            format!("cannot reach the directory of {}", escape_name(name)),
            e,
        ),
    }
}

fn link_fail(name: &str, e: io::Error) -> Fail {
    match e.raw_os_error() {
        Some(libc::EEXIST) => (
            RejectCode::Exists,
            format!("{name} appeared on the receiver during the transfer; it was not overwritten"),
        ),
        Some(libc::EXDEV) => (
            RejectCode::Io,
            format!("{name} is on another file system than the receiver's output; not supported"),
        ),
        _ => io_fail(format!("cannot store {name}"), e),
    }
}

/// Writes exactly the first `n` bytes of `bufs` to `w`, vectored.
fn write_prefix(w: &mut impl Write, bufs: &[io::IoSlice<'_>], n: usize) -> io::Result<()> {
    let mut v = Vec::with_capacity(bufs.len());
    let mut want = n;
    for b in bufs {
        if want == 0 {
            break;
        }
        let k = b.len().min(want);
        v.push(io::IoSlice::new(&b[..k]));
        want -= k;
    }
    let mut v = &mut v[..];
    while !v.is_empty() {
        match w.write_vectored(v) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => io::IoSlice::advance_slices(&mut v, k),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
