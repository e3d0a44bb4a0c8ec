//! The taker's side of `serve --exec`: a stream read to its END into a
//! spool (or into the handler as it arrives, `--exec-stream`), the
//! handler run once the message is whole, and its result told to the
//! sender: REPLY frames and the RECEIPT, or an ERROR with its status.
//! A cut message never starts a handler (or ends the one that runs).

use std::io::{IoSlice, Read};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Outcome, Taker, not_data, wire_fail};
use crate::error::Error;
use crate::events::{Event, Kind, Transfer};
use crate::exec::{About, Exec, Input, Peer, Running, SPOOL_MEMORY, Spool, Status, Ticket};
use crate::fingerprint::Fingerprint;
use crate::protocol::TransferKind;
use crate::protocol::{Counts, FrameType, MAX_DATA, Message, Offer, Refusal, RejectCode};
use crate::session::{DataError, Session, WireError};

mod files;
mod turn;
pub(super) use files::Handed;

/// Where a stream's data goes.
enum Sink {
    /// Held until the message is whole.
    Spool(Spool),
    /// Into the handler that runs already (`--exec-stream`).
    Handler(Running),
}

impl Sink {
    fn take(&mut self, io: &[IoSlice<'_>], idle: Duration) -> Result<(), Refusal> {
        match self {
            Sink::Spool(sp) => io.iter().try_for_each(|b| sp.write(b)).map_err(|e| {
                let code = match e.raw_os_error() {
                    Some(libc::ENOSPC | libc::EDQUOT) => RejectCode::NoSpace,
                    _ => RejectCode::Io,
                };
                Refusal::new(code, format!("the receiver cannot hold the message: {e}"))
            }),
            Sink::Handler(h) => h.feed(io, idle).map_err(|st| st.refusal()),
        }
    }
}

impl Taker {
    /// Hands each transfer to `exec`'s program.
    pub(crate) fn with_exec(mut self, exec: Option<Exec>) -> Taker {
        self.exec = exec;
        self
    }

    /// As the receiver ends: waits until the handlers still running were
    /// ended by their threads (SIGTERM, then SIGKILL), a bounded time.
    pub(crate) fn end_handlers(&self) {
        if let Some(x) = &self.exec {
            self.shutdown.store(true, Ordering::SeqCst);
            x.wait_ended(crate::exec::KILL_GRACE * 2);
        }
    }

    /// A transfer for the handler, when this taker has one: a stream
    /// taken here (`Some`), or files left to the store (`None`), and what
    /// does not fit refused.
    pub(super) fn exec_offer(
        &self,
        s: &mut Session,
        client: Option<Fingerprint>,
        offer: &Offer,
    ) -> Option<Outcome> {
        let x = self.exec.as_ref()?;
        let files = offer.kind == TransferKind::Files;
        let why = match (files, x.out.is_some()) {
            (true, true) if offer.continued => {
                "this receiver hands the files it stores to its handler, at most 50,000 entries at a time: this tree has more (it comes in parts); send its directories one by one"
            }
            (true, true) => return None,
            (false, false) => return Some(self.exec_stream(s, client, offer, x)),
            (false, true) => {
                "this receiver hands the files it stores in its --out directory to its handler: send files, not a stream"
            }
            (true, false) => {
                "this receiver hands each stream to its handler and takes no files (it has no --out directory): send a stream"
            }
        };
        let r = Refusal::new(RejectCode::Unsupported, why);
        Some(self.refuse(s, client, r, true))
    }

    /// A stream: read whole (or fed to a running handler), then the
    /// handler's result told.
    fn exec_stream(
        &self,
        s: &mut Session,
        client: Option<Fingerprint>,
        offer: &Offer,
        x: &Exec,
    ) -> Outcome {
        if let Err(r) = self.claim_one() {
            return self.refuse(s, client, r, true);
        }
        let peer = x.peer(s.peer(), client);
        let mut about = About {
            name: offer.entries.first().map(|e| e.name.clone()),
            ..About::default()
        };
        // `--serial`: the place is drawn as the sender arrives.
        let ticket = x.opts.serial.then(|| x.queue.ticket());
        let mut sink = match self.open_sink(x, &peer, &about, ticket.as_ref()) {
            Ok(sink) => sink,
            Err(r) => return self.refuse(s, client, r, true),
        };
        let start = Instant::now();
        let got = s
            .write_message(&Message::Accept)
            .map_err(wire_fail)
            .and_then(|()| {
                self.events.emit(Event::TransferStarted {
                    peer: s.peer(),
                    giving: false,
                    kind: Kind::Stream,
                    names: super::top_names(offer),
                    files: 0,
                    bytes: None,
                    skipped: Vec::new(),
                });
                let mut turn =
                    |sink: &mut Sink| self.promote(x, &peer, &about, ticket.as_ref(), sink);
                self.receive_message(s, &mut sink, &mut turn)
            });
        s.set_deadline(None);
        let bytes = match got {
            Ok(b) => b,
            Err(r) => return self.exec_cut(s, &peer, sink, r),
        };
        about.bytes = Some(bytes);
        // The sender hears KEEPALIVE while the handler waits its turn and runs.
        let (st, reply) = s.keep_alive_while(|| match sink {
            Sink::Handler(h) => h.finish(),
            Sink::Spool(sp) => self.run_spooled(x, &peer, &about, sp, ticket.as_ref()),
        });
        drop(ticket);
        match self.answer(s, &peer, st, reply) {
            Ok(reply) => {
                // The handler ran whether or not the sender hears it.
                let _ = send_reply(s, reply);
                self.exec_done(s, Counts { files: 0, bytes }, start)
            }
            Err(e) => Outcome::Transfer(Err(e)),
        }
    }

    /// Where the data goes: a spool, or (`--exec-stream`) the handler,
    /// started at once when it is its turn. A handler that cannot start
    /// refuses the transfer.
    fn open_sink(
        &self,
        x: &Exec,
        peer: &Peer,
        about: &About,
        ticket: Option<&Ticket>,
    ) -> Result<Sink, Refusal> {
        // `--exec-stream --serial`: until its turn, what arrives is spooled
        // (see `promote`).
        if !x.opts.stream || ticket.is_some_and(|t| !t.is_turn()) {
            return Ok(Sink::Spool(Spool::new(SPOOL_MEMORY, x.dir.clone())));
        }
        self.start_fed(x, peer, about).map(Sink::Handler)
    }

    /// Runs the handler on a whole spooled message once it is its turn.
    fn run_spooled(
        &self,
        x: &Exec,
        peer: &Peer,
        about: &About,
        spool: Spool,
        ticket: Option<&Ticket>,
    ) -> (Status, Option<Spool>) {
        if !ticket.is_none_or(|t| t.wait_turn(&self.shutdown)) {
            return (Status::Failed("the receiver is shutting down".into()), None);
        }
        let started = spool
            .into_file()
            .map_err(|e| Status::Failed(format!("cannot read the spooled message: {e}")))
            .and_then(|f| x.start(peer, about, Input::File(f)));
        match started {
            Ok(h) => h.finish(),
            Err(st) => (st, None),
        }
    }

    /// One-shot: takes the one transfer (refused when taken, or shutting
    /// down).
    fn claim_one(&self) -> Result<(), Refusal> {
        if self.shutdown.load(Ordering::SeqCst) {
            return Err(shutting_down());
        }
        if !self.keep_open && self.claimed.swap(true, Ordering::SeqCst) {
            return Err(Refusal::new(
                RejectCode::Busy,
                "this receiver already took a transfer (run it with --keep-open for more)",
            ));
        }
        Ok(())
    }

    /// Reads DATA into `sink` until END, which must count what came; the
    /// idle timeout bounds each frame, and `turn` may change the sink after
    /// each. Returns the bytes.
    fn receive_message(
        &self,
        s: &mut Session,
        sink: &mut Sink,
        turn: &mut dyn FnMut(&mut Sink) -> Result<(), Refusal>,
    ) -> Result<u64, Refusal> {
        let idle = self.idle_timeout;
        let mut got = 0u64;
        loop {
            s.set_deadline(Some(Instant::now() + idle));
            if self.shutdown.load(Ordering::SeqCst) {
                return Err(shutting_down());
            }
            let (ft, len) = s.read_header().map_err(|e| self.wire_or_shutdown(e))?;
            if ft == FrameType::Data {
                s.read_data(len, &mut |io| sink.take(io, idle))
                    .map_err(|e| match e {
                        DataError::Wire(e) => self.wire_or_shutdown(e),
                        DataError::Sink(r) => r,
                    })?;
                got += len as u64;
                turn(sink)?;
                self.events.emit(Event::Progress {
                    peer: s.peer(),
                    bytes: got,
                    total: None,
                });
                continue;
            }
            match s.read_body(ft, len).map_err(|e| self.wire_or_shutdown(e))? {
                Message::End(c) if c.files == 0 && c.bytes == got => return Ok(got),
                Message::End(c) => {
                    return Err(Refusal::new(
                        RejectCode::Protocol,
                        format!(
                            "the sender counted {} bytes at the end but sent {got}; the handler was not given it",
                            c.bytes
                        ),
                    ));
                }
                m => return Err(not_data(m, &std::cell::Cell::new(false))),
            }
        }
    }

    /// The message was cut or refused: a running handler is ended
    /// (SIGTERM, its input left open), the sender told, it reported.
    fn exec_cut(&self, s: &mut Session, peer: &Peer, sink: Sink, r: Refusal) -> Outcome {
        let _ = s.write_message(&Message::Error(r.clone()));
        s.close();
        match sink {
            Sink::Handler(h) => {
                let st = h.terminate();
                self.events.emit(Event::Handler {
                    peer: Some(peer.addr),
                    status: st.token(),
                    ok: false,
                    message: format!("{}; its handler was ended ({})", r.message, st.message()),
                    reply_bytes: 0,
                });
            }
            Sink::Spool(_) => self.events.emit(Event::Error {
                peer: Some(peer.addr),
                code: r.code.as_str(),
                message: format!("{}; no handler was started", r.message),
            }),
        }
        Outcome::Transfer(Err(match r.code {
            RejectCode::Handler => crate::exec::handler_error(r),
            RejectCode::Busy => Error::Interrupted,
            _ => Error::Incomplete(r.message),
        }))
    }

    /// Reports how the handler ended; on failure the sender is told (an
    /// ERROR with its status) and the session closed. On success the
    /// reply is returned, for the caller to send before its RECEIPT.
    pub(super) fn answer(
        &self,
        s: &mut Session,
        peer: &Peer,
        st: Status,
        reply: Option<Spool>,
    ) -> Result<Option<Spool>, Error> {
        self.events.emit(Event::Handler {
            peer: Some(peer.addr),
            status: st.token(),
            ok: st.ok(),
            message: st.message(),
            reply_bytes: reply.as_ref().map_or(0, Spool::len),
        });
        if st.ok() {
            return Ok(reply);
        }
        let _ = s.write_message(&Message::Error(st.refusal()));
        s.close();
        Err(Error::Handler {
            status: st.token(),
            message: st.message(),
        })
    }

    /// The receipt of a handled stream, and its report.
    fn exec_done(&self, s: &mut Session, counts: Counts, start: Instant) -> Outcome {
        let _ = s.write_message(&Message::Receipt(counts));
        s.close();
        let done = Transfer {
            peer: s.peer(),
            kind: Kind::Stream,
            files: 0,
            bytes: counts.bytes,
            resumed: 0,
            unverified: 0,
            duration: start.elapsed(),
        };
        self.events.emit(Event::TransferDone(done.clone()));
        Outcome::Transfer(Ok(done))
    }
}

/// The handler's reply as REPLY frames.
pub(super) fn send_reply(s: &mut Session, reply: Option<Spool>) -> Result<(), WireError> {
    let Some(reply) = reply.filter(|r| r.len() > 0) else {
        return Ok(());
    };
    let mut r = reply.into_reader().map_err(WireError::Io)?;
    let mut buf = vec![0u8; REPLY_FRAME];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WireError::Io(e)),
        };
        s.write_message(&Message::Reply(buf[..n].to_vec()))?;
    }
}

/// Bytes per REPLY frame (at most [`MAX_DATA`]).
const REPLY_FRAME: usize = if MAX_DATA < 256 << 10 {
    MAX_DATA
} else {
    256 << 10
};

fn shutting_down() -> Refusal {
    Refusal::new(RejectCode::Busy, "the receiver is shutting down")
}
