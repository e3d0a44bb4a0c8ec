//! `--exec-stream` handlers: started at once, or (`--serial`) once their
//! turn comes: a message that arrives before its turn is spooled, and the
//! handler that starts when the turn comes gets what was spooled first,
//! then the rest as it arrives (so a sender never waits for its ACCEPT).

use std::io::{IoSlice, Read};

use super::{Sink, Spool};
use crate::events::Event;
use crate::exec::{About, Exec, Input, Peer, Running, Ticket};
use crate::protocol::{Refusal, RejectCode};
use crate::take::Taker;

impl Taker {
    /// Starts an `--exec-stream` handler to be fed; a failure is reported
    /// and refuses the transfer.
    pub(super) fn start_fed(
        &self,
        x: &Exec,
        peer: &Peer,
        about: &About,
    ) -> Result<Running, Refusal> {
        x.start(peer, about, Input::Pipe).map_err(|st| {
            self.events.emit(Event::Handler {
                peer: Some(peer.addr),
                status: st.token(),
                ok: false,
                message: st.message(),
                reply_bytes: 0,
            });
            st.refusal()
        })
    }

    /// After each frame of an `--exec-stream --serial` message still
    /// spooled: once its turn has come, starts the handler, feeds it the
    /// spool and makes it the sink.
    pub(super) fn promote(
        &self,
        x: &Exec,
        peer: &Peer,
        about: &About,
        ticket: Option<&Ticket>,
        sink: &mut Sink,
    ) -> Result<(), Refusal> {
        let ready = x.opts.stream && ticket.is_some_and(Ticket::is_turn);
        if !ready || !matches!(sink, Sink::Spool(_)) {
            return Ok(());
        }
        let mut h = self.start_fed(x, peer, about)?;
        let held = std::mem::replace(sink, Sink::Spool(Spool::new(0, x.dir.clone())));
        let Sink::Spool(held) = held else {
            return Ok(());
        };
        let fed = feed_spool(&mut h, held, self.idle_timeout);
        // From here on a cut ends this handler (`exec_cut`).
        *sink = Sink::Handler(h);
        fed
    }
}

/// Feeds what was spooled to `h`.
fn feed_spool(h: &mut Running, spool: Spool, idle: std::time::Duration) -> Result<(), Refusal> {
    let unreadable = |e: std::io::Error| {
        Refusal::new(
            RejectCode::Io,
            format!("cannot read the spooled message: {e}"),
        )
    };
    let mut r = spool.into_reader().map_err(unreadable)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        h.feed(&[IoSlice::new(&buf[..n])], idle)
            .map_err(|st| st.refusal())?;
    }
}
