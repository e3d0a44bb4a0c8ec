//! Space: each transfer reserves the blocks its offer needs before any
//! byte arrives, and gives them back as it writes, commits or aborts, so
//! concurrent transfers cannot together promise more than the disk has.

use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;

use super::{Fail, Store, Transfer};
use crate::events::human_bytes;
use crate::protocol::RejectCode;
use crate::sys;

impl Store {
    pub(super) fn reserve(&self, root: BorrowedFd<'_>, need: u64) -> Result<u64, Fail> {
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

    pub(super) fn release(&self, n: u64) {
        let _ = self
            .reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_sub(n))
            });
    }
}

impl Transfer {
    /// Bytes the files will take on disk: whole blocks, plus a block for
    /// each entry's metadata.
    pub(super) fn space_needed(&self) -> u64 {
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
}
