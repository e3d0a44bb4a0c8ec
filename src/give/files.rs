//! The sender's local files: the plan of what to send (walked, and each file
//! opened once, before any connection is made) and a reader that delivers
//! exactly the planned files or fails with "file changed while being read".

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

use crate::error::Result;
use crate::events::{Event, Events};
use crate::give::Links;
use crate::protocol::{self, Entry, Mtime};

/// One planned entry: where it is here, what it is called there, and for a
/// file what it was when planned.
#[derive(Debug)]
pub(super) struct Planned {
    /// The file to read and what it was when planned; `None` for a
    /// directory or a link.
    pub(super) local: Option<(Place, Stamp)>,
    /// What the offer announces.
    pub(super) entry: Entry,
}

/// A planned file on this machine: its directory (a number in the
/// walk's list of directories, see [`Walked`]), its name there, and what
/// it was when planned. Compact: a plan may hold a million of them.
#[derive(Debug, Clone)]
pub(super) struct Local {
    pub(super) dir: u32,
    /// Where its name ends in [`Walked::leaves`] (it starts where the
    /// previous file's ends).
    pub(super) leaf_end: u32,
    pub(super) planned: Stamp,
}

/// What walking the paths found: the offer's entries in order, the files
/// to read (in the same order), and the names of what is not sent.
#[derive(Debug)]
pub(super) struct Walked {
    pub(super) entries: Vec<Entry>,
    pub(super) locals: Vec<Local>,
    /// The directories the files are in, each once per run of files.
    pub(super) places: Vec<Place>,
    /// The files' names in their directories, back to back (one
    /// allocation, not one per file).
    pub(super) leaves: Vec<u8>,
    pub(super) skipped: Vec<String>,
}

/// A path twice: resolved for opening (no symbolic link the user named is
/// left in it), and as the user wrote it, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) real: PathBuf,
    pub(super) shown: PathBuf,
}

impl Place {
    fn join(&self, name: &std::ffi::OsStr) -> Place {
        Place {
            real: self.real.join(name),
            shown: self.shown.join(name),
        }
    }
}

/// What `fstat` says about a file, as far as "is it still the same file, and
/// did it change" goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    pub(super) size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub(super) fn of(m: &Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The file opened for sending is the one planned: same device, inode
    /// and size. Anything else (a file swapped in, one that was resized)
    /// would not match the offer.
    pub(super) fn same_file(&self, planned: &Stamp) -> bool {
        (self.dev, self.ino, self.size) == (planned.dev, planned.ino, planned.size)
    }

    /// Nothing was written to the file while it was read. A write moves
    /// mtime and ctime; a timestamp the kernel keeps coarse can hide a write
    /// that lands in the same tick as the previous one (tar has the same
    /// limit), which is why the size and the byte count are checked too.
    pub(super) fn unchanged_since(&self, at_open: &Stamp) -> bool {
        self == at_open
    }
}

/// The error for a file that is not what was planned; the wording is tar's.
pub(super) fn changed(path: &Path) -> io::Error {
    io::Error::other(FileError(format!(
        "{}: file changed while being read; nothing was stored, send it again",
        path.display()
    )))
}

/// A failure of a planned file, already naming it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct FileError(String);

/// True when `e` came from a planned file and so already names it.
pub(super) fn names_its_file(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<FileError>())
}

/// Opens a planned file for reading without following a symbolic link in
/// its last component. `O_NONBLOCK` keeps a FIFO swapped in for the file
/// from blocking the open; it has no effect on reads of a regular file.
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Opens planned files through a descriptor of their directory, kept for
/// the next file (a plan lists a directory's files together): one walk of
/// the full path per directory, not per file, and one descriptor at a time.
/// The last component is never followed, as with [`open_nofollow`].
#[derive(Default)]
pub(super) struct Dirs {
    cur: Option<(PathBuf, std::os::fd::OwnedFd)>,
}

impl Dirs {
    /// The descriptor of `parent`, opened unless it is the current one.
    fn dir(&mut self, parent: &Path) -> io::Result<std::os::fd::BorrowedFd<'_>> {
        if self.cur.as_ref().is_none_or(|(p, _)| p != parent) {
            self.cur = None;
            self.cur = Some((parent.to_path_buf(), crate::sys::open_dir(parent)?));
        }
        match &self.cur {
            Some((_, dir)) => Ok(dir.as_fd()),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    pub(super) fn open(&mut self, real: &Path) -> io::Result<File> {
        let (Some(parent), Some(leaf)) = (real.parent(), real.file_name()) else {
            return open_nofollow(real);
        };
        crate::sys::open_read_at(self.dir(parent)?, leaf)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// What planning needs of a file: its stamp and its mode (kind bits
    /// included), once this process is known to be allowed to read it;
    /// never following a symbolic link in the last component.
    fn stat_readable(&mut self, real: &Path) -> io::Result<(Stamp, u32)> {
        let (Some(parent), Some(leaf)) = (real.parent(), real.file_name()) else {
            let m = open_nofollow(real)?.metadata()?;
            return Ok((Stamp::of(&m), m.mode()));
        };
        let st = crate::sys::stat_readable_at(self.dir(parent)?, leaf)?;
        let stamp = Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        };
        Ok((stamp, st.st_mode))
    }
}

/// Walks the given paths into an ordered plan of directories and files.
/// Every file is stat'ed and checked readable (faccessat) here, so an
/// unreadable, vanished or special file is reported before a connection
/// uses up a one-shot receiver.
/// Also returns the names of what the directories held and is not sent
/// (symbolic links, special files), each reported as a warning here.
#[cfg(test)]
pub(super) fn plan(paths: &[PathBuf], links: Links, events: &Events) -> Result<Option<Walked>> {
    let mut tree = Tree {
        links,
        cap: super::parts::PART_ENTRIES,
        ..Tree::default()
    };
    for p in paths {
        match plan_top(p, &mut tree, events) {
            Err(crate::error::Error::Other(e)) if e.is::<Overflow>() => return Ok(None),
            r => r?,
        }
    }
    Ok(Some(tree.take()))
}

/// Walks `paths` again for a transfer in parts: every [`PART_ENTRIES`]
/// entries (and the rest at the end) go to `sink` as one part, with
/// whether more follow, while the walk holds only the way to where it is.
///
/// [`PART_ENTRIES`]: super::parts::PART_ENTRIES
pub(super) fn walk_parts(
    paths: &[PathBuf],
    links: Links,
    events: &Events,
    sink: &mut dyn FnMut(Walked, bool) -> Result<()>,
) -> Result<()> {
    let mut tree = Tree {
        links,
        cap: super::parts::PART_ENTRIES,
        sink: Some(sink),
        ..Tree::default()
    };
    for p in paths {
        plan_top(p, &mut tree, events)?;
    }
    let last = tree.take();
    match tree.sink.as_mut() {
        Some(sink) => sink(last, false),
        None => Ok(()),
    }
}

/// A plan walk past [`super::parts::PART_ENTRIES`] entries without a sink
/// (the tree goes in parts).
#[derive(Debug)]
pub(super) struct Overflow;

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("too many entries to offer whole")
    }
}

impl std::error::Error for Overflow {}

/// A plan as it is walked.
#[derive(Default)]
struct Tree<'a> {
    entries: Vec<Entry>,
    locals: Vec<Local>,
    places: Vec<Place>,
    leaves: Vec<u8>,
    skipped: Vec<String>,
    /// What becomes of symbolic links inside directories.
    links: Links,
    /// The directories being walked, (device, inode), outermost first: a
    /// followed link back to one of them would never end.
    ancestors: Vec<(u64, u64)>,
    /// The top-level names so far (one per path given): they must differ.
    tops: std::collections::HashSet<String>,
    /// Most entries held at once: past it, what is held goes to `sink`
    /// (or, without one, the walk stops with [`Overflow`]).
    cap: usize,
    sink: Option<&'a mut dyn FnMut(Walked, bool) -> Result<()>>,
}

impl Tree<'_> {
    /// Adds one planned entry (and its file, for a regular file), its name
    /// checked as the receiver will.
    fn push(&mut self, p: Planned) -> Result<()> {
        let name = &p.entry.name;
        protocol::validate_name(name).map_err(|e| anyhow!("cannot send this name: {e}"))?;
        if !name.contains('/') && !self.tops.insert(name.clone()) {
            return Err(anyhow!(
                "two of the given paths are both named {}; send them separately",
                protocol::escape_name(name)
            )
            .into());
        }
        if self.entries.len() >= self.cap {
            let full = self.take();
            match self.sink.as_mut() {
                Some(sink) => sink(full, true)?,
                None => return Err(anyhow::Error::new(Overflow).into()),
            }
        }
        self.entries.push(p.entry);
        let Some((at, planned)) = p.local else {
            return Ok(());
        };
        let dir = |p: &Path| p.parent().unwrap_or(Path::new("")).to_path_buf();
        let place = Place {
            real: dir(&at.real),
            shown: dir(&at.shown),
        };
        if self.places.last() != Some(&place) {
            self.places.push(place);
        }
        let leaf = at.real.file_name().unwrap_or_default();
        self.leaves.extend_from_slice(leaf.as_bytes());
        self.locals.push(Local {
            dir: (self.places.len() - 1) as u32,
            leaf_end: self.leaves.len() as u32,
            planned,
        });
        Ok(())
    }

    /// What is held, as a [`Walked`] (left empty).
    fn take(&mut self) -> Walked {
        let mut w = Walked {
            entries: std::mem::take(&mut self.entries),
            locals: std::mem::take(&mut self.locals),
            places: std::mem::take(&mut self.places),
            leaves: std::mem::take(&mut self.leaves),
            skipped: std::mem::take(&mut self.skipped),
        };
        // Grown by doubling while walking: give back what is left over.
        w.entries.shrink_to_fit();
        w.locals.shrink_to_fit();
        w.leaves.shrink_to_fit();
        w
    }
}

/// Reports and records something in a directory that is not sent.
fn skip(tree: &mut Tree<'_>, events: &Events, at: &Place, name: String, why: &str) {
    events.emit(Event::Warning {
        message: format!("skipping {}: {why}", at.shown.display()),
    });
    tree.skipped.push(name);
}

/// A symbolic link inside a sent directory: sent as a link (the default),
/// replaced by what it points to (`--follow-links`), or skipped
/// (`--no-links`, or a target that cannot be sent).
fn plan_link(
    at: Place,
    name: String,
    tree: &mut Tree<'_>,
    events: &Events,
    dirs: &mut Dirs,
) -> Result<()> {
    match tree.links {
        Links::Send => match link_entry(&at, &name) {
            Some(link) => tree.push(link)?,
            None => skip(tree, events, &at, name, "its target is not UTF-8"),
        },
        Links::Skip => skip(
            tree,
            events,
            &at,
            name,
            "links are not sent with --no-links",
        ),
        Links::Follow => {
            let real = fs::canonicalize(&at.real).ok();
            let meta = real.as_ref().and_then(|r| fs::metadata(r).ok());
            let shown = at.shown.clone();
            match (real, meta) {
                (Some(real), Some(m))
                    if m.is_dir() && tree.ancestors.contains(&(m.dev(), m.ino())) =>
                {
                    let _ = real;
                    skip(
                        tree,
                        events,
                        &at,
                        name,
                        "it leads back to a directory being sent",
                    )
                }
                (Some(real), Some(m)) if m.is_dir() => {
                    tree.push(dir_entry(name.clone(), &m))?;
                    walk(&Place { real, shown }, &name, tree, events, dirs)?;
                }
                (Some(real), Some(m)) if m.is_file() => {
                    tree.push(plan_file(Place { real, shown }, name, dirs)?)?;
                }
                _ => skip(
                    tree,
                    events,
                    &at,
                    name,
                    "it leads nowhere, or to a special file",
                ),
            }
        }
    }
    Ok(())
}

/// Plans one path the user named. A symbolic link the user named is
/// followed now, once: what it resolves to is what is read later.
fn plan_top(p: &Path, tree: &mut Tree<'_>, events: &Events) -> Result<()> {
    let real = fs::canonicalize(p).with_context(|| format!("cannot send {}", p.display()))?;
    let name = real.file_name().ok_or_else(|| {
        anyhow!(
            "cannot send {} as a whole; send what it contains",
            p.display()
        )
    })?;
    let name = utf8_name(name, p)?;
    let meta =
        fs::symlink_metadata(&real).with_context(|| format!("cannot send {}", p.display()))?;
    let at = Place {
        real,
        shown: p.to_path_buf(),
    };
    if meta.is_dir() {
        tree.push(dir_entry(name.clone(), &meta))?;
        walk(&at, &name, tree, events, &mut Dirs::default())
    } else if meta.is_file() {
        tree.push(plan_file(at, name, &mut Dirs::default())?)?;
        Ok(())
    } else {
        Err(anyhow!(
            "cannot send {}: not a regular file or directory (pipe it on stdin instead)",
            p.display()
        )
        .into())
    }
}

fn utf8_name(name: &std::ffi::OsStr, p: &Path) -> Result<String> {
    name.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("cannot send {}: its name is not UTF-8", p.display()).into())
}

/// A modification time as the offer carries it (a clock the kernel gave
/// with nanoseconds out of range is sent as none).
fn mtime(secs: i64, nanos: i64) -> Option<Mtime> {
    let nanos = u32::try_from(nanos).ok().filter(|&n| n < 1_000_000_000)?;
    Some(Mtime { secs, nanos })
}

fn dir_entry(name: String, meta: &Metadata) -> Planned {
    Planned {
        local: None,
        entry: Entry {
            name,
            is_dir: true,
            mode: meta.mode() & 0o7777,
            size: 0,
            mtime: mtime(meta.mtime(), meta.mtime_nsec()),
            link: None,
        },
    }
}

/// A symbolic link inside a sent directory, as a link: its target text as
/// it is, never followed. `None` when the target cannot be sent (not
/// UTF-8, or gone).
fn link_entry(at: &Place, name: &str) -> Option<Planned> {
    let meta = fs::symlink_metadata(&at.real).ok()?;
    let target = fs::read_link(&at.real)
        .ok()?
        .into_os_string()
        .into_string()
        .ok()?;
    let fits = !target.is_empty() && target.len() <= protocol::MAX_LINK_TARGET;
    fits.then(|| Planned {
        local: None,
        entry: Entry {
            name: name.to_string(),
            is_dir: false,
            mode: 0o777,
            size: 0,
            mtime: mtime(meta.mtime(), meta.mtime_nsec()),
            link: Some(target),
        },
    })
}

/// Checks the file is a regular file this process may read and records
/// what it is, without opening it: a plan holds no descriptor per file.
fn plan_file(at: Place, name: String, dirs: &mut Dirs) -> Result<Planned> {
    let shown = at.shown.display();
    let (planned, mode) = dirs
        .stat_readable(&at.real)
        .with_context(|| format!("cannot send {shown}"))?;
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(anyhow!(
            "cannot send {shown}: it stopped being a regular file while it was being listed"
        )
        .into());
    }
    let entry = Entry {
        name,
        is_dir: false,
        mode: mode & 0o7777,
        size: planned.size,
        mtime: mtime(planned.mtime.0, planned.mtime.1),
        link: None,
    };
    Ok(Planned {
        entry,
        local: Some((at, planned)),
    })
}

fn walk(
    dir: &Place,
    prefix: &str,
    tree: &mut Tree<'_>,
    events: &Events,
    dirs: &mut Dirs,
) -> Result<()> {
    let listing = || format!("cannot list {}", dir.shown.display());
    let here = fs::metadata(&dir.real).with_context(listing)?;
    tree.ancestors.push((here.dev(), here.ino()));
    let r = walk_children(dir, prefix, tree, events, dirs);
    tree.ancestors.pop();
    r
}

fn walk_children(
    dir: &Place,
    prefix: &str,
    tree: &mut Tree<'_>,
    events: &Events,
    dirs: &mut Dirs,
) -> Result<()> {
    let listing = || format!("cannot list {}", dir.shown.display());
    let mut children: Vec<_> = fs::read_dir(&dir.real)
        .with_context(listing)?
        .collect::<io::Result<_>>()
        .with_context(listing)?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let at = dir.join(&child.file_name());
        let stat = || {
            fs::symlink_metadata(&at.real)
                .with_context(|| format!("cannot read {}", at.shown.display()))
        };
        // The kind from the listing where the file system gives it (no stat
        // per file: plan_file's fstat on the opened file is the one that
        // counts); a stat where it does not.
        let kind = match child.file_type() {
            Ok(t) if t.is_file() || t.is_dir() || t.is_symlink() => t,
            _ => stat()?.file_type(),
        };
        let name = format!("{prefix}/{}", utf8_name(&child.file_name(), &at.shown)?);
        // A directory is looked at again (lstat): the listing's kind is as
        // old as the listing, and a directory swapped for a symbolic link
        // since must not be followed.
        let meta = if kind.is_dir() { Some(stat()?) } else { None };
        if let Some(meta) = meta.as_ref().filter(|m| m.is_dir()) {
            tree.push(dir_entry(name.clone(), meta))?;
            walk(&at, &name, tree, events, dirs)?;
        } else if kind.is_file() {
            tree.push(plan_file(at, name, dirs)?)?;
        } else if kind.is_symlink() {
            plan_link(at, name, tree, events, dirs)?;
        } else {
            skip(tree, events, &at, name, "special files are not sent");
        }
    }
    Ok(())
}

pub(super) fn file_error(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        FileError(format!("{what} {}: {e}", path.display())),
    )
}

#[cfg(test)]
mod tests;
