//! The taker's frames around the data: the OFFER (in frames, for a large
//! one) read under the memory budget, what it has (BASIS) before its
//! ACCEPT, the digests of what it stored before its RECEIPT.

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Instant;

use super::{Admit, NoOffer, OFFER_MEMORY, Taker};
use crate::digest::Hash;
use crate::protocol::{self, Digests, Message};
use crate::protocol::{FrameType, Offer, ProtocolError, Refusal, RejectCode, Role};
use crate::session::{Session, WireError};
use crate::store;

impl Taker {
    /// Sends our preamble, then reads theirs and the OFFER (its frames, for
    /// a large one), holding a share of the offer memory for as long as
    /// the offer lives.
    pub(super) fn read_offer(&self, s: &mut Session) -> Admit<(Offer, Grant<'_>)> {
        s.write_preamble(Role::Taker).map_err(NoOffer::Wire)?;
        s.read_preamble(Role::Taker).map_err(NoOffer::Wire)?;
        self.read_frames(s, true)
    }

    /// Reads the OFFER frames of one offer (of the next part of a transfer
    /// in parts, when not `first`: a giver's ABORT there is its refusal).
    pub(super) fn read_frames(&self, s: &mut Session, first: bool) -> Admit<(Offer, Grant<'_>)> {
        let mut grant = Grant::take(&self.offer_memory, 0).ok_or_else(busy_offers)?;
        let mut offer: Option<Offer> = None;
        let walked_by = Instant::now() + PART_WALK;
        loop {
            let (t, len) = s.read_header().map_err(NoOffer::Wire)?;
            // A giver walking its next part says so, for a bounded time.
            if t == FrameType::Keepalive && !first && offer.is_none() {
                s.read_body(t, len).map_err(NoOffer::Wire)?;
                if Instant::now() > walked_by {
                    return Err(NoOffer::Refuse(Refusal::new(
                        RejectCode::Protocol,
                        "the sender kept walking its next part for longer than 50,000 entries can take",
                    )));
                }
                s.set_deadline(Some(Instant::now() + self.idle_timeout));
                continue;
            }
            let theirs = (t == FrameType::Reject && first) || (t == FrameType::Abort && !first);
            if theirs && offer.is_none() {
                return match s.read_body(t, len) {
                    Ok(Message::Reject(r)) => Err(NoOffer::Refused(r)),
                    Ok(Message::Abort(why)) => Err(NoOffer::Refused(Refusal::new(
                        RejectCode::Protocol,
                        format!("the sender gave up: {why}"),
                    ))),
                    Ok(_) | Err(_) => Err(NoOffer::Wire(WireError::Closed)),
                };
            }
            if t != FrameType::Offer {
                return Err(NoOffer::Refuse(Refusal::new(
                    RejectCode::Protocol,
                    format!("expected an OFFER frame, got {}", t.name()),
                )));
            }
            // Room for the worst a frame of this size decodes into first;
            // then only what it did take.
            let worst = offer_cost(len);
            if !grant.grow(worst) {
                return Err(busy_offers());
            }
            let (part, more) = match s.read_body(t, len) {
                Ok(Message::Offer(o, more)) => (o, more),
                Ok(m) => {
                    return Err(NoOffer::Refuse(Refusal::new(
                        RejectCode::Protocol,
                        format!("expected an OFFER frame, got {}", m.name()),
                    )));
                }
                Err(WireError::Protocol(p)) => return Err(bad_offer(p)),
                Err(e) => return Err(NoOffer::Wire(e)),
            };
            grant.shrink(worst.saturating_sub(decoded_cost(&part, len)));
            match offer.as_mut() {
                None => offer = Some(part),
                Some(o) => o.extend(part).map_err(bad_offer)?,
            }
            if !more {
                break;
            }
            // A large offer comes in frames: each whole one is progress.
            if len >= protocol::MAX_CONTROL / 4 {
                s.set_deadline(Some(Instant::now() + self.idle_timeout));
            }
        }
        let offer = offer.ok_or_else(|| bad_offer(ProtocolError::Malformed("OFFER")))?;
        offer.check().map_err(bad_offer)?;
        Ok((offer, grant))
    }
}

/// How long a giver may walk the next part of a tree in parts (saying so
/// with KEEPALIVE): a minute, and 2 ms an entry (a slow or network disk).
const PART_WALK: std::time::Duration =
    std::time::Duration::from_millis(60_000 + 2 * crate::give::PART_ENTRIES as u64);

/// The refusal for an offer past the memory budget.
fn busy_offers() -> NoOffer {
    NoOffer::Refuse(Refusal::new(
        RejectCode::Busy,
        "the receiver is at its memory limit for offers in progress; try again later",
    ))
}

/// The refusal for an offer that does not decode or check.
pub(super) fn bad_offer(p: ProtocolError) -> NoOffer {
    match p {
        ProtocolError::Name(n) => NoOffer::Refuse(Refusal::new(RejectCode::BadName, n.to_string())),
        p => NoOffer::Refuse(Refusal::new(RejectCode::Protocol, p.to_string())),
    }
}

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

/// Every file's digest as stored, in DIGESTS frames (`first`: the number
/// of the first file in the whole transfer).
pub(super) fn send_digests(
    s: &mut Session,
    digests: &[Option<Hash>],
    first: u32,
) -> std::result::Result<(), WireError> {
    let per = (protocol::MAX_CONTROL - protocol::digests_len(0)) / 33;
    for (k, part) in digests.chunks(per).enumerate() {
        s.write_message(&Message::Digests(Digests {
            first: first + (k * per) as u32,
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

/// Memory a decoded OFFER frame holds from now on: each entry twice over
/// (the list it joins doubles as it grows), its name and link text, the
/// skipped names, and the frame's `len` bytes as read.
fn decoded_cost(part: &crate::protocol::Offer, len: usize) -> u64 {
    let entry = 2 * std::mem::size_of::<crate::protocol::Entry>();
    let entries: usize = part
        .entries
        .iter()
        .map(|e| entry + e.name.capacity() + e.link.as_ref().map_or(0, String::capacity))
        .sum();
    let skipped: usize = part.skipped.iter().map(|n| 48 + n.capacity()).sum();
    (entries + skipped + len) as u64
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

impl Grant<'_> {
    /// Gives `n` bytes of this grant back.
    pub(super) fn shrink(&mut self, n: u64) {
        let n = n.min(self.n);
        self.pool.fetch_sub(n, Ordering::SeqCst);
        self.n -= n;
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.n, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Entry, Offer, TransferKind};

    fn offer(n: usize) -> Offer {
        let entries = (0..n)
            .map(|i| Entry {
                name: format!("tree/d{:03}/f{:04}", i / 1000, i % 1000),
                is_dir: false,
                mode: 0o644,
                size: 1,
                mtime: None,
                link: None,
            })
            .collect();
        Offer {
            kind: TransferKind::Files,
            entries,
            skipped: Vec::new(),
            update: false,
            checksum: false,
            continued: false,
        }
    }

    #[test]
    fn a_decoded_frame_costs_less_than_its_worst_and_more_than_its_bytes() {
        let o = offer(20_000);
        let len = o.encode().len();
        let cost = decoded_cost(&o, len);
        assert!(
            cost < offer_cost(len),
            "{cost} of at most {}",
            offer_cost(len)
        );
        let held = o.entries.len() * std::mem::size_of::<Entry>() + len;
        assert!(cost as usize > held, "{cost} for {held} held");
        // A million such names fit the default budget.
        assert!(cost * 50 < OFFER_MEMORY, "{cost} per 20,000 names");
    }

    #[test]
    fn grants_give_back_what_they_hold_and_refuse_past_the_cap() {
        let pool = AtomicU64::new(0);
        {
            let mut g = Grant::take(&pool, 100).unwrap();
            assert!(g.grow(OFFER_MEMORY - 200));
            assert!(!g.grow(1000), "past the cap");
            g.shrink(OFFER_MEMORY - 300);
            assert_eq!(pool.load(Ordering::SeqCst), 200);
            g.shrink(u64::MAX);
            assert_eq!(pool.load(Ordering::SeqCst), 0);
            assert!(g.grow(50));
        }
        assert_eq!(pool.load(Ordering::SeqCst), 0, "dropped: all given back");
    }
}
