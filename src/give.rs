//! The giving data role, over any established session (dialed or
//! accepted): plan what to send, offer it, stream it, and succeed only on a
//! receipt that confirms exactly what was sent.

use std::cell::Cell;
use std::io::{self, Read};
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::error::{Error, Result};
use crate::events::{Event, Events, Kind, Transfer};
use crate::protocol::{
    self, Counts, EARLY_DATA, FrameType, HEADER_LEN, Message, Offer, Refusal, Role, TransferKind,
};
use crate::session::{Session, WireError};

mod files;
mod reader;
mod sync;
use files::plan;
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
}

/// Where the data comes from.
enum Reader {
    Stream(Box<dyn Read + Send>),
    Files(Box<FileSeq>),
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
                let mut walked = plan(&p.paths, p.links, events)?;
                let skipped = std::mem::take(&mut walked.skipped);
                if p.strict && !skipped.is_empty() {
                    return Err(Error::Skipped(format!(
                        "--strict: {} would be skipped (special files, and links with --no-links, are not sent); nothing was sent",
                        crate::events::list_names(&skipped, protocol::escape_name)
                    )));
                }
                let offer = Offer {
                    kind: TransferKind::Files,
                    entries: std::mem::take(&mut walked.entries),
                    skipped,
                    update: p.sync.update,
                    checksum: p.sync.checksum,
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
    let r = give_through(s, plan, events, classify, &mut gate);
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
    } = plan;
    let start = Instant::now();
    let peer = s.peer();
    // Preamble and offer go out at once, and the first EARLY_DATA bytes of
    // data right behind them: a short transfer costs one round trip after
    // the handshake. More waits for the taker's ACCEPT.
    // A large offer's frames are encoded one at a time.
    let mut hello = protocol::preamble_of(Role::Giver).to_vec();
    let n = frames.len();
    for (i, r) in frames.into_iter().enumerate() {
        let part = offer.encode_frame(r, i + 1 == n);
        hello.extend_from_slice(&protocol::frame(FrameType::Offer, &part));
        s.write_all(&hello)
            .map_err(|e| classify(e, "during the transfer"))?;
        hello.clear();
    }
    let kind = Kind::of(offer.kind);
    events.emit(Event::TransferStarted {
        peer,
        kind,
        names: top_names(&offer),
        files: offer.file_count(),
        bytes: announced(&offer),
        skipped: offer.skipped.clone(),
    });
    let mut total = announced(&offer);
    if let Reader::Files(seq) = &mut reader
        && !offer.early_data()
    {
        compare(s, seq, gate).map_err(|f| after_failure(s, f, 0, classify, gate))?;
        total = Some(seq.to_send());
    }
    let sent = stream_all(s, &mut reader, &offer, total, events, classify, gate)?;
    gate.pass(s, u64::MAX)
        .map_err(|f| after_failure(s, f, sent, classify, gate))?;
    let ours = match &reader {
        Reader::Files(seq) => Some(&**seq),
        Reader::Stream(_) => None,
    };
    let counts = await_receipt(s, &offer, sent, ours, classify)?;
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

/// Whether the taker accepted the offer yet.
#[derive(Default)]
struct Gate {
    accepted: bool,
}

impl Gate {
    /// Before sending data that brings the total to `total`: past
    /// EARLY_DATA, waits for the taker's preamble and ACCEPT (a REJECT, or
    /// a role mismatch, ends the transfer).
    fn pass(&mut self, s: &mut Session, total: u64) -> std::result::Result<(), GiveFail> {
        if self.accepted || total <= EARLY_DATA {
            return Ok(());
        }
        s.read_preamble(Role::Giver).map_err(GiveFail::Wire)?;
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
    reader: &mut Reader,
    offer: &Offer,
    total: Option<u64>,
    events: &Events,
    classify: Classify<'_>,
    gate: &mut Gate,
) -> Result<u64> {
    let reader: &mut dyn Read = match reader {
        Reader::Stream(r) => r,
        Reader::Files(f) => &mut **f,
    };
    // Small sources (a 100-byte message) need no 256 KiB buffer.
    let chunk = match total {
        Some(t) => (t as usize).clamp(4096, CHUNK),
        None => 16 * 1024,
    };
    let mut buf = vec![0u8; HEADER_LEN + chunk];
    let mut sent: u64 = 0;
    if let Err(e) = pump(s, reader, &mut buf, &mut sent, total, events, gate) {
        return Err(after_failure(s, e, sent, classify, gate));
    }
    let end = Message::End(Counts {
        files: offer.file_count(),
        bytes: sent,
    });
    s.write_message(&end)
        .map_err(|e| after_failure(s, GiveFail::Wire(e), sent, classify, gate))?;
    Ok(sent)
}

/// The bytes an offer announces; a stream announces none.
fn announced(offer: &Offer) -> Option<u64> {
    (offer.kind == TransferKind::Files).then(|| offer.total_bytes())
}

fn stream_offer(name: Option<String>) -> Offer {
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
    }
}

/// Most top-level names an event lists, and the most characters of each:
/// names come from a peer, and an event is one line.
const SHOWN_NAMES: usize = 32;
const SHOWN_NAME_CHARS: usize = 200;

/// Top-level names of an offer, escaped and capped for display (the last
/// item says how many more there are).
pub(crate) fn top_names(offer: &Offer) -> Vec<String> {
    let top: Vec<&str> = offer
        .entries
        .iter()
        .filter(|e| !e.name.contains('/'))
        .map(|e| e.name.as_str())
        .collect();
    let mut out: Vec<String> = top
        .iter()
        .take(SHOWN_NAMES)
        .map(|n| {
            let shown = protocol::escape_text(n);
            match shown.char_indices().nth(SHOWN_NAME_CHARS) {
                Some((i, _)) => format!("{}…", &shown[..i]),
                None => shown,
            }
        })
        .collect();
    if top.len() > SHOWN_NAMES {
        out.push(format!("… and {} more", top.len() - SHOWN_NAMES));
    }
    out
}

fn unexpected(m: &Message, expected: &'static str) -> Error {
    Error::Incomplete(format!(
        "the receiver broke the protocol: {}",
        protocol::ProtocolError::Unexpected {
            got: m.name(),
            expected
        }
    ))
}

fn receiver_failed(r: Refusal) -> Error {
    if r.code == protocol::RejectCode::Handler {
        return crate::exec::handler_error(r);
    }
    Error::Refused {
        code: r.code.as_str(),
        message: format!("the receiver failed to store the data: {}", r.message),
    }
}

/// Why giving stopped.
enum GiveFail {
    Wire(WireError),
    Source(anyhow::Error),
    /// The taker refused the offer (REJECT) or failed (ERROR).
    Refused(Refusal),
    /// The taker broke the protocol.
    Broken(Error),
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
    total: Option<u64>,
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
        let n = match fill(r, &mut buf[HEADER_LEN..], total.is_some()) {
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
            total,
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

/// Turns a failure while streaming into the most useful error: the receiver's
/// own ERROR frame when it sent one, else what happened locally.
fn after_failure(
    s: &mut Session,
    fail: GiveFail,
    sent: u64,
    classify: Classify<'_>,
    gate: &Gate,
) -> Error {
    let peer = s.peer();
    match fail {
        GiveFail::Source(e) => {
            let _ = s.write_message(&Message::Abort(format!("{e:#}")));
            s.close();
            Error::Other(e)
        }
        GiveFail::Refused(r) if r.code == protocol::RejectCode::Handler => {
            s.close();
            crate::exec::handler_error(r)
        }
        GiveFail::Refused(r) => {
            s.close();
            Error::Refused {
                code: r.code.as_str(),
                message: r.message,
            }
        }
        GiveFail::Broken(e) => e,
        GiveFail::Wire(e @ WireError::Protocol(_)) => classify(e, "before the transfer"),
        GiveFail::Wire(e) => {
            // The receiver may have explained itself before closing. Read it
            // without flushing our own pending output first: that flush is
            // what just failed. Before its ACCEPT, its preamble comes first
            // (and says if it is no taker at all).
            let wait = Duration::from_secs(2);
            if !gate.accepted {
                match s.read_pending_preamble(Role::Giver, wait) {
                    Some(Err(p)) => return classify(WireError::Protocol(p), "before the transfer"),
                    Some(Ok(())) => {}
                    None => return classify(e, "before the transfer"),
                }
            }
            match s.read_pending_message(wait) {
                Some(Message::Error(r)) => return receiver_failed(r),
                Some(Message::Reject(r)) => {
                    return Error::Refused {
                        code: r.code.as_str(),
                        message: r.message,
                    };
                }
                _ => {}
            }
            match e {
                WireError::Closed | WireError::Reset => Error::Incomplete(format!(
                    "the receiver at {peer} closed the connection after {sent} bytes; delivery is not confirmed"
                )),
                e => classify(e, "during the transfer"),
            }
        }
    }
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
    copy_reply(s, &mut buf, output, classify)?;
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
    classify: Classify<'_>,
) -> Result<()> {
    let peer = s.peer();
    let outcome = loop {
        match s.read(buf) {
            Ok(0) => break Ok(()),
            Ok(n) => output
                .write_all(&buf[..n])
                .context("cannot write the peer's reply")?,
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
