//! The held commit: unnamed `O_TMPFILE` files kept open until the end, then
//! each fsynced and linked into place and its directory synced.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::known;
use crate::protocol::{RejectCode, escape_name};
use crate::store::fail::{io_fail, link_fail, walk_fail};
use crate::store::walk::{Walker, split_parent};
use crate::store::{Fail, Holding, MAX_HELD, Transfer, lock, out_dir};
use crate::sys;

impl Transfer {
    /// True when the output's file system has unnamed temporary files
    /// (probed once per store, not per transfer).
    pub(in crate::store) fn can_hold(&self) -> bool {
        known(&self.store.tmpfile, || {
            let root = self.root.as_ref();
            Some(root.is_some_and(|r| sys::tmpfile_in(r.as_fd(), 0o600).is_ok()))
        })
    }

    pub(super) fn commit_held(&mut self) -> Result<(), Fail> {
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
                self.stamp_file(f.as_fd(), i)?;
                f.sync_all().map_err(sync_fail)?;
            }
        }
        let store = self.store.clone();
        let _g = lock(&store.walk);
        let root = out_dir(&self.root)?;
        if let Some(name) = &self.stream_name {
            if let Some(Some(f)) = v.first() {
                let st = sys::stat_fd(f.as_fd()).map_err(sync_fail)?;
                sys::link_unnamed(f, root, name)
                    .map_err(|e| link_fail(&store.display.display().to_string(), e))?;
                self.linked.push((0, st.dev, st.ino));
            }
            return sys::fsync(root).map_err(sync_fail);
        }
        let mut w = Walker::new(root);
        let mut dirs: Vec<OwnedFd> = Vec::new();
        // What was linked is recorded even when a later link fails (an
        // abort then takes exactly those back).
        let mut linked = Vec::new();
        let r = v.iter().enumerate().try_for_each(|(i, f)| {
            if f.is_none() && self.keeps_existing(i) {
                return Ok(());
            }
            let entry = self.files[i];
            let name = &self.offer.entries[entry as usize].name;
            let (parent, leaf) = split_parent(name);
            w.goto(parent, None).map_err(|e| walk_fail(name, e))?;
            let f = f.as_ref().ok_or((RejectCode::Io, "file missing".into()))?;
            let st = sys::stat_fd(f.as_fd()).map_err(sync_fail)?;
            sys::link_unnamed(f, w.fd(), OsStr::new(leaf))
                .map_err(|e| link_fail(&escape_name(name), e))?;
            linked.push((entry, st.dev, st.ino));
            if dirs.len() < MAX_HELD && !dirs.iter().any(|d| same_dir(d.as_fd(), w.fd())) {
                dirs.push(sys::dup(w.fd()).map_err(sync_fail)?);
            }
            Ok(())
        });
        self.linked = linked;
        r?;
        if self.made.is_empty() && !self.made_root {
            dirs.iter()
                .try_for_each(|d| sys::fsync(d.as_fd()))
                .map_err(sync_fail)
        } else {
            sys::syncfs(root).map_err(sync_fail)
        }
    }
}

fn same_dir(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    matches!((sys::stat_fd(a), sys::stat_fd(b)), (Ok(x), Ok(y)) if x.same(&y))
}
