//! Modification times as the sender had them: each file gets its time
//! before it is closed (held files at commit), and each offered directory
//! this transfer made gets its own after the commit, deepest first
//! (linking an entry into a directory changes the directory's time).
//! Directories that were already there keep their times, as they keep
//! their modes (beyond what the new entries change); nothing here fails a
//! transfer whose files are already in place.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::os::fd::BorrowedFd;

use super::fail::io_fail;
use super::walk::Walker;
use super::{Fail, Transfer, lock, out_dir};
use crate::protocol::Mtime;
use crate::sys;

impl Transfer {
    /// The offered time of file number `file` (in data order), if the
    /// store keeps times.
    fn file_mtime(&self, file: usize) -> Option<Mtime> {
        let i = *self.files.get(file)?;
        self.offer.entries[i as usize]
            .mtime
            .filter(|_| self.store.times)
    }

    /// Gives the open file number `file` its offered time.
    pub(super) fn stamp_file(&self, f: BorrowedFd<'_>, file: usize) -> Result<(), Fail> {
        let Some(t) = self.file_mtime(file) else {
            return Ok(());
        };
        sys::set_mtime(f, t.secs, t.nanos)
            .map_err(|e| io_fail("cannot set a file's modification time".into(), e))
    }

    /// After the names are in place: the offered directories this transfer
    /// made get their times, deepest first. A directory is recognised by
    /// its identity, so one swapped in since is left alone. Best effort:
    /// every name is already durable, so nothing here fails the transfer;
    /// a way that is no longer a directory (a symbolic link: never
    /// followed) is skipped. Returns whether it changed any (the caller
    /// then syncs).
    pub(super) fn stamp_dirs(&self) -> bool {
        let ours: HashSet<(u64, u64)> = self
            .made
            .iter()
            .map(|m| (m.stat.dev, m.stat.ino))
            .chain(self.tree_dirs.iter().copied())
            .collect();
        let mut dirs: Vec<_> = self
            .offer
            .entries
            .iter()
            .filter(|e| e.is_dir && self.store.times)
            .filter_map(|e| Some((e.name.as_str(), e.mtime?)))
            .collect();
        let Ok(root) = out_dir(&self.root) else {
            return false;
        };
        if dirs.is_empty() || ours.is_empty() {
            return false;
        }
        dirs.sort_by_key(|(name, _)| Reverse(name.matches('/').count()));
        let store = self.store.clone();
        let _g = lock(&store.walk);
        let mut w = Walker::new(root);
        let mut stamped = false;
        for (name, t) in dirs {
            if w.goto(name, None).is_err() {
                continue;
            }
            let made = sys::stat_fd(w.fd()).is_ok_and(|st| ours.contains(&(st.dev, st.ino)));
            if made && sys::set_mtime(w.fd(), t.secs, t.nanos).is_ok() {
                stamped = true;
            }
        }
        stamped
    }
}
