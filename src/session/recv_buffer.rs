//! A session's receive buffer: what the socket gives lands here, records
//! are opened in place, and their plaintext is handed out from where it lies.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use super::BATCH_RECORDS;
use super::socket::SockIo;
use crate::record::{self, Fatal, Inbound, MAX_RECORD, Tls};

/// Bytes a session's receive buffer grows to: one socket read of this much
/// is opened in place and written out in one vectored call.
const RX_MAX: usize = 256 * 1024 + MAX_RECORD;
/// Where the receive buffer starts (handshakes and short transfers never
/// need more); it grows while reads keep filling it.
const RX_START: usize = 2 * MAX_RECORD;
/// Most opened records waiting to be consumed (the bound on a session's
/// bookkeeping, whatever the records' sizes).
pub(super) const MAX_READY: usize = 1024;

/// Received bytes: records are opened in place where they landed, and
/// their plaintext is handed out from there.
pub(super) struct Rx {
    pub(super) buf: Vec<u8>,
    /// The first byte not yet opened (a record boundary).
    pub(super) parsed: usize,
    /// The end of what the socket gave.
    pub(super) end: usize,
    /// Opened plaintext not yet consumed, in order: (offset, length); at
    /// most [`MAX_READY`] records, so a flood of tiny records costs the
    /// same per record as large ones.
    pub(super) ready: VecDeque<(usize, usize)>,
    /// The bytes in `ready`.
    pub(super) pending: usize,
    /// The last read filled all the room there was.
    pub(super) filled: bool,
}

impl Rx {
    pub(super) fn new() -> Rx {
        Rx {
            buf: Vec::new(),
            parsed: 0,
            end: 0,
            ready: VecDeque::with_capacity(BATCH_RECORDS),
            pending: 0,
            filled: false,
        }
    }

    /// Bytes received but not yet opened (or, during the handshake, not
    /// yet consumed by rustls).
    pub(super) fn unread_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.parsed..self.end]
    }

    pub(super) fn discard(&mut self, n: usize) {
        self.parsed += n;
    }

    /// Reads more from the socket behind what is there (all opened
    /// plaintext must have been consumed); 0 at the end of the stream.
    pub(super) fn fill(&mut self, sock: &mut SockIo) -> io::Result<usize> {
        debug_assert!(self.ready.is_empty());
        if self.buf.is_empty() {
            self.buf = vec![0u8; RX_START];
        } else if self.filled && self.buf.len() < RX_MAX {
            // The last read filled the buffer: reads can be larger.
            self.buf.resize((self.buf.len() * 4).min(RX_MAX), 0);
        }
        // Only a partial record stays: move it to the front.
        if self.parsed > 0 {
            self.buf.copy_within(self.parsed..self.end, 0);
            self.end -= self.parsed;
            self.parsed = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(
                (self.buf.len() * 2).min(RX_MAX.max(self.end + MAX_RECORD)),
                0,
            );
        }
        let n = sock.read(&mut self.buf[self.end..])?;
        self.filled = self.end + n == self.buf.len();
        self.end += n;
        Ok(n)
    }

    /// Length of the whole record at `parsed`, if it is all here.
    pub(super) fn complete_record(&self) -> Result<Option<usize>, Fatal> {
        Ok(record::record_len(&self.buf[self.parsed..self.end])?
            .filter(|&n| self.parsed + n <= self.end))
    }

    /// Opens the whole records received (up to [`MAX_READY`] waiting);
    /// false if there was none.
    pub(super) fn open_all(&mut self, tls: &mut Tls) -> Result<bool, Fatal> {
        let mut any = false;
        while !tls.peer_closed() && self.ready.len() < MAX_READY {
            let Some(n) = self.complete_record()? else {
                break;
            };
            let at = self.parsed;
            let got = tls.open(&mut self.buf[at..at + n])?;
            self.parsed += n;
            any = true;
            if let Inbound::Data(len) = got {
                self.ready.push_back((at + record::HEADER, len));
                self.pending += len;
            }
        }
        Ok(any)
    }

    /// Copies opened plaintext into `out`.
    pub(super) fn copy_out(&mut self, out: &mut [u8]) -> usize {
        let mut got = 0;
        while got < out.len() {
            let Some(&(at, len)) = self.ready.front() else {
                break;
            };
            let n = len.min(out.len() - got);
            out[got..got + n].copy_from_slice(&self.buf[at..at + n]);
            got += n;
            self.consume(n);
        }
        got
    }

    /// The opened plaintext, at most `max` bytes, as slices in place.
    pub(super) fn slices(&self, max: usize) -> Vec<IoSlice<'_>> {
        let mut left = max;
        let mut v = Vec::with_capacity(self.ready.len().min(MAX_READY));
        for &(at, len) in &self.ready {
            if left == 0 {
                break;
            }
            let n = len.min(left);
            v.push(IoSlice::new(&self.buf[at..at + n]));
            left -= n;
        }
        v
    }

    /// Drops `n` bytes of opened plaintext from the front.
    pub(super) fn consume(&mut self, mut n: usize) {
        n = n.min(self.pending);
        self.pending -= n;
        while n > 0 {
            let Some(front) = self.ready.front_mut() else {
                return;
            };
            let k = n.min(front.1);
            front.0 += k;
            front.1 -= k;
            n -= k;
            if front.1 == 0 {
                self.ready.pop_front();
            }
        }
    }

    pub(super) fn pending(&self) -> usize {
        self.pending
    }
}
