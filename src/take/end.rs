//! How a taken transfer ends: what `conclude` needs to know, the shape
//! a one-shot taker awaiting a resume compares offers by, and the refusal
//! for a frame that has no place in the data.

use std::cell::Cell;
use std::time::Instant;

use crate::digest::Hash;
use crate::events::Kind;
use crate::protocol::{Message, Offer, Refusal, RejectCode};

/// The refusal for a frame other than DATA or END during the transfer: a
/// sender's ABORT (what arrived is kept), or a protocol error.
pub(super) fn not_data(m: Message, cut: &Cell<bool>) -> Refusal {
    match m {
        Message::Abort(why) => {
            cut.set(true);
            Refusal::new(RejectCode::Protocol, format!("the sender gave up: {why}"))
        }
        m => Refusal::new(
            RejectCode::Protocol,
            format!("unexpected {} frame during the transfer", m.name()),
        ),
    }
}

/// How a transfer ended, for `Taker::conclude`.
pub(super) struct End {
    pub(super) kind: Kind,
    pub(super) files: u32,
    pub(super) start: Instant,
    /// Pincat framing (a receipt is due), not raw mode.
    pub(super) framed: bool,
    /// Cut short by the connection or the sender (not refused, not a lie).
    pub(super) cut: bool,
    /// The offer's shape (see [`shape_of`]).
    pub(super) shape: Hash,
    /// A tree in parts: a full disk keeps the parts already confirmed.
    pub(super) parts: bool,
    /// `serve --out DIR --exec`: what its handler is given once stored.
    pub(super) handed: Option<super::exec::Handed>,
}

/// What identifies an offer's files across attempts: each entry's kind,
/// size and name (not times or modes).
pub(super) fn shape_of(offer: &Offer) -> Hash {
    let mut h = blake3::Hasher::new();
    for e in &offer.entries {
        h.update(&[u8::from(e.is_dir) | u8::from(e.link.is_some()) << 1]);
        h.update(&e.size.to_be_bytes());
        h.update(&(e.name.len() as u32).to_be_bytes());
        h.update(e.name.as_bytes());
    }
    *h.finalize().as_bytes()
}
