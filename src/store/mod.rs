//! The receiver's disk: everything a transfer writes goes through one
//! directory handle opened at start, never through a path. Files are
//! invisible until the whole transfer is durable, then linked into place
//! without ever replacing anything; an abort removes only what this
//! transfer made.
//!
//! This file holds the types every part shares ([`Store`], [`Transfer`]
//! and what a transfer holds until commit); the work is split by concern:
//! - `root.rs`: opening the output once (and sweeping what a crash left),
//!   the directory a transfer's files go into;
//! - `begin.rs`: an offer checked against the disk before any byte comes;
//! - `space.rs`: the free space promised to transfers in progress;
//! - `walk.rs`: reaching directories below the root without following
//!   anything;
//! - `write.rs`: the write path, bytes into the file whose turn it is;
//! - `write_behind.rs`: early writeback while data still arrives;
//! - `commit/`: making it all durable and named, one file per strategy
//!   (`held.rs`, `staged.rs`, `tree.rs`);
//! - `times.rs`: the sender's modification times on what it made;
//! - `links.rs`: symbolic links, checked at the offer, made at commit;
//! - `abort.rs`: undoing exactly what this transfer made;
//! - `state.rs`: the private state directory staged transfers wait in;
//! - `fail.rs`: disk errors turned into refusals for the sender.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::protocol::{Offer, RejectCode, TransferKind};
use crate::sys::Stat;

/// A refusal or failure to report to the sender: code and one-line message.
pub type Fail = (RejectCode, String);

/// Most unnamed temporary files one transfer holds open; larger offers are
/// staged in the state directory with one descriptor at a time.
pub const MAX_HELD: usize = 16;

mod abort;
mod basis;
mod begin;
mod commit;
mod fail;
mod kept;
mod lazy;
mod links;
mod parts;
mod root;
mod space;
mod state;
mod times;
mod walk;
mod write;
mod write_behind;

use commit::tree::Tree;
pub use kept::{secret_of_code, secret_of_key};
pub use root::Keep;
pub use state::STATE_DIR;
use state::StateDir;
use write_behind::WriteBehind;

/// Where received data goes.
#[derive(Debug, Clone, Default)]
pub enum Output {
    /// Streams to stdout, files into the current directory; a stream is
    /// refused when stdout is a terminal (binary data would garble it).
    #[default]
    Default,
    /// As `Default`, but streams go to stdout even when it is a terminal
    /// (`--out -`).
    Stdout,
    /// Streams to this file (or device), or files into this directory.
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
    /// A character device or a pipe (`/dev/null`, `/dev/stdout`, a shell's
    /// `>(...)`), opened for writing: a stream is written straight into
    /// it, files are refused.
    Device(Arc<File>),
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
    tmpfile: AtomicU8,
    /// Whether renameat2(RENAME_NOREPLACE) works there, learnt the same way.
    renames: AtomicU8,
    /// Whether what is created gets the sender's modification times.
    times: bool,
    /// Whether symbolic links may point outside what is sent.
    outside_links: bool,
    /// Whether files that are there and differ may be replaced
    /// (`serve --allow-update`, `get --update`).
    allow_update: bool,
    /// Whether every offer is compared with what is there, as with the
    /// sender's `--update` (`get --update`).
    update: bool,
    /// Whether interrupted transfers keep what they wrote for a resume.
    resume: bool,
    /// The names kept by this process when nobody could resume them after
    /// it ends (a code made for this run, or an ephemeral identity): they
    /// are removed as it ends (see [`Store::forget_kept_here`]).
    kept_here: Option<Mutex<HashSet<OsString>>>,
    /// A stream to stdout is refused while stdout is a terminal
    /// ([`Output::Default`]).
    no_terminal: bool,
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

/// The output directory every file goes under (none when the transfer has
/// no output, a mistake).
fn out_dir(root: &Option<OwnedFd>) -> Result<BorrowedFd<'_>, Fail> {
    root.as_ref()
        .map(|r| r.as_fd())
        .ok_or((crate::protocol::RejectCode::Io, "no output".into()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a transfer's bytes wait until commit.
enum Holding {
    /// Standard output: nothing to hold.
    Stdout,
    /// The output device: nothing to hold either.
    Device(Arc<File>),
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

/// A directory a transfer created: where its name ends in the entry's
/// name, and its identity.
#[derive(Debug, Clone, Copy)]
struct Made {
    entry: u32,
    len: u32,
    stat: Stat,
}

/// What the receiver builds one offered file on.
#[derive(Default)]
enum FileBasis {
    /// Nothing: every byte comes.
    #[default]
    New,
    /// The quick check found it as sent: it stays as it is.
    Unchanged,
    /// A partial file kept from an interrupted transfer with this peer:
    /// its name of this process's own in the kept directory (until it is
    /// moved from there) and its identity. No descriptor is held: an offer
    /// may have thousands of them; it is opened again when its turn comes.
    Kept {
        own: Option<Box<std::ffi::OsStr>>,
        id: (u64, u64),
        hashes: Box<[crate::digest::Hash]>,
    },
    /// The file that is there, which `--update` replaces (or keeps, when
    /// every chunk matched); opened again, by name and checked by
    /// identity, when its chunks are copied.
    Existing {
        stat: Box<Stat>,
        hashes: Box<[crate::digest::Hash]>,
    },
}

static NEW: FileBasis = FileBasis::New;
static NO_PLAN: Option<Box<[bool]>> = None;

/// One transfer in progress.
pub struct Transfer {
    store: Arc<Store>,
    offer: Offer,
    /// The admitted peer's resume secret (kept partial files are named by it).
    secret: Option<crate::digest::Hash>,
    /// Files that are there are compared, not refused (the sender's
    /// `--update`, or the receiver's `get --update`).
    update: bool,
    /// The kept directory, once looked for or made.
    kept: Option<OwnedFd>,
    /// Per file (data order): what the receiver builds it on.
    bases: lazy::Lazy<FileBasis>,
    /// Per file: the chunks the sender sends, for files with a basis.
    plans: lazy::Lazy<Option<Box<[bool]>>>,
    /// PLAN entries received.
    planned: usize,
    /// PLAN entries due: one per file the taker has chunks of.
    plans_due: usize,
    /// The file after the last one a PLAN entry was for.
    next_plan: usize,
    /// The current file's ranges still to come, last first (`None`: not
    /// started).
    ranges: Option<Vec<(u64, u64)>>,
    /// Hashes the current file's chunks.
    chunker: Option<crate::digest::Chunker>,
    /// Per file: its digest as stored.
    digests: Vec<Option<crate::digest::Hash>>,
    /// Files whose file was made so far (they are made in order).
    opened: usize,
    /// Files `--update` replaced at commit: (file, device, inode of the
    /// new one); an undo swaps the old one back.
    replaced: Vec<(u32, u64, u64)>,
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
    /// Directories built whole in staging (device, inode), which keep
    /// their identity when the tree is renamed into place.
    tree_dirs: Vec<(u64, u64)>,
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
    /// A transfer in parts: `offer` is the current part (see `parts.rs`).
    parts: bool,
    /// What the parts before the current one added up to.
    before: parts::Before,
    /// Directories of earlier parts whose time waits until nothing more
    /// comes into them (the ones on the way to the last name so far).
    carried: Vec<(String, crate::protocol::Mtime)>,
}

impl Transfer {
    fn new(store: Arc<Store>, offer: Offer) -> Transfer {
        // A stream's one entry is only its name (`send --as`): no file.
        let files: Vec<u32> = (0..offer.entries.len() as u32)
            .filter(|&i| offer.kind == TransferKind::Files && offer.entries[i as usize].is_file())
            .collect();
        let n = files.len();
        Transfer {
            store,
            offer,
            secret: None,
            update: false,
            kept: None,
            bases: lazy::Lazy::new(n, &NEW),
            plans: lazy::Lazy::new(n, &NO_PLAN),
            planned: 0,
            plans_due: 0,
            next_plan: 0,
            ranges: None,
            chunker: None,
            digests: vec![None; n],
            opened: 0,
            replaced: Vec::new(),
            root: None,
            stream_name: None,
            holding: Holding::Stdout,
            files,
            current: 0,
            left: 0,
            written: 0,
            reserved: 0,
            made: Vec::new(),
            tree_dirs: Vec::new(),
            made_root: false,
            in_use: HashSet::new(),
            linked: Vec::new(),
            behind: None,
            behind_tried: false,
            done: false,
            parts: false,
            before: parts::Before::default(),
            carried: Vec::new(),
        }
    }

    /// Payload bytes stored so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// True when this transfer writes to standard output or the output
    /// device (one such stream at a time).
    pub fn to_stdout(&self) -> bool {
        matches!(self.holding, Holding::Stdout | Holding::Device(_))
    }
}

#[cfg(test)]
mod tests;
