//! The taking data role, over any established session (accepted or
//! dialed): admit an offer, store its data through the [`crate::store`],
//! conclude (commit or undo), and send the receipt only once it is durable.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::digest::Hash;
use crate::error::{Error, Result};
use crate::events::{Event, Events, Kind, Transfer};
use crate::fingerprint::Fingerprint;
use crate::give::top_names;
use crate::protocol::{Counts, FrameType, Message, Offer, Refusal, RejectCode, TransferKind};
use crate::session::{DataError, Session, WireError};
use crate::store::{self, Fail, Store};

mod end;
mod exec;
mod frames;
mod parts;
mod raw;
mod refuse;
use end::{End, not_data, shape_of};
use frames::{accept, send_digests};
use refuse::wire_fail;

/// Memory all offers held at once may take (decoded names and the frame);
/// an offer past it is refused as busy.
pub const OFFER_MEMORY: u64 = 256 << 20;

/// Payload a files transfer must move per idle period to count as progress.
const PROGRESS_BYTES: u64 = 64 * 1024;

/// How one session's offer ended.
pub(crate) enum Outcome {
    /// A transfer was accepted and ended this way.
    Transfer(Result<Transfer>),
    /// A files transfer was cut short (the connection, or the sender gave
    /// up) and what arrived is kept: the same command run again resumes.
    Resumable(Error),
    /// The session ended before any transfer was accepted, or the offer
    /// was refused: why, for a dialing taker (`get`) to report.
    NoTransfer(Error),
    /// No session: the handshake or admission failed (already reported).
    NoSession,
}

impl Outcome {
    /// The same outcome, its error marked as reported already (an event
    /// said it): a one-shot listener that ends with it is not repeated.
    fn shown(self) -> Outcome {
        let shown = |e| Error::Shown(Box::new(e));
        match self {
            Outcome::Transfer(Err(e)) => Outcome::Transfer(Err(shown(e))),
            Outcome::Resumable(e) => Outcome::Resumable(shown(e)),
            o => o,
        }
    }
}

/// The taker's state, shared by every session of one server.
pub(crate) struct Taker {
    store: Arc<Store>,
    events: Arc<Events>,
    shutdown: Arc<AtomicBool>,
    idle_timeout: Duration,
    keep_open: bool,
    /// One-shot mode: set by the first transfer that is accepted.
    claimed: AtomicBool,
    /// One-shot mode, after a files transfer was cut: the shape of its
    /// offer (names and sizes), the only one taken while its resume is
    /// awaited, so that someone else with the code cannot slip in other
    /// files.
    awaiting: Mutex<Option<Hash>>,
    /// Streams to stdout go one at a time.
    stdout: Mutex<()>,
    /// Serializes commits with the shutdown sweep.
    finalize: Mutex<()>,
    /// Memory promised to offers in progress (see [`OFFER_MEMORY`]).
    offer_memory: AtomicU64,
    /// A dialing taker's own certificate, for "not allowed" messages.
    presenting: Option<Fingerprint>,
    /// A dialing taker (`get`) returns why it stopped as its error, which
    /// its caller prints: no event says it a second time.
    dialing: bool,
    /// `serve --exec`: the program each transfer is handed to.
    exec: Option<crate::exec::Exec>,
}

/// Where an offer stands while it is read and checked.
type Admit<T> = std::result::Result<T, NoOffer>;

/// Why no offer was taken.
enum NoOffer {
    /// The session broke or timed out.
    Wire(WireError),
    /// We refuse what arrived (told to the giver).
    Refuse(Refusal),
    /// The giver refused us (an `offer` that is busy or done).
    Refused(Refusal),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn refusal((code, message): Fail) -> Refusal {
    Refusal { code, message }
}

impl Taker {
    /// A taker storing into `store`.
    pub(crate) fn new(
        store: Arc<Store>,
        events: Arc<Events>,
        shutdown: Arc<AtomicBool>,
        idle_timeout: Duration,
        keep_open: bool,
    ) -> Taker {
        Taker {
            store,
            events,
            shutdown,
            idle_timeout,
            keep_open,
            claimed: AtomicBool::new(false),
            awaiting: Mutex::new(None),
            stdout: Mutex::new(()),
            finalize: Mutex::new(()),
            offer_memory: AtomicU64::new(0),
            presenting: None,
            dialing: false,
            exec: None,
        }
    }

    /// A dialing taker (`get`) that presented this certificate.
    pub(crate) fn presenting(mut self, fp: Option<Fingerprint>) -> Taker {
        self.presenting = fp;
        self.dialing = true;
        self
    }

    /// True once a one-shot taker has a transfer under way.
    pub(crate) fn claimed(&self) -> bool {
        self.claimed.load(Ordering::SeqCst)
    }

    /// A one-shot taker whose transfer was cut short takes the next one
    /// (the resume).
    pub(crate) fn unclaim(&self) {
        self.claimed.store(false, Ordering::SeqCst);
    }

    /// Held while shutting down: no commit happens after it is taken.
    pub(crate) fn finalize(&self) -> MutexGuard<'_, ()> {
        lock(&self.finalize)
    }

    /// The framed protocol: preamble, OFFER, ACCEPT or REJECT, DATA*, END,
    /// then RECEIPT once durable (or ERROR).
    pub(crate) fn take(
        &self,
        s: &mut Session,
        client: Option<Fingerprint>,
        secret: Option<Hash>,
    ) -> Outcome {
        // Our preamble goes out at once; theirs, and the offer, must follow
        // within one idle period however the bytes trickle in.
        s.set_deadline(Some(Instant::now() + self.idle_timeout));
        let (offer, grant) = match self.read_offer(s) {
            Ok(x) => x,
            Err(NoOffer::Wire(e)) => return self.before_offer(s.peer(), client, e),
            Err(NoOffer::Refuse(r)) => return self.refuse(s, client, r, true),
            Err(NoOffer::Refused(r)) => {
                s.close();
                return Outcome::NoTransfer(Error::Refused {
                    code: r.code.as_str(),
                    message: format!("the offering side refused: {}", r.message),
                });
            }
        };
        if let Some(o) = self.exec_offer(s, client, &offer) {
            return o;
        }
        if offer.continued {
            return self.take_parts(s, client, secret, (offer, grant));
        }
        let _grant = grant;
        let handed = self.handed(s, client, &offer);
        let start = Instant::now();
        let kind = Kind::of(offer.kind);
        let (files, names) = (offer.file_count(), top_names(&offer));
        let skipped = offer.skipped.clone();
        let total = (offer.kind == TransferKind::Files).then(|| offer.total_bytes());
        // Only a one-shot taker compares offers by shape (while it awaits
        // a resume): a kept-open one does not hash every name.
        let shape = match self.keep_open {
            true => [0; 32],
            false => shape_of(&offer),
        };
        // Preparing may hash kept partial files and files --update
        // compares: the giver hears KEEPALIVE meanwhile (an offer with
        // early data has nothing to compare).
        let claimed = match offer.early_data() {
            true => self.claim(offer, secret),
            false => s.keep_alive_while(|| self.claim(offer, secret)),
        };
        let mut t = match claimed {
            Ok(t) => t,
            Err(r) => return self.refuse(s, client, r, true),
        };
        // A stream to stdout is one at a time, in arrival order.
        let _stdout = t.to_stdout().then(|| lock(&self.stdout));
        let cut = Cell::new(false);
        let result = accept(s, &t).map_err(wire_fail).and_then(|()| {
            self.events.emit(Event::TransferStarted {
                peer: s.peer(),
                giving: false,
                kind,
                names,
                files,
                bytes: total,
                skipped,
            });
            self.receive(s, &mut t, (total, total.is_some()), &cut)
        });
        s.set_deadline(None);
        let end = End {
            kind,
            files,
            start,
            framed: true,
            cut: cut.get(),
            shape,
            parts: false,
            handed,
        };
        self.conclude(s, t, result, end)
    }

    /// Takes the one-shot slot (if this taker has one) and prepares the
    /// store. A refusal here stored nothing, so the slot is given back.
    fn claim(
        &self,
        offer: Offer,
        secret: Option<Hash>,
    ) -> std::result::Result<store::Transfer, Refusal> {
        if self.shutdown.load(Ordering::SeqCst) {
            return Err(Refusal::new(
                RejectCode::Busy,
                "the receiver is shutting down",
            ));
        }
        let awaited = *lock(&self.awaiting);
        if !self.keep_open && awaited.is_some_and(|h| h != shape_of(&offer)) {
            return Err(Refusal::new(
                RejectCode::Busy,
                "this receiver waits for its interrupted transfer to resume (the same files, from the same sender)",
            ));
        }
        if !self.keep_open && self.claimed.swap(true, Ordering::SeqCst) {
            return Err(Refusal::new(
                RejectCode::Busy,
                "this receiver already took a transfer (run it with --keep-open for more)",
            ));
        }
        self.store.begin_for(offer, secret).map_err(|f| {
            if !self.keep_open {
                self.claimed.store(false, Ordering::SeqCst);
            }
            refusal(f)
        })
    }

    /// Reads DATA into the store until END, checking every count. The idle
    /// timeout bounds progress: a files transfer must move PROGRESS_BYTES
    /// (or finish) per period, a stream a whole frame. `total` is what
    /// progress events show (none for a stream or a tree in parts).
    fn receive(
        &self,
        s: &mut Session,
        t: &mut store::Transfer,
        (mut total, files): (Option<u64>, bool),
        cut: &Cell<bool>,
    ) -> std::result::Result<(), Refusal> {
        // The connection broke or went silent, or the sender gave up: what
        // arrived is kept for a resume (not when it broke the protocol).
        let wire = |e: WireError| self.cut_short(e, cut);
        s.set_deadline(Some(Instant::now() + self.idle_timeout));
        if t.awaiting_plans() {
            self.await_plans(s, t, &wire, cut)?;
        }
        let mut mark = t.written();
        if total.is_some() {
            total = Some(t.expected_bytes());
        }
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return Err(Refusal::new(
                    RejectCode::Busy,
                    "the receiver is shutting down",
                ));
            }
            let (ft, len) = s.read_header().map_err(wire)?;
            if ft == FrameType::Data {
                s.read_data(len, &mut |io| t.write_slices(io))
                    .map_err(|e| match e {
                        DataError::Wire(e) => wire(e),
                        DataError::Sink(f) => refusal(f),
                    })?;
                if !files || t.written() - mark >= PROGRESS_BYTES {
                    mark = t.written();
                    s.set_deadline(Some(Instant::now() + self.idle_timeout));
                }
                self.events.emit(Event::Progress {
                    peer: s.peer(),
                    bytes: t.written(),
                    total,
                });
                continue;
            }
            match s.read_body(ft, len).map_err(wire)? {
                Message::End(c) => return t.finish(c.files, c.bytes).map_err(refusal),
                m => return Err(not_data(m, cut)),
            }
        }
    }

    /// Reads the giver's PLAN frames (which chunks of the files this taker
    /// has come), before any data. A giver still hashing says so with
    /// KEEPALIVE, for a bounded time.
    fn await_plans(
        &self,
        s: &mut Session,
        t: &mut store::Transfer,
        wire: &dyn Fn(WireError) -> Refusal,
        cut: &Cell<bool>,
    ) -> std::result::Result<(), Refusal> {
        let plans_by = Instant::now() + crate::give::hashing_allowance(t.basis_bytes());
        while t.awaiting_plans() {
            let (ft, len) = s.read_header().map_err(wire)?;
            if ft == FrameType::Data {
                return Err(Refusal::new(
                    RejectCode::Protocol,
                    "the sender sent data before its PLAN",
                ));
            }
            match s.read_body(ft, len).map_err(wire)? {
                Message::Plan(p) => t.plan(p).map_err(refusal)?,
                Message::Keepalive if Instant::now() < plans_by => {
                    s.set_deadline(Some(Instant::now() + self.idle_timeout));
                }
                Message::Keepalive => {
                    return Err(Refusal::new(
                        RejectCode::Protocol,
                        "the sender kept comparing for longer than reading what this receiver has could take",
                    ));
                }
                m => return Err(not_data(m, cut)),
            }
        }
        Ok(())
    }

    /// Names the received data (or undoes it), tells the peer, emits the
    /// event.
    fn conclude(
        &self,
        s: &mut Session,
        mut t: store::Transfer,
        result: std::result::Result<(), Refusal>,
        mut end: End,
    ) -> Outcome {
        let bytes = t.written();
        let (resumed, unverified) = (t.resumed(), t.unverified());
        let result = result.and_then(|()| {
            let _g = lock(&self.finalize);
            if self.shutdown.load(Ordering::SeqCst) {
                Err(Refusal::new(
                    RejectCode::Busy,
                    "the receiver is shutting down",
                ))
            } else {
                t.commit().map_err(refusal)
            }
        });
        if let Err(r) = result {
            return self.undo(s, t, r, &end);
        }
        let files = end.files;
        if end.framed {
            // The data is stored whether or not the sender hears it.
            let _ = send_digests(s, t.digests(), t.files_before());
            // `serve --exec`: its handler runs on it (its reply goes first).
            if let Err(o) = self.exec_files(s, end.handed.take()) {
                return o;
            }
            let _ = s.write_message(&Message::Receipt(Counts { files, bytes }));
        }
        s.close();
        let done = Transfer {
            peer: s.peer(),
            kind: end.kind,
            files,
            bytes,
            resumed,
            unverified,
            duration: end.start.elapsed(),
        };
        self.events.emit(Event::TransferDone(done.clone()));
        Outcome::Transfer(Ok(done))
    }

    /// A transfer that failed after it was accepted: undone (what arrived
    /// kept for a resume when it was cut short), the peer told, reported.
    fn undo(&self, s: &mut Session, mut t: store::Transfer, r: Refusal, end: &End) -> Outcome {
        // Cut short (the connection, the sender, a shutdown): what arrived
        // is kept for a resume. Refused: nothing is. A shutdown keeps it
        // only where a restarted receiver can resume it (not under a code
        // of this run).
        let keep = end.cut || (r.code == RejectCode::Busy && self.store.kept_outlive_process());
        // A tree in parts that filled the disk keeps the parts confirmed
        // before: the same command, once there is room, sends the rest.
        let full = end.parts && r.code == RejectCode::NoSpace && t.files_before() > 0;
        let keep = keep || full;
        if keep {
            t.abort_keeping();
        } else {
            t.abort();
        }
        if end.framed {
            let _ = s.write_message(&Message::Error(r.clone()));
        }
        s.close();
        if !self.dialing {
            self.events.emit(Event::Error {
                peer: Some(s.peer()),
                code: r.code.as_str(),
                message: r.message.clone(),
            });
        }
        let o = match r.code {
            RejectCode::Busy => Outcome::Transfer(Err(Error::Interrupted)),
            RejectCode::NoSpace if full => {
                *lock(&self.awaiting) = Some(end.shape);
                Outcome::Resumable(Error::Refused {
                    code: r.code.as_str(),
                    message: format!("the transfer stopped here: {}", r.message),
                })
            }
            RejectCode::Protocol if end.kind == Kind::Files && end.cut => {
                *lock(&self.awaiting) = Some(end.shape);
                Outcome::Resumable(Error::Incomplete(r.message))
            }
            RejectCode::Protocol => Outcome::Transfer(Err(Error::Incomplete(r.message))),
            _ => Outcome::Transfer(Err(Error::Other(anyhow!(r.message)))),
        };
        match self.dialing {
            true => o,
            false => o.shown(),
        }
    }
}
