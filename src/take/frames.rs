//! The taker's frames around the data: what it has (BASIS) before its
//! ACCEPT, the digests of what it stored before its RECEIPT, and the
//! memory budget offers are read under.

use std::sync::atomic::{AtomicU64, Ordering};

use super::OFFER_MEMORY;
use crate::digest::Hash;
use crate::protocol::{self, Digests, Message};
use crate::session::{Session, WireError};
use crate::store;

/// BASIS frames (what this taker has), then ACCEPT.
pub(super) fn accept(s: &mut Session, t: &store::Transfer) -> std::result::Result<(), WireError> {
    let mut batch = Vec::new();
    let mut len = 0;
    for b in t.bases() {
        if len + protocol::basis_len(&b) > protocol::MAX_CONTROL {
            s.write_message(&Message::Basis(std::mem::take(&mut batch)))?;
            len = 0;
        }
        len += protocol::basis_len(&b);
        batch.push(b);
    }
    if !batch.is_empty() {
        s.write_message(&Message::Basis(batch))?;
    }
    s.write_message(&Message::Accept)
}

/// Every file's digest as stored, in DIGESTS frames.
pub(super) fn send_digests(
    s: &mut Session,
    digests: &[Option<Hash>],
) -> std::result::Result<(), WireError> {
    let per = (protocol::MAX_CONTROL - protocol::digests_len(0)) / 33;
    for (k, part) in digests.chunks(per).enumerate() {
        s.write_message(&Message::Digests(Digests {
            first: (k * per) as u32,
            digests: part.to_vec(),
        }))?;
    }
    Ok(())
}

/// Memory an offer of `len` encoded bytes may take once decoded (the
/// smallest entry encodes in 16 bytes and decodes into about 100).
pub(super) fn offer_cost(len: usize) -> u64 {
    (len as u64).saturating_mul(8).max(4096)
}

/// A share of [`OFFER_MEMORY`], given back on drop.
pub(super) struct Grant<'a> {
    pool: &'a AtomicU64,
    n: u64,
}

impl<'a> Grant<'a> {
    /// `n` bytes of the pool, or `None` when that would pass the cap.
    pub(super) fn take(pool: &'a AtomicU64, n: u64) -> Option<Grant<'a>> {
        let grant = Grant { pool, n };
        let before = pool.fetch_add(n, Ordering::SeqCst);
        (before.saturating_add(n) <= OFFER_MEMORY).then_some(grant)
    }
}

impl Grant<'_> {
    /// `n` bytes more, or `false` (and nothing more) past the cap.
    pub(super) fn grow(&mut self, n: u64) -> bool {
        let before = self.pool.fetch_add(n, Ordering::SeqCst);
        if before.saturating_add(n) > OFFER_MEMORY {
            self.pool.fetch_sub(n, Ordering::SeqCst);
            return false;
        }
        self.n += n;
        true
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.n, Ordering::SeqCst);
    }
}
