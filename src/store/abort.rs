//! Ending a transfer: an abort undoes exactly what it put on disk (names it
//! linked, trees it placed, its staging, directories it made that no other
//! live transfer uses); both ends give back its space and in-use marks.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};

use super::walk::{Walker, split_parent};
use super::{Base, Holding, Registry, Transfer, lock};
use crate::sys;

impl Transfer {
    /// Undoes everything this transfer put on disk: its temporary data, the
    /// names it linked, and the directories it created that no other live
    /// transfer uses and that are empty. Nothing else is touched.
    pub fn abort(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.return_kept(false);
        self.unreplace();
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

    /// Undoes it like [`Transfer::abort`], but first keeps every file it
    /// wrote, whole or in part, for a resume (see `kept.rs`).
    pub fn abort_keeping(&mut self) {
        if self.done {
            return;
        }
        self.keep_partials();
        self.return_kept(true);
        if self.parts {
            self.keep_earlier_parts();
        }
        self.abort();
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
    pub(super) fn release_all(&mut self) {
        self.store.release(self.reserved);
        self.reserved = 0;
        let store = self.store.clone();
        let mut reg = lock(&store.walk);
        self.release_staging(&mut reg);
        self.release_in_use(&mut reg);
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
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.abort();
    }
}
