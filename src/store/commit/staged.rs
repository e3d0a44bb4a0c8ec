//! The staged commit: files wait, one open at a time, in this transfer's
//! private locked directory in the state directory; the commit flushes,
//! links each to its final name, and flushes again. Also the staging
//! directory's teardown.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use crate::protocol::{RejectCode, escape_name};
use crate::store::fail::{io_fail, link_fail, walk_fail};
use crate::store::walk::{MAX_WALK_FDS, Walker, split_parent};
use crate::store::{Fail, FileBasis, Holding, Registry, StateDir, Transfer, lock, out_dir, state};
use crate::sys::{self, Kind};

/// How deep a staging directory's tree can go: a staged tree is at most
/// [`MAX_WALK_FDS`] components deep.
pub(in crate::store) const STAGED_DEPTH: usize = MAX_WALK_FDS + 1;

/// Empties a private staging directory, or a tree this transfer made: what
/// this user owns in it, files and, down to `depth` levels, directories; a
/// symbolic link is removed, never followed.
pub(in crate::store) fn remove_staged(dir: BorrowedFd<'_>, depth: usize) {
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

impl Transfer {
    /// Makes this transfer's private staging directory in the store's state
    /// directory for this output (made first when there is none).
    pub(in crate::store) fn stage(&mut self, reg: &mut Registry) -> Result<Holding, Fail> {
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

    pub(super) fn commit_staged(&mut self) -> Result<(), Fail> {
        let Holding::Staged { sub, .. } = &self.holding else {
            return Ok(());
        };
        self.sync_output()?;
        let sync_fail = |e| io_fail("cannot sync the received files".into(), e);
        let root = out_dir(&self.root)?;
        let store = self.store.clone();
        let _g = lock(&store.walk);
        let mut w = Walker::new(root);
        // What was placed is recorded even when a later one fails.
        let mut linked = Vec::new();
        let mut replaced = Vec::new();
        let r = self.files.iter().enumerate().try_for_each(|(i, &entry)| {
            if self.keeps_existing(i) {
                return Ok(());
            }
            let name = &self.offer.entries[entry as usize].name;
            let (parent, leaf) = split_parent(name);
            let staged = i.to_string();
            let staged = OsStr::new(&staged);
            w.goto(parent, None).map_err(|e| walk_fail(name, e))?;
            let st = sys::stat_at(sub.as_fd(), staged)
                .map_err(sync_fail)?
                .ok_or((RejectCode::Io, "a staged file vanished".into()))?;
            if let FileBasis::Existing { stat, .. } = &self.bases[i] {
                replace(sub.as_fd(), staged, w.fd(), OsStr::new(leaf), stat, name)?;
                replaced.push((i as u32, st.dev, st.ino));
                return Ok(());
            }
            place_staged(sub.as_fd(), staged, w.fd(), OsStr::new(leaf))
                .map_err(|e| link_fail(&escape_name(name), e))?;
            linked.push((entry, st.dev, st.ino));
            Ok(())
        });
        self.linked = linked;
        self.replaced = replaced;
        r?;
        sys::syncfs(root).map_err(sync_fail)
    }

    /// Puts back the files `--update` replaced (each still kept under its
    /// staged name), where the new one still has the name.
    pub(in crate::store) fn unreplace(&mut self) {
        let (Some(root), Holding::Staged { sub, .. }) = (&self.root, &self.holding) else {
            return;
        };
        let mut w = Walker::new(root.as_fd());
        for &(i, dev, ino) in self.replaced.iter().rev() {
            let name = &self.offer.entries[self.files[i as usize] as usize].name;
            let (parent, leaf) = split_parent(name);
            if w.goto(parent, None).is_err() {
                continue;
            }
            let leaf = OsStr::new(leaf);
            let staged = i.to_string();
            let staged = OsStr::new(&staged);
            let ours =
                matches!(sys::stat_at(w.fd(), leaf), Ok(Some(s)) if (s.dev, s.ino) == (dev, ino));
            if !ours || sys::rename_exchange(sub.as_fd(), staged, w.fd(), leaf).is_err() {
                // The old file cannot go back (something else took the
                // name meanwhile): it is never deleted with the staging,
                // but kept beside partial files (removed after 7 days or
                // by `serve --clean`).
                if let Some(kept) = crate::store::kept::open(root.as_fd(), true) {
                    let own = crate::store::kept::rescue_name();
                    let _ = sys::rename_noreplace(sub.as_fd(), staged, kept.as_fd(), &own);
                }
            }
        }
        self.replaced.clear();
    }

    /// Removes this transfer's staging directory (what is still in it was
    /// not linked), and the state directory when no staged transfer is left.
    pub(in crate::store) fn release_staging(&mut self, reg: &mut Registry) {
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

/// Swaps the staged new version in for the file `--update` compared
/// (`old`): in one step, so a reader sees the old file or the new one,
/// never a mix. The old one then waits under the staged name until the
/// transfer ends (an undo swaps it back). A file that is no longer the
/// one compared is swapped back, and the transfer fails.
fn replace(
    sub: BorrowedFd<'_>,
    staged: &OsStr,
    dir: BorrowedFd<'_>,
    leaf: &OsStr,
    old: &sys::Stat,
    name: &str,
) -> Result<(), Fail> {
    sys::rename_exchange(sub, staged, dir, leaf).map_err(|e| link_fail(&escape_name(name), e))?;
    match sys::stat_at(sub, staged) {
        Ok(Some(s)) if s.same(old) => Ok(()),
        _ => {
            let _ = sys::rename_exchange(sub, staged, dir, leaf);
            Err((
                RejectCode::Io,
                format!(
                    "{} changed on the receiver during the update; it was not replaced",
                    escape_name(name)
                ),
            ))
        }
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
