//! Why giving stopped, turned into the error the user sees: the taker's
//! own REJECT or ERROR when it sent one, else what happened here.

use std::time::Duration;

use super::{Classify, Gate};
use crate::error::Error;
use crate::protocol::{self, Message, Refusal, Role};
use crate::session::{Session, WireError};

pub(super) fn unexpected(m: &Message, expected: &'static str) -> Error {
    Error::Incomplete(format!(
        "the receiver broke the protocol: {}",
        protocol::ProtocolError::Unexpected {
            got: m.name(),
            expected
        }
    ))
}

pub(super) fn receiver_failed(r: Refusal) -> Error {
    if r.code == protocol::RejectCode::Handler {
        return crate::exec::handler_error(r);
    }
    Error::Refused {
        code: r.code.as_str(),
        message: format!("the receiver failed to store the data: {}", r.message),
    }
}

/// The taker's REJECT, as the user's error.
pub(super) fn refused_by_receiver(r: Refusal) -> Error {
    Error::Refused {
        code: r.code.as_str(),
        message: format!("the receiver refused the transfer: {}", r.message),
    }
}

/// Why giving stopped.
pub(super) enum GiveFail {
    Wire(WireError),
    Source(anyhow::Error),
    /// The taker refused the offer (REJECT) or failed (ERROR).
    Refused(Refusal),
    /// The taker broke the protocol.
    Broken(Error),
}

/// Turns a failure while streaming into the most useful error: the receiver's
/// own ERROR frame when it sent one, else what happened locally.
pub(super) fn after_failure(
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
            refused_by_receiver(r)
        }
        GiveFail::Broken(e) => e,
        GiveFail::Wire(e @ WireError::Protocol(_)) => classify(e, "before the transfer"),
        GiveFail::Wire(e) => {
            // The receiver may have explained itself before closing. Read it
            // without flushing our own pending output first: that flush is
            // what just failed. Before its ACCEPT, its preamble comes first
            // (and says if it is no taker at all).
            let wait = Duration::from_secs(2);
            if !gate.heard {
                match s.read_pending_preamble(Role::Giver, wait) {
                    Some(Err(p)) => return classify(WireError::Protocol(p), "before the transfer"),
                    Some(Ok(())) => {}
                    None => return classify(e, "before the transfer"),
                }
            }
            match s.read_pending_message(wait) {
                Some(Message::Error(r)) => return receiver_failed(r),
                Some(Message::Reject(r)) => return refused_by_receiver(r),
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
