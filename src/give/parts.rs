//! A tree too large to offer whole goes in parts, so that memory on both
//! sides stays the same whatever the number of files: the paths are walked
//! again as the transfer goes, and every [`PART_ENTRIES`] entries are one
//! part: its OFFER (flagged `continued` but for the last), the taker's
//! BASIS and ACCEPT, PLAN, DATA and END, then the taker's DIGESTS of that
//! part, checked here before the next part is walked. The last part ends
//! with the receipt for the whole transfer, which the taker sends only once
//! every part is durable and named (the taker commits the parts together).

use std::io::Read;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Instant;

use anyhow::anyhow;

use super::fail::after_failure;
use super::files::{Walked, walk_parts};
use super::reader::FileSeq;
use super::sync::{await_digests, await_receipt, compare};
use super::{Classify, Flow, Gate, Paths, stream_all, top_names};
use crate::error::{Error, Result};
use crate::events::{Event, Events, Kind, Transfer};
use crate::protocol::{self, Counts, FrameType, Message, Offer, Role, TransferKind};
use crate::session::{Session, WireError};

/// Most entries one part holds: past it, a tree goes in parts. About
/// 200 bytes an entry on each side, so a part holds about 10 MiB.
pub(crate) const PART_ENTRIES: usize = 50_000;

/// What the walking thread hands over, in order.
enum Msg {
    /// A part, and whether more follow.
    Part(Walked, bool),
    /// A warning of the walk (something skipped), for the sender's events.
    Warning(String),
    /// The walk failed; nothing follows.
    Failed(Error),
}

/// What walking the paths found first: all of it (at most [`PART_ENTRIES`]
/// entries, offered whole), or the first part of a tree in parts.
pub(super) enum First {
    Whole(Walked),
    Parts(Box<PartsWalk>),
}

/// A tree in parts being walked on a thread of its own, one part ahead of
/// the one given (the walk of the next part overlaps the transfer of this
/// one; at most two parts are held).
pub(super) struct PartsWalk {
    first: Option<Walked>,
    rx: Receiver<Msg>,
}

impl PartsWalk {
    /// The next part and whether more follow, its warnings emitted first.
    fn next(&mut self, events: &Events) -> Result<(Walked, bool)> {
        if let Some(w) = self.first.take() {
            return Ok((w, true));
        }
        next_msg(&self.rx, events)
    }
}

/// Walks `p` on a thread of its own and waits for the first part (so a
/// missing or unreadable file among the first entries is reported before
/// any connection, as for a tree offered whole). Dropping what this returns
/// stops the walk.
pub(super) fn start(p: &Paths, events: &Events) -> Result<First> {
    let (tx, rx) = sync_channel::<Msg>(0);
    let (paths, links) = (p.paths.clone(), p.links);
    std::thread::Builder::new()
        .name("pincat-walk".into())
        .spawn(move || {
            let warn = tx.clone();
            let quiet = Events::silent().with_hook(move |e| {
                if let Event::Warning { message } = e {
                    let _ = warn.send(Msg::Warning(message.clone()));
                }
            });
            let mut sink = |w: Walked, more: bool| {
                tx.send(Msg::Part(w, more))
                    .map_err(|_| Error::Other(anyhow!("the walk is no longer needed")))
            };
            if let Err(e) = walk_parts(&paths, links, &quiet, &mut sink) {
                let _ = tx.send(Msg::Failed(e));
            }
        })
        .map_err(|e| anyhow!("cannot start walking the files: {e}"))?;
    let (first, more) = next_msg(&rx, events)?;
    strict(p, &first, "nothing was sent")?;
    if more && p.strict {
        // Every part is looked at before anything is sent: nothing at all
        // is sent when one would skip something.
        let quiet = Events::silent();
        let mut check = |w: Walked, _| strict(p, &w, "nothing was sent");
        walk_parts(&p.paths, p.links, &quiet, &mut check)?;
    }
    Ok(match (first, more) {
        (w, false) => First::Whole(w),
        (w, true) => First::Parts(Box::new(PartsWalk { first: Some(w), rx })),
    })
}

/// `--strict`: a part that skips anything ends the transfer.
fn strict(p: &Paths, w: &Walked, then: &str) -> Result<()> {
    if p.strict && !w.skipped.is_empty() {
        return Err(Error::Skipped(format!(
            "--strict: {} would be skipped (special files, and links with --no-links, are not sent); {then}",
            crate::events::list_names(&w.skipped, protocol::escape_name)
        )));
    }
    Ok(())
}

/// The walking thread's next part, its warnings emitted on the way.
fn next_msg(rx: &Receiver<Msg>, events: &Events) -> Result<(Walked, bool)> {
    loop {
        match rx.recv() {
            Ok(Msg::Warning(message)) => events.emit(Event::Warning { message }),
            Ok(Msg::Part(w, more)) => return Ok((w, more)),
            Ok(Msg::Failed(e)) => return Err(e),
            Err(_) => return Err(anyhow!("the walk of the files stopped").into()),
        }
    }
}

/// How often the receiver hears KEEPALIVE while the next part is walked:
/// often enough for any idle timeout a receiver is likely to set (a frame
/// is a few bytes).
const WALK_KEEPALIVE: std::time::Duration = std::time::Duration::from_millis(100);

/// The offer a plan in parts holds until its parts are walked.
pub(super) fn placeholder() -> Offer {
    Offer {
        kind: TransferKind::Files,
        entries: Vec::new(),
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: true,
    }
}

/// What a tree in parts cannot be given with (before anyone is contacted).
pub(super) fn check(p: &Paths) -> Result<()> {
    if p.sync.update {
        return Err(anyhow!(
            "--update compares at most {PART_ENTRIES} entries in one transfer, and this tree has more; send its directories one by one"
        )
        .into());
    }
    Ok(())
}

/// What the parts given so far add up to.
#[derive(Default)]
struct Sofar {
    parts: u32,
    /// Files and bytes sent (and confirmed, for all but the last part).
    done: Counts,
    /// Bytes the taker had already (resumed).
    resumed: u64,
    /// Files the quick check left unverified.
    unverified: u32,
}

/// Gives the tree `p` in parts over `s`; `Ok` only on a receipt for all
/// of it.
pub(super) fn give_parts(
    s: &mut Session,
    (p, mut walk): (&Paths, PartsWalk),
    events: &Events,
    classify: Classify<'_>,
    gate: &mut Gate,
) -> Result<Transfer> {
    let start = Instant::now();
    let mut sofar = Sofar::default();
    loop {
        // The receiver hears KEEPALIVE while the next part is walked.
        let next = match sofar.parts {
            0 => walk.next(events),
            _ => s.keep_alive_every(WALK_KEEPALIVE, || walk.next(events)),
        };
        let next = next.and_then(|(w, more)| {
            strict(p, &w, "the transfer was stopped and nothing was stored").map(|()| (w, more))
        });
        let (walked, continued) = match next {
            Ok(x) => x,
            Err(e) => {
                // The walk failed here (a file vanished, a name that cannot
                // be sent): the taker keeps what arrived for the next attempt.
                if sofar.parts > 0 {
                    let _ = s.write_message(&Message::Abort(format!("{e}")));
                }
                s.close();
                return Err(e);
            }
        };
        let part = Part { walked, continued };
        give_part(s, part, &mut sofar, events, classify, gate)?;
        if !continued {
            break;
        }
    }
    s.close();
    let done = Transfer {
        peer: s.peer(),
        kind: Kind::Files,
        files: sofar.done.files,
        bytes: sofar.done.bytes,
        resumed: sofar.resumed,
        unverified: sofar.unverified,
        duration: start.elapsed(),
    };
    events.emit(Event::TransferDone(done.clone()));
    Ok(done)
}

/// One part as walked, and whether more follow.
struct Part {
    walked: Walked,
    continued: bool,
}

/// Offers one part, sends its data, and checks its digests (the last part:
/// and the receipt).
fn give_part(
    s: &mut Session,
    mut part: Part,
    sofar: &mut Sofar,
    events: &Events,
    classify: Classify<'_>,
    gate: &mut Gate,
) -> Result<()> {
    let offer = Offer {
        entries: std::mem::take(&mut part.walked.entries),
        skipped: std::mem::take(&mut part.walked.skipped),
        continued: part.continued,
        ..placeholder()
    };
    send_offer(s, &offer, sofar.parts == 0, classify)?;
    if sofar.parts == 0 {
        events.emit(Event::TransferStarted {
            peer: s.peer(),
            giving: true,
            kind: Kind::Files,
            names: top_names(&offer),
            files: 0,
            bytes: None,
            skipped: offer.skipped.clone(),
        });
    }
    sofar.parts += 1;
    let mut seq = FileSeq::of(part.walked);
    compare(s, &mut seq, gate)
        .map_err(|f| after_failure(s, f, sofar.done.bytes, classify, gate))?;
    let seq_size = seq.to_send();
    let input: &mut dyn Read = &mut seq;
    let before = sofar.done.bytes;
    let flow = Flow {
        size: Some(seq_size),
        before,
        shown: None,
    };
    let sent = stream_all(s, (input, &offer), flow, events, classify, gate)?;
    sofar.resumed += offer.total_bytes().saturating_sub(sent);
    sofar.unverified += seq.skipped();
    if part.continued {
        let peer = s.peer();
        let wait = |e| match e {
            WireError::Timeout => Error::Timeout(format!(
                "waiting for {peer} to confirm a part of the transfer"
            )),
            e => classify(e, "while waiting for the receiver to confirm a part"),
        };
        await_digests(s, &offer, &seq, sofar.done.files, &wait)?;
        sofar.done.files += offer.file_count();
        sofar.done.bytes += sent;
        return Ok(());
    }
    let c = await_receipt(s, &offer, (sent, Some(&seq)), sofar.done, classify)?;
    sofar.done = c;
    Ok(())
}

/// Sends a part's OFFER frames (the first part after our preamble).
fn send_offer(s: &mut Session, offer: &Offer, first: bool, classify: Classify<'_>) -> Result<()> {
    let frames = offer
        .frame_ranges(protocol::MAX_CONTROL)
        .ok_or_else(|| anyhow!("a name or link target is too long to offer"))?;
    let mut out = match first {
        true => protocol::preamble_of(Role::Giver).to_vec(),
        false => Vec::new(),
    };
    let n = frames.len();
    for (i, r) in frames.into_iter().enumerate() {
        let payload = offer.encode_frame(r, i + 1 == n);
        out.extend_from_slice(&protocol::frame(FrameType::Offer, &payload));
        s.write_all(&out)
            .map_err(|e| classify(e, "during the transfer"))?;
        out.clear();
    }
    Ok(())
}
