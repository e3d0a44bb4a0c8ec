//! The TCP socket under a session: reads under a deadline or the idle
//! timeout, vectored writes of whole buffers, and the wait for the peer's
//! close after ours.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use super::CLOSE_WAIT;

/// The TCP socket behind a session, with an optional deadline for every
/// read.
pub(super) struct SockIo {
    pub(super) tcp: TcpStream,
    /// While set, every read must finish by then.
    pub(super) deadline: Option<Instant>,
    /// The read timeout when no deadline is set.
    pub(super) idle: Option<Duration>,
    /// A deadline changed the socket's read timeout: restore `idle`.
    pub(super) stretched: bool,
    /// Whether our close_notify may be followed by a TCP half-close while
    /// the peer still sends; not through a relay, which may end both
    /// directions on the first FIN (the transit relay does).
    pub(super) half_close: bool,
    /// Through a relay, the dialer: at the end it waits for the listener
    /// to close first, sending no FIN of its own (a relay that ends both
    /// directions on the first FIN could otherwise drop what it still
    /// holds of ours).
    pub(super) closes_last: bool,
}

impl SockIo {
    pub(super) fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.tcp.set_read_timeout(Some(left))?;
            self.stretched = true;
        } else if self.stretched {
            self.tcp.set_read_timeout(self.idle)?;
            self.stretched = false;
        }
        loop {
            match self.tcp.read(out) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// After we closed our side: lets the peer read what we sent (closing
    /// with unread input sends a TCP reset, which can destroy it in
    /// flight) by reading until its close, at most [`CLOSE_WAIT`].
    pub(super) fn drain_after_close(&mut self) {
        let _ = self.tcp.shutdown(Shutdown::Write);
        self.deadline = Some(Instant::now() + CLOSE_WAIT);
        let mut sink = [0u8; 4096];
        for _ in 0..64 {
            match self.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Writes every byte of `bufs` (a blocking socket).
    pub(super) fn write_all_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut bufs = bufs;
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match self.tcp.write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
