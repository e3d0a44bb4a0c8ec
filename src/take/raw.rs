//! Raw mode's taking side (`serve --raw`): the plaintext of the session
//! is the data, until the peer's close_notify.

use std::time::Instant;

use super::end::End;
use super::refuse::wire_fail;
use super::{Outcome, Taker, lock, refusal};
use crate::events::{Event, Kind};
use crate::fingerprint::Fingerprint;
use crate::give::CHUNK;
use crate::protocol::{Refusal, RejectCode};
use crate::session::{Session, WireError};
use crate::store;
use std::sync::atomic::Ordering;

impl Taker {
    /// Raw mode: the plaintext of the session is the data, until the peer's
    /// close_notify. No framing, no receipt (the peer is a plain TLS tool).
    pub(crate) fn take_raw(&self, s: &mut Session, client: Option<Fingerprint>) -> Outcome {
        let mut t = match self.claim(crate::give::stream_offer(None), None) {
            Ok(t) => t,
            Err(r) => return self.refuse(s, client, r, false),
        };
        let _stdout = t.to_stdout().then(|| lock(&self.stdout));
        self.events.emit(Event::TransferStarted {
            peer: s.peer(),
            giving: false,
            kind: Kind::Raw,
            names: vec![],
            files: 0,
            bytes: None,
            skipped: vec![],
        });
        let start = Instant::now();
        let result = self.receive_raw(s, &mut t);
        let end = End {
            kind: Kind::Raw,
            files: 0,
            start,
            framed: false,
            cut: false,
            shape: [0; 32],
            parts: false,
            handed: None,
        };
        self.conclude(s, t, result, end)
    }

    fn receive_raw(
        &self,
        s: &mut Session,
        t: &mut store::Transfer,
    ) -> std::result::Result<(), Refusal> {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0usize;
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return Err(Refusal::new(
                    RejectCode::Busy,
                    "the receiver is shutting down",
                ));
            }
            // Gather what is already here into one large write; flush before
            // a read that may block, so interactive streams are not held back.
            if filled > 0 && (filled == buf.len() || !s.has_buffered_input()) {
                t.write(&buf[..filled]).map_err(refusal)?;
                filled = 0;
                self.events.emit(Event::Progress {
                    peer: s.peer(),
                    bytes: t.written(),
                    total: None,
                });
            }
            match s.read(&mut buf[filled..]) {
                Ok(0) => {
                    t.write(&buf[..filled]).map_err(refusal)?;
                    return t.finish(0, t.written()).map_err(refusal);
                }
                Ok(n) => filled += n,
                Err(WireError::Closed | WireError::Reset) => {
                    return Err(Refusal::new(
                        RejectCode::Protocol,
                        "the peer closed the connection without close_notify; the data may be truncated and was not stored",
                    ));
                }
                Err(e) => return Err(wire_fail(e)),
            }
        }
    }
}
