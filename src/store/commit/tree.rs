//! The whole-tree commit: when every top-level entry is a directory the
//! output does not have, the trees are built in the staging directory with
//! files under their final names and each is renamed into the output
//! (never replacing); a failed commit takes back exactly what it renamed.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::known;
use crate::protocol::{Offer, RejectCode, escape_name};
use crate::store::fail::{io_fail, link_fail, walk_fail};
use crate::store::links::make_link;
use crate::store::walk::{MAX_WALK_FDS, Walker, split_parent};
use crate::store::{Fail, Holding, Transfer, lock};
use crate::sys::{self, Kind, Stat};

/// Most top-level directories one transfer builds whole in its staging
/// directory (each is held open from the commit on, to undo it safely).
pub(in crate::store) const MAX_TREE_TOPS: usize = 16;

/// A staged transfer's new top-level directories, built inside the staging
/// directory with every file under its final name.
pub(in crate::store) struct Tree {
    /// The top-level directory names, in offer order, each with the mode it
    /// gets once every one is in place (0o700 until then, so nobody else
    /// can put anything in a tree a failed commit may have to take back).
    pub(in crate::store) tops: Vec<(OsString, u32)>,
    /// The staged directory files go into now, and its path there.
    dir: Option<(String, OwnedFd)>,
    /// Top-level directories already renamed into the output, each with a
    /// descriptor that pins its identity (undone on a later failure).
    pub(in crate::store) placed: Vec<(OsString, OwnedFd)>,
    /// Whether the placed directories were given their final modes (others
    /// may have put things in them since).
    public: bool,
}

impl Tree {
    /// Creates the staged file `name` (its directories exist already).
    pub(in crate::store) fn create(
        &mut self,
        sub: BorrowedFd<'_>,
        name: &str,
        mode: u32,
    ) -> io::Result<File> {
        let (parent, leaf) = split_parent(name);
        if self.dir.as_ref().is_none_or(|(p, _)| p != parent) {
            self.dir = None;
            self.dir = Some((parent.to_owned(), sys::open_dir_beneath(sub, parent)?));
        }
        let dir = self.dir.as_ref().map(|(_, fd)| fd.as_fd()).unwrap_or(sub);
        sys::create_new_at(dir, OsStr::new(leaf), mode)
    }

    /// Moves the kept partial file `own` (in `kept`) to the staged name
    /// `name` (its directories exist already), never replacing anything.
    pub(in crate::store) fn adopt(
        &mut self,
        sub: BorrowedFd<'_>,
        name: &str,
        kept: BorrowedFd<'_>,
        own: &OsStr,
    ) -> io::Result<()> {
        let (parent, leaf) = split_parent(name);
        if self.dir.as_ref().is_none_or(|(p, _)| p != parent) {
            self.dir = None;
            self.dir = Some((parent.to_owned(), sys::open_dir_beneath(sub, parent)?));
        }
        let dir = self.dir.as_ref().map(|(_, fd)| fd.as_fd()).unwrap_or(sub);
        sys::rename_noreplace(kept, own, dir, OsStr::new(leaf))
    }
}

impl Transfer {
    /// The offer's top-level directories when it can be staged as whole
    /// trees: every top-level entry a directory the output does not have,
    /// at most [`MAX_TREE_TOPS`] of them, no entry deeper than a walk keeps
    /// open.
    pub(in crate::store) fn tree_tops(&self, root: BorrowedFd<'_>) -> Option<Vec<OsString>> {
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
    pub(in crate::store) fn can_rename(&self) -> bool {
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
    pub(in crate::store) fn make_tree(&mut self, tops: Vec<OsString>) -> Result<(), Fail> {
        self.build_entries()?;
        let implicit = (0o777 & !self.store.umask) | 0o700;
        let Holding::Staged { sub, tree, .. } = &mut self.holding else {
            return Err((RejectCode::Io, "not staged".into()));
        };
        let mut moded = Vec::with_capacity(tops.len());
        for t in tops {
            let mode = top_mode(&self.offer, &t, self.store.umask).unwrap_or(implicit);
            prepare_top(sub.as_fd(), &t)?;
            moded.push((t, mode));
        }
        *tree = Some(Tree {
            tops: moded,
            dir: None,
            placed: Vec::new(),
            public: false,
        });
        Ok(())
    }

    /// Makes the offer's directories (and, in the private tree, its links)
    /// in the staging directory; remembers each directory's identity for
    /// its time, unless the transfer comes in parts (which stamps its
    /// directories in staging instead).
    pub(in crate::store) fn build_entries(&mut self) -> Result<(), Fail> {
        let umask = self.store.umask;
        let implicit = (0o777 & !umask) | 0o700;
        let times = self.store.times;
        let record = !self.parts;
        let Transfer {
            offer,
            holding,
            tree_dirs,
            ..
        } = self;
        let Holding::Staged { sub, .. } = holding else {
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
            if e.link.is_some() {
                // Inside the private tree: in place with it, all at once.
                make_link(w.fd(), e, times)?;
            }
            let top = !e.name.contains('/');
            if e.is_dir && record {
                let st = sys::stat_fd(w.fd())
                    .map_err(|err| io_fail("cannot check a directory".into(), err))?;
                tree_dirs.push((st.dev, st.ino));
            }
            if e.is_dir && !top {
                sys::fchmod(w.fd(), (e.mode & 0o777 & !umask) | 0o700).map_err(|err| {
                    io_fail(
                        format!("cannot set the mode of {}", escape_name(&e.name)),
                        err,
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Makes the staged trees durable, renames each top-level directory
    /// into the output (never replacing), then makes the names durable.
    pub(super) fn commit_tree(&mut self) -> Result<(), Fail> {
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
        tree.public = true;
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
    pub(in crate::store) fn unplace_tree(&mut self) {
        let Transfer {
            root: Some(root),
            holding: Holding::Staged {
                tree: Some(tree), ..
            },
            offer,
            parts,
            ..
        } = self
        else {
            return;
        };
        // A tree in parts once public stays: what it holds is no longer
        // only ours, and its names are no longer all known here.
        if *parts && tree.public {
            return;
        }
        for (top, fd) in tree.placed.drain(..).rev() {
            // A tree in parts: this transfer's alone (mode 0700 since it
            // was made in staging), and its names are no longer all here.
            match *parts {
                true => super::staged::remove_staged(fd.as_fd(), super::staged::STAGED_DEPTH),
                false => remove_offered(fd.as_fd(), &top.to_string_lossy(), offer),
            }
            let ours = matches!(
                (sys::stat_at(root.as_fd(), &top), sys::stat_fd(fd.as_fd())),
                (Ok(Some(a)), Ok(b)) if a.same(&b)
            );
            if ours {
                let _ = sys::unlink_at(root.as_fd(), &top, true);
            }
        }
    }
}

/// The mode the offered top-level directory `top` gets once in place.
pub(in crate::store) fn top_mode(offer: &Offer, top: &OsStr, umask: u32) -> Option<u32> {
    let e = offer.entries.iter().find(|e| e.is_dir && *e.name == *top)?;
    Some((e.mode & 0o777 & !umask) | 0o700)
}

/// A staged top-level directory is this user's alone until the commit.
pub(in crate::store) fn prepare_top(sub: BorrowedFd<'_>, top: &OsStr) -> Result<(), Fail> {
    let fd = sys::open_dir_at(sub, top);
    fd.and_then(|fd| sys::fchmod(fd.as_fd(), 0o700))
        .map_err(|err| io_fail("cannot prepare a received directory".into(), err))
}

/// Removes from the tree `top_fd` (the offer's top-level directory `top`)
/// exactly the offer's names below it: each file only while it is a
/// regular file of this user, then each directory (offered, or made for an
/// offered file) only if empty, deepest first. Never follows a link, never
/// touches a name the offer does not have.
pub(in crate::store) fn remove_offered(top_fd: BorrowedFd<'_>, top: &str, offer: &Offer) {
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
        // A link entry removes only a link, a file entry only a file.
        let kind = match e.link {
            Some(_) => Kind::Symlink,
            None => Kind::File,
        };
        if w.goto(parent, None).is_ok()
            && matches!(sys::stat_at(w.fd(), leaf), Ok(Some(st)) if st.kind == kind && st.uid == me)
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
