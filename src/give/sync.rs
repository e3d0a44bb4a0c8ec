//! Building on what the taker has: its BASIS frames read and checked,
//! the files here compared chunk by chunk (PLAN), and at the end every
//! file's digest from the taker checked against the one computed here.

use super::fail::{GiveFail, receiver_failed, unexpected};
use super::reader::{Chunks, FileSeq, Part, add_digest};
use super::{Classify, Gate};
use std::time::{Duration, Instant};

use crate::digest;
use crate::error::{Error, Result};
use crate::protocol::{self, Basis, BasisEntry, Counts, Message, Offer, PlanEntry};
use crate::session::{Session, WireError};

/// Waits for the taker's ACCEPT and what it has already (BASIS), compares
/// that with the files here and tells it which chunks will come (PLAN).
pub(super) fn compare(
    s: &mut Session,
    seq: &mut FileSeq,
    gate: &mut Gate,
) -> std::result::Result<(), GiveFail> {
    let bases = gate.accept(s, seq)?;
    // Hashing what the taker has may take a while: the taker hears
    // KEEPALIVE meanwhile.
    let hashing = bases.iter().any(|b| matches!(b.basis, Basis::Have(_)));
    let plans = match hashing {
        true => s.keep_alive_while(|| plan_chunks(seq, bases))?,
        false => plan_chunks(seq, bases)?,
    };
    // As many frames as it takes, each within the control limit.
    let mut batch: Vec<PlanEntry> = Vec::new();
    let mut len = 0;
    for p in plans {
        if len + protocol::plan_len(&p) > protocol::MAX_CONTROL {
            s.write_message(&Message::Plan(std::mem::take(&mut batch)))
                .map_err(GiveFail::Wire)?;
            len = 0;
        }
        len += protocol::plan_len(&p);
        batch.push(p);
    }
    if !batch.is_empty() {
        s.write_message(&Message::Plan(batch))
            .map_err(GiveFail::Wire)?;
    }
    Ok(())
}

/// Marks the files the taker has as they will be sent (skipped, or only
/// the chunks whose hashes differ from ours) and returns the PLAN entries.
fn plan_chunks(
    seq: &mut FileSeq,
    bases: Vec<BasisEntry>,
) -> std::result::Result<Vec<PlanEntry>, GiveFail> {
    let mut plans = Vec::new();
    for b in bases {
        let i = b.file as usize;
        let Basis::Have(theirs) = b.basis else {
            seq.set_part(i, Part::Skip);
            continue;
        };
        let (own, compared) = seq
            .hash_prefix(i, theirs.len())
            .map_err(|e| GiveFail::Source(anyhow::Error::new(e)))?;
        let n = digest::chunk_count(seq.size(i)) as usize;
        let send: Vec<bool> = (0..n)
            .map(|c| own.get(c) != theirs.get(c) || c >= own.len())
            .collect();
        plans.push(PlanEntry {
            file: b.file,
            send: send.clone(),
        });
        let chunks = Chunks {
            send,
            known: own,
            compared,
        };
        seq.set_part(i, Part::Chunks(Box::new(chunks)));
    }
    Ok(plans)
}

impl Gate {
    /// Reads the taker's preamble, its BASIS frames and its ACCEPT (a
    /// REJECT or ERROR ends the transfer): what it has of which files,
    /// each checked against the offer.
    fn accept(
        &mut self,
        s: &mut Session,
        seq: &FileSeq,
    ) -> std::result::Result<Vec<BasisEntry>, GiveFail> {
        self.hear(s)?;
        let mut bases: Vec<BasisEntry> = Vec::new();
        // A taker hashing what it has says so; it may not stall for ever.
        let until = Instant::now() + hashing_allowance(seq.total());
        loop {
            match s.read_message().map_err(GiveFail::Wire)? {
                Message::Keepalive if Instant::now() < until => {}
                Message::Keepalive => {
                    return Err(GiveFail::Broken(Error::Timeout(
                        "the receiver kept comparing for longer than reading every offered byte could take".into(),
                    )));
                }
                Message::Accept => {
                    self.accepted = true;
                    return Ok(bases);
                }
                Message::Basis(v) => {
                    for b in v {
                        let after = bases.last().is_none_or(|l| b.file > l.file);
                        let fits = (b.file as usize) < seq.len()
                            && match &b.basis {
                                Basis::Have(h) => {
                                    h.len() as u64 <= digest::chunk_count(seq.size(b.file as usize))
                                }
                                Basis::Unchanged => true,
                            };
                        if !after || !fits {
                            return Err(GiveFail::Broken(Error::Incomplete(
                                "the receiver broke the protocol: a BASIS entry that does not fit the offer".into(),
                            )));
                        }
                        bases.push(b);
                    }
                }
                Message::Reject(r) | Message::Error(r) => return Err(GiveFail::Refused(r)),
                m => return Err(GiveFail::Broken(unexpected(&m, "ACCEPT"))),
            }
        }
    }
}

/// How long a side may keep the other waiting (with KEEPALIVE) while it
/// hashes `bytes`: a minute, and the time to read them at 20 MB/s.
pub(crate) fn hashing_allowance(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / 20_000_000)
}

/// Waits for the receipt and checks it confirms exactly what was sent, and
/// that every file's digest (DIGESTS, before it) is the one computed here
/// (`ours`: none for a stream). `before` counts what earlier parts of a
/// transfer in parts confirmed: the receipt counts them too.
pub(super) fn await_receipt(
    s: &mut Session,
    offer: &Offer,
    (sent, ours): (u64, Option<&FileSeq>),
    before: Counts,
    classify: Classify<'_>,
) -> Result<Counts> {
    let peer = s.peer();
    let wait = |e| match e {
        WireError::Timeout => Error::Timeout(format!(
            "waiting for the receipt from {peer}: all {sent} bytes were sent but delivery is not confirmed"
        )),
        e => classify(e, "while waiting for the receipt"),
    };
    let n = offer.file_count() as usize;
    match ours {
        Some(o) => await_digests(s, offer, o, before.files, &wait)?,
        None if n > 0 => return Err(Error::Incomplete("no digests to compare".into())),
        None => {}
    }
    let mut reply = crate::exec::ReplyOut::default();
    let c = loop {
        match s.read_message().map_err(wait)? {
            Message::Receipt(c) => break c,
            // A receiver's handler still runs, then its reply (`serve --exec`).
            Message::Keepalive => {}
            Message::Reply(r) => reply.write(&r)?,
            Message::Error(r) => return Err(receiver_failed(r)),
            m => return Err(unexpected(&m, "RECEIPT")),
        }
    };
    let (files, bytes) = (before.files + offer.file_count(), before.bytes + sent);
    if c.files != files || c.bytes != bytes {
        return Err(Error::Incomplete(format!(
            "the receiver confirmed {} file(s) and {} bytes, but {files} file(s) and {bytes} bytes were sent",
            c.files, c.bytes,
        )));
    }
    Ok(c)
}

/// Reads the digests of the offer's files (the first numbered `first` in
/// the whole transfer) and checks each, and all of them together, against
/// the ones computed here.
pub(super) fn await_digests(
    s: &mut Session,
    offer: &Offer,
    ours: &FileSeq,
    first: u32,
    wait: &dyn Fn(WireError) -> Error,
) -> Result<()> {
    let n = offer.file_count() as usize;
    let mut next = 0usize;
    let mut theirs_all = blake3::Hasher::new();
    let more =
        || Error::Incomplete("the receiver broke the protocol: more digests than files".into());
    while next < n {
        match s.read_message().map_err(wait)? {
            Message::Digests(d) if d.first as usize == first as usize + next => {
                for theirs in d.digests {
                    match ours.may_match(next, &theirs) {
                        Some(true) => {}
                        Some(false) => return Err(differs(offer, next)),
                        None => return Err(more()),
                    }
                    add_digest(&mut theirs_all, &theirs);
                    next += 1;
                }
            }
            Message::Error(r) => return Err(receiver_failed(r)),
            Message::Receipt(_) => {
                return Err(Error::Incomplete(format!(
                    "the receiver confirmed the transfer after {next} of {n} digests"
                )));
            }
            m => return Err(unexpected(&m, "DIGESTS")),
        }
    }
    if *theirs_all.finalize().as_bytes() != ours.all_digests() {
        return Err(Error::Incomplete(
            "the receiver's copy does not match what was sent (BLAKE3 digests differ)".into(),
        ));
    }
    Ok(())
}

/// The error for file `i`, whose copy at the receiver is not what was sent.
fn differs(offer: &Offer, i: usize) -> Error {
    let name = offer
        .entries
        .iter()
        .filter(|e| e.is_file())
        .nth(i)
        .map_or_else(|| format!("file {i}"), |e| protocol::escape_name(&e.name));
    Error::Incomplete(format!(
        "the receiver's copy of {name} does not match what was sent (BLAKE3 digests differ)"
    ))
}
