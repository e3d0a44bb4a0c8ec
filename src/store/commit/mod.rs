//! Commit: everything a transfer wrote made durable, then named (never
//! replacing anything), then the names made durable.
//!
//! Two ways to hold a transfer's files until commit:
//! - *held* (`held.rs`): up to [`MAX_HELD`](super::MAX_HELD) unnamed
//!   `O_TMPFILE` files kept open (a crash leaves no file); each is
//!   fsynced, linked, and its directory synced.
//! - *staged* (`staged.rs`): more files than that go, one open at a time,
//!   into a private locked directory `<state>/<transfer>/` under the
//!   output, where `<state>` is a directory this store made
//!   (`.pincat-state`, or a fresh random `.pincat-state-*` when that name
//!   is taken; see `state.rs`); the commit is `syncfs`, link all, `syncfs`
//!   (two flushes whatever the file count). A crash can leave that
//!   directory; the next start on the same output removes every one no
//!   live process holds locked.
//!   When every top-level entry of the offer is a directory the output does
//!   not have yet (`send DIR` into a new place, the common case), those
//!   directories are built whole in the staging directory (`tree.rs`),
//!   files under their final names, and the commit renames each into the
//!   output (never replacing): one rename per top-level directory instead
//!   of a link and an unlink per file.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU8, Ordering};

use super::fail::io_fail;
use super::{Fail, Holding, Transfer};
use crate::protocol::RejectCode;
use crate::sys;

mod held;
pub(super) mod staged;
pub(super) mod tree;

/// What the output's file system can do, probed once per store: `flag` is
/// 0 (not known yet), 1 (yes) or 2 (no). A probe that gives no answer
/// (`None`: it could not be tried) counts as no this time only.
fn known(flag: &AtomicU8, probe: impl FnOnce() -> Option<bool>) -> bool {
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

impl Transfer {
    /// Makes everything durable, then gives every file its final name
    /// (never replacing anything), then makes the names durable.
    pub fn commit(&mut self) -> Result<(), Fail> {
        // Before any flush of the commit: a flush in progress ends first,
        // and an error it saw fails the commit.
        if let Some(b) = self.behind.take() {
            b.stop()?;
        }
        // A transfer in parts gives its directories their times in staging.
        let tops = match self.parts {
            true => self.stamp_last_dirs(),
            false => Vec::new(),
        };
        let r = match &self.holding {
            Holding::Stdout => {
                io::stdout()
                    .lock()
                    .flush()
                    .map_err(|e| io_fail("cannot flush standard output".into(), e))?;
                sys::sync_stdout();
                Ok(())
            }
            // A device has nothing to make durable (and /dev/null cannot).
            Holding::Device(_) => Ok(()),
            Holding::Held(_) => self.commit_held(),
            Holding::Staged { tree: Some(_), .. } => self.commit_tree(),
            Holding::Staged { .. } => self.commit_staged(),
        };
        // Links once the files are in place, the directories' times last
        // (every name is in place), then durable like the rest.
        let r = r.and_then(|()| self.make_links()).and_then(|linked| {
            let topped = self.stamp_tops(&tops);
            match self.stamp_dirs() || linked || topped {
                true => self.sync_output(),
                false => Ok(()),
            }
        });
        if r.is_ok() {
            self.done = true;
            self.forget_kept();
            self.release_all();
        }
        r
    }

    /// The top-level directories of a transfer in parts, once in place,
    /// get their times again (placing them may have changed them); whether
    /// any did.
    fn stamp_tops(&self, times: &[(std::ffi::OsString, crate::protocol::Mtime)]) -> bool {
        let Holding::Staged {
            tree: Some(tree), ..
        } = &self.holding
        else {
            return false;
        };
        let mut stamped = false;
        for (top, fd) in &tree.placed {
            if let Some((_, t)) = times.iter().find(|(n, _)| n == top) {
                stamped |= sys::set_mtime(fd.as_fd(), t.secs, t.nanos).is_ok();
            }
        }
        stamped
    }

    /// A staged commit's first flush: every byte written so far, durable.
    fn sync_output(&self) -> Result<(), Fail> {
        let root = self
            .root
            .as_ref()
            .ok_or((RejectCode::Io, "no output".into()))?;
        sys::syncfs(root.as_fd()).map_err(|e| io_fail("cannot sync the received files".into(), e))
    }
}
