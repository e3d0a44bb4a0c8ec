//! Full-duplex relay of a session and a plaintext side (pipe, forward):
//! input read straight into the records that carry it, received records
//! opened in place and written out from there.

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use super::{BATCH_RECORDS, Session, WireError, iovecs, seal_batch};
use crate::record::{self, MAX_PLAIN, TAIL};

/// The plaintext side of [`Session::relay`].
pub struct Plain<'a> {
    /// Where our outgoing bytes come from (`None`: nothing to send).
    pub input: Option<BorrowedFd<'a>>,
    /// Where the peer's bytes go.
    pub output: BorrowedFd<'a>,
    /// Ends the output once the peer ended its direction (close the pipe,
    /// or shut down the write side of a socket), so whoever reads it sees
    /// the end.
    pub end_output: &'a mut dyn FnMut(),
}

/// Bytes a relay moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    /// From our input to the peer.
    pub sent: u64,
    /// From the peer to our output.
    pub received: u64,
}

/// Input read per syscall: it becomes this many bytes of records.
const RELAY_CHUNK: usize = 16 * MAX_PLAIN;
/// Most plaintext written to the output per call (a blocking pipe is not
/// made non-blocking: the flag would be shared).
const OUTPUT_CHUNK: usize = 64 * 1024;

/// A relay's progress in each direction.
#[derive(Default)]
struct Duplex {
    /// Input sealed in place, going out.
    body: Vec<u8>,
    body_len: usize,
    /// Wire bytes of what is going out, and how many were written.
    out_total: usize,
    out_sent: usize,
    input_open: bool,
    write_shut: bool,
    peer_done: bool,
    output_done: bool,
    moved: Relayed,
}

impl Duplex {
    fn sending(&self) -> bool {
        self.out_sent < self.out_total
    }
}

/// The `closed` event of a relay with `peer` that began at `start` and
/// ended with `r`: bytes each way and how it ended (a peer that hung up
/// without close_notify cut it short).
pub(crate) fn closed_event(
    peer: std::net::SocketAddr,
    start: std::time::Instant,
    r: &Result<Relayed, WireError>,
) -> crate::events::Event {
    let moved = r.as_ref().copied().unwrap_or_default();
    crate::events::Event::Closed {
        peer,
        sent: moved.sent,
        received: moved.received,
        duration: start.elapsed(),
        outcome: match r {
            Ok(_) => "ok",
            Err(WireError::Closed) => "truncated",
            Err(_) => "error",
        },
    }
}

impl Session {
    /// Full duplex: `plain.input` goes to the peer while the peer's data
    /// goes to `plain.output`, each direction ending on its own with TLS
    /// close_notify (a half-close: one side's end does not cut the other's
    /// data). `Ok` only when both directions ended cleanly; the peer's bare
    /// TCP close is truncation ([`WireError::Closed`]). With `idle`, a relay
    /// where nothing moves that long times out.
    pub fn relay(
        &mut self,
        plain: Plain<'_>,
        idle: Option<Duration>,
    ) -> Result<Relayed, WireError> {
        self.sock.tcp.set_nonblocking(true)?;
        self.sock.deadline = None;
        let r = self.relay_loop(plain, idle);
        let _ = self.sock.tcp.set_nonblocking(false);
        r
    }

    fn relay_loop(
        &mut self,
        plain: Plain<'_>,
        idle: Option<Duration>,
    ) -> Result<Relayed, WireError> {
        let mut d = Duplex {
            input_open: plain.input.is_some(),
            ..Duplex::default()
        };
        // A second handle for poll(): the session's own is borrowed mutably.
        let sock = self.sock.tcp.try_clone()?;
        loop {
            self.relay_ends(&mut d, &mut *plain.end_output)?;
            if d.output_done && d.write_shut {
                return Ok(d.moved);
            }
            let output_write = self.rx_pending();
            // Received plaintext is written out before more is read: the
            // receive buffer is the backpressure.
            let sock_read = !d.peer_done && !output_write;
            let sock_write = d.sending();
            let open = d.input_open && !self.close_sent && !sock_write;
            let input = plain.input.filter(|_| open);
            // Only descriptors with something to wait for: poll() reports a
            // hang-up or an error whatever was asked, and a descriptor we
            // would not act on would then wake us in a busy loop.
            let mut want = Vec::with_capacity(3);
            let at_sock = (sock_read || sock_write).then(|| {
                want.push(interest(sock.as_fd(), sock_read, sock_write));
                want.len() - 1
            });
            let at_input = input.map(|i| {
                want.push(interest(i, true, false));
                want.len() - 1
            });
            let at_output = output_write.then(|| {
                want.push(interest(plain.output, false, true));
                want.len() - 1
            });
            // Whole records already in our buffer do not wake poll().
            let buffered = sock_read && self.has_buffered_input();
            let wait = if buffered {
                Duration::ZERO
            } else {
                idle.unwrap_or(Duration::from_secs(3600))
            };
            let ready = match crate::sys::poll(&want, wait)? {
                Some(r) => r,
                None if buffered => vec![crate::sys::Ready::default(); want.len()],
                None if idle.is_some() => return Err(WireError::Timeout),
                None => continue,
            };
            let at = |i: Option<usize>| i.map(|i| ready[i]).unwrap_or_default();
            if at(at_sock).write {
                self.flush_nonblocking(&mut d)?;
            }
            if (at(at_sock).read && sock_read) || buffered {
                self.relay_from_peer(&mut d)?;
            }
            if let Some(i) = input
                && at(at_input).read
            {
                self.relay_to_peer(i, &mut d)?;
            }
            if at(at_output).write {
                self.relay_out(plain.output, &mut d)?;
            }
        }
    }

    fn rx_pending(&self) -> bool {
        self.early_at < self.early.len() || !self.rx.ready.is_empty()
    }

    /// Ends whatever direction has ended: the output once the peer's data
    /// is all written, ours with close_notify then a TCP half-close.
    fn relay_ends(
        &mut self,
        d: &mut Duplex,
        end_output: &mut dyn FnMut(),
    ) -> Result<(), WireError> {
        if self.tls.peer_closed() && !self.rx_pending() {
            d.peer_done = true;
        }
        if d.peer_done && !d.output_done {
            end_output();
            d.output_done = true;
        }
        if !d.input_open && !self.close_sent && !d.sending() {
            self.pre.clear();
            self.meta.clear();
            self.queue_close_notify()?;
            d.body_len = 0;
            d.out_total = self.pre.len();
            d.out_sent = 0;
            self.flush_nonblocking(d)?;
        }
        if self.close_sent && !d.sending() && !d.write_shut {
            if self.sock.half_close {
                let _ = self.sock.tcp.shutdown(Shutdown::Write);
            }
            d.write_shut = true;
        }
        Ok(())
    }

    /// Writes what is going out until the socket would block.
    fn flush_nonblocking(&mut self, d: &mut Duplex) -> Result<(), WireError> {
        while d.sending() {
            let mut io = iovecs(&self.pre, &d.body[..d.body_len], &self.meta);
            let mut bufs = &mut io[..];
            IoSlice::advance_slices(&mut bufs, d.out_sent);
            match self.sock.tcp.write_vectored(bufs) {
                Ok(0) => return Err(WireError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => d.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pre.clear();
        Ok(())
    }

    /// Opens what the peer sent (ours and the kernel's buffered bytes),
    /// until there is plaintext for the output, or nothing more is there.
    fn relay_from_peer(&mut self, d: &mut Duplex) -> Result<(), WireError> {
        loop {
            if self.rx_pending() {
                return Ok(());
            }
            if self.tls.peer_closed() {
                d.peer_done = true;
                return Ok(());
            }
            match self.rx.open_all(&mut self.tls) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(f) => return Err(self.fail(f)),
            }
            match self.rx.fill(&mut self.sock) {
                // TCP closed before close_notify: truncation.
                Ok(0) => return Err(WireError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads our input straight into the records that carry it.
    fn relay_to_peer(&mut self, input: BorrowedFd<'_>, d: &mut Duplex) -> Result<(), WireError> {
        if d.body.is_empty() {
            d.body = vec![0u8; RELAY_CHUNK];
        }
        match crate::sys::read_fd(input, &mut d.body) {
            Ok(0) => d.input_open = false,
            Ok(n) => {
                self.pre.clear();
                seal_batch(
                    &mut self.tls,
                    &mut d.body[..n],
                    &mut self.pre,
                    &mut self.meta,
                )
                .map_err(WireError::Tls)?;
                d.body_len = n;
                d.out_total = self.pre.len() + n + self.meta.len() * (record::HEADER + TAIL);
                d.out_sent = 0;
                d.moved.sent += n as u64;
                self.flush_nonblocking(d)?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(WireError::Io(e)),
        }
        Ok(())
    }

    /// Writes what the peer sent to the output from where it was opened,
    /// a bounded piece at a time.
    fn relay_out(&mut self, output: BorrowedFd<'_>, d: &mut Duplex) -> Result<(), WireError> {
        let early = self.early_at < self.early.len();
        let r = if early {
            let end = self.early.len().min(self.early_at + OUTPUT_CHUNK);
            crate::sys::write_fd(output, &self.early[self.early_at..end])
        } else {
            let io = self.rx.slices(OUTPUT_CHUNK);
            crate::sys::write_fd_vectored(output, &io[..io.len().min(BATCH_RECORDS)])
        };
        match r {
            Ok(n) => {
                if early {
                    self.early_at += n;
                } else {
                    self.rx.consume(n);
                }
                d.moved.received += n as u64;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(WireError::Io(e)),
        }
    }
}

fn interest(fd: BorrowedFd<'_>, read: bool, write: bool) -> crate::sys::Interest<'_> {
    crate::sys::Interest { fd, read, write }
}
