//! Write-behind: a flusher thread that starts the disk writing while a
//! transfer's data still arrives, so the commit's own flushes find little
//! left to do.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::fail::io_fail;
use super::{Fail, Holding, Transfer};
use crate::sys;

/// Bytes written between two write-behind flushes.
pub(super) const WRITE_BEHIND_EVERY: u64 = 4 << 20;

/// A thread that flushes the output's file system (`syncfs`) every
/// [`WRITE_BEHIND_EVERY`] bytes while a transfer still writes, so the disk
/// works while data still arrives and the commit's own flush finds little
/// left to do. It only starts writeback early: the receipt still waits for
/// the commit's flushes. None on tmpfs, where a flush writes nothing.
pub(super) struct WriteBehind {
    tx: std::sync::mpsc::SyncSender<()>,
    /// Ends with the first error a flush reported: the flusher's descriptor
    /// shares the root's open file, so an error it saw is one the commit's
    /// own `syncfs` would no longer report.
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl WriteBehind {
    pub(super) fn start(fd: OwnedFd) -> Option<WriteBehind> {
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

    pub(super) fn poke(&self) {
        let _ = self.tx.try_send(());
    }

    /// Waits for a flush in progress; the first error any flush reported.
    pub(super) fn stop(self) -> Result<(), Fail> {
        drop(self.tx);
        let r = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the write-behind thread panicked")));
        r.map_err(|e| io_fail("cannot sync the received files".into(), e))
    }
}

impl Transfer {
    /// Asks the write-behind thread to flush; the first call decides, once,
    /// whether this transfer has one (not for stdout, not on tmpfs).
    pub(super) fn write_behind(&mut self) {
        if !std::mem::replace(&mut self.behind_tried, true)
            && !matches!(self.holding, Holding::Stdout | Holding::Device(_))
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
}
