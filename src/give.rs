//! The giving data role, over any established session (dialed or
//! accepted): plan what to send, offer it, stream it, and succeed only on a
//! receipt that confirms exactly what was sent.

use std::cell::Cell;
use std::io::{self, Read};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, anyhow};

use crate::error::{Error, Result};
use crate::events::{Event, Events, Kind, Transfer};
use crate::protocol::{
    self, Counts, EARLY_DATA, FrameType, HEADER_LEN, Message, Offer, Role, TransferKind,
};
use crate::session::{Session, WireError};

mod fail;
mod files;
mod names;
mod parts;
mod reader;
mod sync;
use fail::{GiveFail, after_failure, unexpected};
pub(crate) use names::top_names;
pub(crate) use parts::PART_ENTRIES;
use reader::FileSeq;
pub(crate) use sync::hashing_allowance;
use sync::{await_receipt, compare};

/// Bytes read from the source per DATA frame.
pub const CHUNK: usize = 256 * 1024;

/// What to send.
pub enum Source {
    /// Standard input, as a stream.
    Stdin,
    /// Any reader, as a stream.
    Reader(Box<dyn Read + Send>),
    /// Any reader, as a stream the receiver stores under this name when it
    /// writes into a directory (`send --as NAME`): one plain file name.
    Named(String, Box<dyn Read + Send>),
    /// Files and directories (recursively), by path.
    Paths(Paths),
}

/// Files and directories to send, and how to plan them.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    /// What the user named.
    pub paths: Vec<PathBuf>,
    /// Refuse (exit 11) when the directories hold anything that is not
    /// sent (special files; links with `no_links`), instead of skipping it.
    pub strict: bool,
    /// What becomes of symbolic links inside the directories.
    pub links: Links,
    /// `--update` and `--checksum`: how files the receiver has are compared.
    pub sync: UpdateMode,
}

/// What becomes of a symbolic link inside a sent directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Links {
    /// Sent as a link: its target text as it is (the default).
    #[default]
    Send,
    /// Replaced by the file or directory it points to (`--follow-links`);
    /// a link back to a directory being sent is skipped.
    Follow,
    /// Skipped and reported (`--no-links`).
    Skip,
}

impl From<Vec<PathBuf>> for Paths {
    fn from(paths: Vec<PathBuf>) -> Paths {
        Paths {
            paths,
            ..Paths::default()
        }
    }
}

/// Turns a session failure, and when it happened, into the user's error.
pub(crate) type Classify<'a> = &'a dyn Fn(WireError, &str) -> Error;

/// What will be given: the offer and the reader of its data. For paths this
/// is the plan, which finds missing, unreadable and special files before
/// any connection is made.
pub(crate) struct Plan {
    offer: Offer,
    /// How the OFFER is cut into frames (a large offer takes several),
    /// each encoded as it is sent.
    frames: Vec<Range<usize>>,
    reader: Reader,
    /// The preamble and OFFER went out and the taker accepted already
    /// (see [`announce`]).
    accepted: bool,
}

/// Where the data comes from.
enum Reader {
    Stream(Box<dyn Read + Send>),
    Files(Box<FileSeq>),
    /// A tree too large to offer whole: walked as it goes, in parts.
    Parts(Paths, Box<parts::PartsWalk>),
}

/// How files are compared with what the taker has (`send --update`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateMode {
    /// Files the taker has are compared, and only what differs is sent.
    pub update: bool,
    /// Compare content (chunk hashes), not size and modification time.
    pub checksum: bool,
}

impl Plan {
    /// Plans `source`.
    pub(crate) fn new(source: Source, events: &Events) -> Result<Plan> {
        let (offer, reader) = match source {
            Source::Stdin => (stream_offer(None), Reader::Stream(Box::new(io::stdin()))),
            Source::Reader(r) => (stream_offer(None), Reader::Stream(r)),
            Source::Named(name, r) => (stream_offer(Some(name)), Reader::Stream(r)),
            Source::Paths(p) => {
                let mut walked = match parts::start(&p, events)? {
                    parts::First::Whole(w) => w,
                    parts::First::Parts(walk) => {
                        parts::check(&p)?;
                        return Ok(Plan {
                            offer: parts::placeholder(),
                            frames: Vec::new(),
                            reader: Reader::Parts(p, walk),
                            accepted: false,
                        });
                    }
                };
                let skipped = std::mem::take(&mut walked.skipped);
                let offer = Offer {
                    kind: TransferKind::Files,
                    entries: std::mem::take(&mut walked.entries),
                    skipped,
                    update: p.sync.update,
                    checksum: p.sync.checksum,
                    continued: false,
                };
                (offer, Reader::Files(Box::new(FileSeq::of(walked))))
            }
        };
        let frames = offer
            .frame_ranges(protocol::MAX_CONTROL)
            .ok_or_else(|| anyhow!("a name or link target is too long to offer"))?;
        Ok(Plan {
            offer,
            frames,
            reader,
            accepted: false,
        })
    }
}

/// Gives `plan` over `s`: offer, data, end; `Ok` only on a matching receipt.
/// `accepted` tells afterwards whether the taker had accepted the offer
/// (a failure after that left it something to resume from).
pub(crate) fn give(
    s: &mut Session,
    plan: Plan,
    events: &Events,
    classify: Classify<'_>,
    accepted: &Cell<bool>,
) -> Result<Transfer> {
    let mut gate = Gate::default();
    let r = match plan.reader {
        Reader::Parts(p, walk) => parts::give_parts(s, (&p, *walk), events, classify, &mut gate),
        _ => give_through(s, plan, events, classify, &mut gate),
    };
    accepted.set(gate.accepted);
    r
}

fn give_through(
    s: &mut Session,
    plan: Plan,
    events: &Events,
    classify: Classify<'_>,
    gate: &mut Gate,
) -> Result<Transfer> {
    let Plan {
        offer,
        frames,
        mut reader,
        accepted,
    } = plan;
    let start = Instant::now();
    let peer = s.peer();
    // Preamble and offer go out at once, and the first EARLY_DATA bytes of
    // data right behind them: a short transfer costs one round trip after
    // the handshake. More waits for the taker's ACCEPT.
    match accepted {
        true => (gate.heard, gate.accepted) = (true, true),
        false => send_offer(s, &offer, frames).map_err(|e| classify(e, "during the transfer"))?,
    }
    let kind = Kind::of(offer.kind);
    started(events, peer, &offer);
    let mut total = announced(&offer);
    if let Reader::Files(seq) = &mut reader
        && !offer.early_data()
    {
        compare(s, seq, gate).map_err(|f| after_failure(s, f, 0, classify, gate))?;
        total = Some(seq.to_send());
    }
    let input: &mut dyn Read = match &mut reader {
        Reader::Stream(r) => r,
        Reader::Files(f) => &mut **f,
        Reader::Parts(..) => return Err(anyhow!("a tree in parts is not given whole").into()),
    };
    let flow = Flow {
        size: total,
        before: 0,
        shown: total,
    };
    let sent = stream_all(s, (input, &offer), flow, events, classify, gate)?;
    gate.pass(s, u64::MAX)
        .map_err(|f| after_failure(s, f, sent, classify, gate))?;
    let ours = match &reader {
        Reader::Files(seq) => Some(&**seq),
        Reader::Stream(_) | Reader::Parts(..) => None,
    };
    let counts = await_receipt(
        s,
        &offer,
        (sent, ours),
        Counts { files: 0, bytes: 0 },
        classify,
    )?;
    s.close();
    let done = Transfer {
        peer,
        kind,
        files: counts.files,
        bytes: counts.bytes,
        resumed: announced(&offer).unwrap_or(0).saturating_sub(sent),
        unverified: ours.map_or(0, FileSeq::skipped),
        duration: start.elapsed(),
    };
    events.emit(Event::TransferDone(done.clone()));
    Ok(done)
}

/// The giver's `transfer-started` event for a whole offer.
fn started(events: &Events, peer: std::net::SocketAddr, offer: &Offer) {
    events.emit(Event::TransferStarted {
        peer,
        giving: true,
        kind: Kind::of(offer.kind),
        names: top_names(offer),
        files: offer.file_count(),
        bytes: announced(offer),
        skipped: offer.skipped.clone(),
    });
}

/// Sends our preamble and the OFFER frames (a large offer's encoded one at
/// a time).
fn send_offer(
    s: &mut Session,
    offer: &Offer,
    frames: Vec<Range<usize>>,
) -> std::result::Result<(), WireError> {
    let mut hello = protocol::preamble_of(Role::Giver).to_vec();
    let n = frames.len();
    for (i, r) in frames.into_iter().enumerate() {
        let part = offer.encode_frame(r, i + 1 == n);
        hello.extend_from_slice(&protocol::frame(FrameType::Offer, &part));
        s.write_all(&hello)?;
        hello.clear();
    }
    Ok(())
}

/// For a stream that can be read only once (an offered stdin): the OFFER
/// goes out and the taker's ACCEPT is awaited before a byte of it is read,
/// so a taker that refuses, or a dialer that is no taker, leaves the plan
/// whole for the next one (given back with the error).
pub(crate) fn announce(
    s: &mut Session,
    mut plan: Plan,
    classify: Classify<'_>,
) -> std::result::Result<Plan, (Box<Plan>, Error)> {
    let frames = std::mem::take(&mut plan.frames);
    if let Err(e) = send_offer(s, &plan.offer, frames.clone()) {
        plan.frames = frames;
        return Err((Box::new(plan), classify(e, "before the transfer")));
    }
    let mut gate = Gate::default();
    match gate.pass(s, u64::MAX) {
        Ok(()) => {
            plan.accepted = true;
            Ok(plan)
        }
        Err(f) => {
            plan.frames = frames;
            let e = after_failure(s, f, 0, classify, &gate);
            Err((Box::new(plan), e))
        }
    }
}

/// Whether the taker accepted the offer yet.
#[derive(Default)]
struct Gate {
    accepted: bool,
    /// The taker's preamble was read (it comes once, before its first
    /// BASIS or ACCEPT).
    heard: bool,
}

impl Gate {
    /// Reads the taker's preamble, the first time only.
    fn hear(&mut self, s: &mut Session) -> std::result::Result<(), GiveFail> {
        if !self.heard {
            s.read_preamble(Role::Giver).map_err(GiveFail::Wire)?;
            self.heard = true;
        }
        Ok(())
    }

    /// Before sending data that brings the total to `total`: past
    /// EARLY_DATA, waits for the taker's preamble and ACCEPT (a REJECT, or
    /// a role mismatch, ends the transfer).
    fn pass(&mut self, s: &mut Session, total: u64) -> std::result::Result<(), GiveFail> {
        if self.accepted || total <= EARLY_DATA {
            return Ok(());
        }
        self.hear(s)?;
        match s.read_message().map_err(GiveFail::Wire)? {
            Message::Accept => {
                self.accepted = true;
                Ok(())
            }
            Message::Reject(r) | Message::Error(r) => Err(GiveFail::Refused(r)),
            m => Err(GiveFail::Broken(unexpected(&m, "ACCEPT"))),
        }
    }
}

/// Streams all data and the END frame; returns the bytes sent. A failure
/// (of the source or the connection) is reported to the receiver.
fn stream_all(
    s: &mut Session,
    (reader, offer): (&mut dyn Read, &Offer),
    flow: Flow,
    events: &Events,
    classify: Classify<'_>,
    gate: &mut Gate,
) -> Result<u64> {
    // Small sources (a 100-byte message) need no 256 KiB buffer.
    let chunk = match flow.size {
        Some(t) => (t as usize).clamp(4096, CHUNK),
        None => 16 * 1024,
    };
    let mut buf = vec![0u8; HEADER_LEN + chunk];
    // Progress counts from what earlier parts sent.
    let before = flow.before;
    let mut sent: u64 = before;
    if let Err(e) = pump(s, reader, &mut buf, &mut sent, &flow, events, gate) {
        return Err(after_failure(s, e, sent, classify, gate));
    }
    let end = Message::End(Counts {
        files: offer.file_count(),
        bytes: sent - before,
    });
    s.write_message(&end)
        .map_err(|e| after_failure(s, GiveFail::Wire(e), sent, classify, gate))?;
    Ok(sent - before)
}

/// What one run of DATA carries.
pub(super) struct Flow {
    /// The bytes to send, when known (files): frames are then filled
    /// across file boundaries.
    pub(super) size: Option<u64>,
    /// What earlier parts of a tree in parts sent (progress counts on).
    pub(super) before: u64,
    /// The total progress events show (none for a stream or a tree in parts).
    pub(super) shown: Option<u64>,
}

/// The bytes an offer announces; a stream announces none.
fn announced(offer: &Offer) -> Option<u64> {
    (offer.kind == TransferKind::Files).then(|| offer.total_bytes())
}

pub(crate) fn stream_offer(name: Option<String>) -> Offer {
    let entry = |name| crate::protocol::Entry {
        name,
        is_dir: false,
        mode: 0o644,
        size: 0,
        mtime: None,
        link: None,
    };
    Offer {
        kind: TransferKind::Stream,
        entries: name.map(entry).into_iter().collect(),
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
    }
}

/// Sends everything `r` yields as DATA frames.
///
/// Reading on this same thread is deliberate: a read-ahead thread (and a
/// write-behind thread on the receiver) were measured on 2 cores and cost
/// about 10% throughput through extra CPU for the hand-offs.
fn pump(
    s: &mut Session,
    r: &mut dyn Read,
    buf: &mut Vec<u8>,
    sent: &mut u64,
    flow: &Flow,
    events: &Events,
    gate: &mut Gate,
) -> std::result::Result<(), GiveFail> {
    loop {
        // A source that keeps filling the buffer gets a larger one.
        if buf.len() < HEADER_LEN + CHUNK && *sent >= (buf.len() as u64) * 4 {
            buf.resize(HEADER_LEN + CHUNK, 0);
        }
        // Files (known total) fill each frame across file boundaries, so
        // many small files travel in few records; a stream sends what it
        // has at once, so interactive input is not held back.
        let n = match fill(r, &mut buf[HEADER_LEN..], flow.size.is_some()) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if files::names_its_file(&e) => {
                return Err(GiveFail::Source(anyhow::Error::new(e)));
            }
            Err(e) => {
                return Err(GiveFail::Source(
                    anyhow::Error::new(e).context("cannot read the input"),
                ));
            }
        };
        gate.pass(s, *sent + n as u64)?;
        s.write_data(&mut buf[..HEADER_LEN + n])
            .map_err(GiveFail::Wire)?;
        *sent += n as u64;
        events.emit(Event::Progress {
            peer: s.peer(),
            bytes: *sent,
            total: flow.shown,
        });
    }
}

/// One read, or (with `full`) reads until `buf` is full or the source ends.
fn fill(r: &mut dyn Read, buf: &mut [u8], full: bool) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && n > 0 => continue,
            Err(e) if n > 0 && !files::names_its_file(&e) => return Ok(n),
            Err(e) => return Err(e),
        }
        if !full {
            break;
        }
    }
    Ok(n)
}

/// Raw mode's giving side: `input` as plain bytes, then close_notify; the
/// peer's reply is copied to `output` until its own close_notify.
pub(crate) fn give_raw(
    s: &mut Session,
    mut input: Box<dyn Read + Send>,
    output: &mut dyn io::Write,
    events: &Events,
    classify: Classify<'_>,
) -> Result<Transfer> {
    let peer = s.peer();
    let start = Instant::now();
    events.emit(Event::TransferStarted {
        peer,
        giving: true,
        kind: Kind::Raw,
        names: vec![],
        files: 0,
        bytes: None,
        skipped: vec![],
    });
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                s.close();
                return Err(anyhow::Error::new(e)
                    .context("cannot read the input")
                    .into());
            }
        };
        s.write_all(&buf[..n])
            .map_err(|e| classify(e, "while sending"))?;
        sent += n as u64;
        events.emit(Event::Progress {
            peer,
            bytes: sent,
            total: None,
        });
    }
    s.finish_writing()
        .map_err(|e| classify(e, "while closing"))?;
    copy_reply(s, &mut buf, output, events, classify)?;
    let done = Transfer {
        peer,
        kind: Kind::Raw,
        files: 0,
        bytes: sent,
        resumed: 0,
        unverified: 0,
        duration: start.elapsed(),
    };
    events.emit(Event::TransferDone(done.clone()));
    Ok(done)
}

/// Copies the peer's raw reply to `output` until its close_notify.
fn copy_reply(
    s: &mut Session,
    buf: &mut [u8],
    output: &mut dyn io::Write,
    events: &Events,
    classify: Classify<'_>,
) -> Result<()> {
    let peer = s.peer();
    let mut replied = 0u64;
    let outcome = loop {
        match s.read(buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                replied += n as u64;
                output
                    .write_all(&buf[..n])
                    .context("cannot write the peer's reply")?
            }
            // Tools such as `ncat --ssl` answer our close_notify with a bare
            // close. Our data and close_notify went out, and nothing of a
            // reply came: there is no reply to call truncated (raw mode
            // never confirms delivery; see send_raw).
            Err(WireError::Closed) if replied == 0 => {
                events.emit(Event::Warning {
                    message: format!(
                        "the peer at {peer} closed without TLS close_notify after ours (as ncat does); everything was sent, but raw mode cannot confirm it was read, and a reply, had there been one, could have been cut"
                    ),
                });
                break Ok(());
            }
            // Anyone on the path can forge a TCP FIN at a record boundary;
            // only close_notify says the reply is complete.
            Err(WireError::Closed) => {
                break Err(Error::Incomplete(format!(
                    "the peer at {peer} closed the connection without TLS close_notify: its reply may be truncated"
                )));
            }
            Err(e) => break Err(classify(e, "while waiting for the peer to close")),
        }
    };
    let _ = output.flush();
    outcome
}
