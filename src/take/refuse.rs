//! How a taker says no: a refused offer, a session that ended before its
//! offer, and the refusal a broken connection becomes. A dialing taker
//! (`get`) returns these as its error, printed once by its caller; a
//! listener reports them as events, since it goes on.

use std::sync::atomic::Ordering;

use super::{Outcome, Taker};
use crate::error::Error;
use crate::events::{Event, Reason};
use crate::fingerprint::Fingerprint;
use crate::protocol::{Message, Refusal, RejectCode};
use crate::session::{Session, WireError};

impl Taker {
    /// Refuses a transfer before any data was stored: tells a framed peer
    /// why (a raw peer only sees the close), and reports it.
    pub(crate) fn refuse(
        &self,
        s: &mut Session,
        client: Option<Fingerprint>,
        r: Refusal,
        framed: bool,
    ) -> Outcome {
        if framed {
            let _ = s.write_message(&Message::Reject(r.clone()));
        }
        s.close();
        if !self.dialing {
            self.events.emit(Event::Refused {
                peer: s.peer(),
                reason: Reason::Offer(r.code),
                fingerprint: client,
                message: r.message.clone(),
            });
        }
        Outcome::NoTransfer(Error::Refused {
            code: r.code.as_str(),
            message: format!("the transfer was refused here: {}", r.message),
        })
    }

    /// The session ended or broke before an offer arrived.
    pub(super) fn before_offer(
        &self,
        peer: std::net::SocketAddr,
        client: Option<Fingerprint>,
        e: WireError,
    ) -> Outcome {
        // A listener that requires a client certificate says so with an
        // alert after the handshake (TLS 1.3 clients finish first).
        if e.refused_our_certificate() {
            return Outcome::NoTransfer(Error::NotAllowed {
                addr: peer,
                fingerprint: self.presenting,
            });
        }
        let (reason, message) = match e {
            WireError::Protocol(p) => (Reason::Protocol, p.to_string()),
            WireError::Timeout => (
                Reason::Timeout,
                "the sender sent no offer in time".to_string(),
            ),
            e => (
                Reason::Closed,
                format!("the connection ended before an offer: {e}"),
            ),
        };
        if !self.dialing {
            self.events.emit(Event::Refused {
                peer,
                reason,
                fingerprint: client,
                message: message.clone(),
            });
        }
        let message = match self.dialing {
            true => format!("the offering side at {peer}: {message}"),
            false => format!("with {peer}: {message}"),
        };
        Outcome::NoTransfer(match reason {
            Reason::Timeout => Error::Timeout(message),
            _ => Error::Incomplete(message),
        })
    }

    /// A read during a transfer that failed: the connection broke or went
    /// silent (`cut` set: what arrived is kept for a resume, unless it broke
    /// the protocol or we are shutting down).
    pub(super) fn cut_short(&self, e: WireError, cut: &std::cell::Cell<bool>) -> Refusal {
        let down = self.shutdown.load(Ordering::SeqCst);
        cut.set(!down && !matches!(e, WireError::Protocol(_)));
        self.wire_or_shutdown(e)
    }

    /// A read that failed because we are shutting down says so.
    pub(super) fn wire_or_shutdown(&self, e: WireError) -> Refusal {
        if self.shutdown.load(Ordering::SeqCst) {
            Refusal::new(RejectCode::Busy, "the receiver is shutting down")
        } else {
            wire_fail(e)
        }
    }
}

/// What a broken or silent connection during a transfer means for it.
pub(super) fn wire_fail(e: WireError) -> Refusal {
    let message = match e {
        WireError::Closed | WireError::Reset => {
            "the sender closed the connection before the end; nothing was stored".into()
        }
        WireError::Timeout => {
            "the sender made no progress within the idle timeout (--idle-timeout); nothing was stored"
                .into()
        }
        e => format!("{e}; nothing was stored"),
    };
    Refusal::new(RejectCode::Protocol, message)
}
