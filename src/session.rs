//! A TLS session over TCP with the framing of [`crate::protocol`]: handshake
//! under a deadline, frame reads and writes, and a clean close. After the
//! handshake, records are sealed and opened in place in the session's own
//! buffers (and the caller's DATA frames) by [`crate::record`].

use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustls::AlertDescription;

use crate::events::TlsInfo;
use crate::protocol::{self, FrameType, HEADER_LEN, Message, ProtocolError, Role, VERSION_LEN};
use crate::record::{self, Fatal, MAX_PLAIN, TAIL, Tls};
use crate::sys;

pub mod exporter;
mod handshake;
mod recv_buffer;
mod relay;
mod socket;

pub use handshake::Handshaking;
use recv_buffer::Rx;
pub(crate) use relay::closed_event;
pub use relay::{Plain, Relayed};
use socket::SockIo;

/// Longest a close waits for the peer's own close.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How long a dialer through a relay waits, at the end, for the listener
/// to close first (see [`Session::through_relay`]).
pub const RELAY_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Failure of a session operation, before it is classified for the user.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// TLS-level failure (alert, bad record, failed verification).
    #[error("TLS error: {0}")]
    Tls(rustls::Error),
    /// The socket timed out.
    #[error("timed out")]
    Timeout,
    /// The peer closed the connection without close_notify (TCP FIN).
    #[error("the peer closed the connection")]
    Closed,
    /// The connection was reset (the peer died or dropped unread data).
    #[error("the connection was reset")]
    Reset,
    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Any other socket error.
    #[error("{0}")]
    Io(io::Error),
}

impl WireError {
    /// True for the alerts a listener sends when it refuses our client
    /// certificate (or the lack of one): with TLS 1.3 they arrive after our
    /// side of the handshake finished.
    pub fn refused_our_certificate(&self) -> bool {
        matches!(
            self,
            WireError::Tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired
                    | rustls::AlertDescription::AccessDenied
                    | rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::CertificateUnknown
                    | rustls::AlertDescription::UnknownCA
                    | rustls::AlertDescription::CertificateExpired
                    | rustls::AlertDescription::UnsupportedCertificate
                    | rustls::AlertDescription::DecryptError,
            ))
        )
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return WireError::Tls(inner.clone());
        }
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => WireError::Timeout,
            io::ErrorKind::UnexpectedEof => WireError::Closed,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => WireError::Reset,
            _ => WireError::Io(e),
        }
    }
}

/// Most records sealed and written in one vectored call.
const BATCH_RECORDS: usize = 64;

/// Most unsent bytes our socket queues (TCP_NOTSENT_LOWAT): one frame
/// waits while the next is read and sealed, so what the kernel copies out
/// is still in cache. Measured on loopback against the kernel's autotuned
/// queue (grown to 4 MiB): 1.14 -> 1.05 CPU-s/GiB, 1684 -> 1851 MB/s.
const UNSENT_MAX: usize = 256 * 1024;

/// A failure while handing received DATA to its sink.
pub enum DataError<E> {
    /// The session failed.
    Wire(WireError),
    /// The sink failed.
    Sink(E),
}

/// How often a side that is still hashing says so (see
/// [`Session::keep_alive_while`]).
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);

/// A TLS session on a TCP socket, speaking [`Message`]s.
pub struct Session {
    sock: SockIo,
    peer: SocketAddr,
    tls: Tls,
    info: TlsInfo,
    binding: Option<[u8; 32]>,
    rx: Rx,
    /// Plaintext rustls had already decrypted at the hand-over.
    early: Vec<u8>,
    early_at: usize,
    /// Records to go out before the next payload (KeyUpdate, alerts).
    pre: Vec<u8>,
    /// Headers and tails of the records being written.
    meta: Vec<([u8; record::HEADER], [u8; TAIL])>,
    /// Where small writes are sealed (they are not the caller's to modify).
    scratch: Vec<u8>,
    close_sent: bool,
}

impl Session {
    /// Wraps a connected socket and runs the handshake within `timeout`.
    pub fn handshake<H: Handshaking>(
        conn: H,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<Self, WireError> {
        let peer = tcp.peer_addr().map_err(WireError::Io)?;
        tcp.set_nodelay(true).map_err(WireError::Io)?;
        // Best effort (an optimisation; kernels before 3.12 lack it).
        let _ = sys::set_notsent_lowat(tcp.as_fd(), UNSENT_MAX as u32);
        tcp.set_write_timeout(Some(timeout))
            .map_err(WireError::Io)?;
        // The deadline is enforced on every socket read, so a peer
        // trickling bytes cannot stretch the handshake.
        let mut sock = SockIo {
            tcp,
            deadline: Some(Instant::now() + timeout),
            idle: None,
            stretched: false,
            half_close: true,
            closes_last: false,
        };
        let mut rx = Rx::new();
        let done = handshake::run(conn, &mut sock, &mut rx)?;
        sock.deadline = None;
        Ok(Session {
            sock,
            peer,
            tls: done.tls,
            info: done.info,
            binding: done.binding,
            rx,
            early: done.early,
            early_at: 0,
            pre: Vec::new(),
            meta: Vec::with_capacity(BATCH_RECORDS),
            scratch: Vec::new(),
            close_sent: false,
        })
    }

    /// The session's RFC 9266 `tls-exporter` channel binding (32 bytes);
    /// `None` only if rustls reported no exporter secret.
    pub fn channel_binding(&self) -> Option<[u8; 32]> {
        self.binding
    }

    /// Sends a fatal alert and lets the peer read it.
    fn flush_alert(&mut self, alert: Option<AlertDescription>) {
        if let Some(a) = alert {
            self.pre.clear();
            if self.tls.alert(a, &mut self.pre).is_ok() {
                let _ = self.sock.tcp.write_all(&self.pre);
            }
            self.pre.clear();
        }
        self.sock.drain_after_close();
    }

    /// A record-layer failure: the peer hears why, the caller gets it.
    fn fail(&mut self, f: Fatal) -> WireError {
        self.flush_alert(f.alert);
        WireError::Tls(f.error)
    }

    /// True when received bytes wait in our buffers, so the next read will
    /// not block on the socket.
    pub fn has_buffered_input(&self) -> bool {
        self.early_at < self.early.len()
            || !self.rx.ready.is_empty()
            || matches!(self.rx.complete_record(), Ok(Some(_)) | Err(_))
    }

    /// Sets the idle timeout for every later read and write.
    pub fn set_idle_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.sock.idle = Some(t);
        self.sock.tcp.set_read_timeout(Some(t))?;
        self.sock.tcp.set_write_timeout(Some(t))
    }

    /// Every read must be done by `deadline` (until it is cleared): a
    /// frame-level bound on progress that a peer trickling bytes cannot
    /// stretch, unlike a per-read timeout.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.sock.deadline = deadline;
    }

    /// The other side's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// This session runs through a relay: our close_notify alone says we
    /// are done writing, with no TCP half-close behind it until the end of
    /// the session (a relay may end both directions on the first FIN), and
    /// the `dialer` lets the listener close first.
    pub(crate) fn through_relay(&mut self, dialer: bool) {
        self.sock.half_close = false;
        self.sock.closes_last = dialer;
    }

    /// The negotiated TLS parameters.
    pub fn tls_info(&self) -> &TlsInfo {
        &self.info
    }

    /// Makes opened plaintext available; false once the peer closed
    /// cleanly (close_notify) and everything it sent was consumed.
    fn pull(&mut self) -> Result<bool, WireError> {
        loop {
            if self.early_at < self.early.len() || !self.rx.ready.is_empty() {
                return Ok(true);
            }
            if self.tls.peer_closed() {
                return Ok(false);
            }
            match self.rx.open_all(&mut self.tls) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(f) => return Err(self.fail(f)),
            }
            if self.rx.fill(&mut self.sock)? == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// Reads some plaintext (raw mode); 0 means the peer closed cleanly
    /// (close_notify).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, WireError> {
        if buf.is_empty() || !self.pull()? {
            return Ok(0);
        }
        if self.early_at < self.early.len() {
            let n = buf.len().min(self.early.len() - self.early_at);
            buf[..n].copy_from_slice(&self.early[self.early_at..self.early_at + n]);
            self.early_at += n;
            return Ok(n);
        }
        Ok(self.rx.copy_out(buf))
    }

    /// Reads exactly `buf.len()` plaintext bytes.
    pub(crate) fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..])? {
                0 => return Err(WireError::Closed),
                n => got += n,
            }
        }
        Ok(())
    }

    /// Hands the next `len` plaintext bytes (a DATA payload) to `sink` where
    /// they were decrypted, a batch of slices at a time: never copied here.
    pub fn read_data<E>(
        &mut self,
        len: usize,
        sink: &mut dyn FnMut(&[IoSlice<'_>]) -> Result<(), E>,
    ) -> Result<(), DataError<E>> {
        let mut left = len;
        while left > 0 {
            if !self.pull().map_err(DataError::Wire)? {
                return Err(DataError::Wire(WireError::Closed));
            }
            let n = if self.early_at < self.early.len() {
                let n = left.min(self.early.len() - self.early_at);
                let at = self.early_at;
                sink(&[IoSlice::new(&self.early[at..at + n])]).map_err(DataError::Sink)?;
                self.early_at += n;
                n
            } else {
                let n = left.min(self.rx.pending());
                sink(&self.rx.slices(n)).map_err(DataError::Sink)?;
                self.rx.consume(n);
                n
            };
            left -= n;
        }
        Ok(())
    }

    /// Reads one message that the peer may already have sent, waiting at
    /// most `limit` (reading never writes anything first).
    pub fn read_pending_message(&mut self, limit: Duration) -> Option<Message> {
        self.sock.deadline = Some(Instant::now() + limit);
        let mut h = [0u8; HEADER_LEN];
        self.read_exact(&mut h).ok()?;
        let (t, len) = protocol::decode_header(&h).ok()?;
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload).ok()?;
        Message::decode(t, payload).ok()
    }

    /// Reads the peer's preamble (see [`Session::read_pending_message`]);
    /// `None` if it never came.
    pub fn read_pending_preamble(
        &mut self,
        ours: Role,
        limit: Duration,
    ) -> Option<Result<(), ProtocolError>> {
        self.sock.deadline = Some(Instant::now() + limit);
        let mut p = [0u8; VERSION_LEN];
        self.read_exact(&mut p).ok()?;
        if let Err(e) = protocol::check_preamble(&p) {
            return Some(Err(e));
        }
        let mut role = [0u8; 1];
        self.read_exact(&mut role).ok()?;
        Some(protocol::check_role(role[0], ours))
    }

    /// Seals `plain` in place as records, behind whatever `self.pre`
    /// holds, and writes them all (a blocking socket).
    fn send_in_place(&mut self, plain: &mut [u8]) -> Result<(), WireError> {
        let mut rest = plain;
        loop {
            let take = rest.len().min(BATCH_RECORDS * MAX_PLAIN);
            let (batch, tail) = rest.split_at_mut(take);
            seal_batch(&mut self.tls, batch, &mut self.pre, &mut self.meta)
                .map_err(WireError::Tls)?;
            let mut io = iovecs(&self.pre, batch, &self.meta);
            let r = self.sock.write_all_vectored(&mut io);
            self.pre.clear();
            r?;
            rest = tail;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Writes plaintext (framed, or raw mode's bytes).
    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(buf);
        let r = self.send_in_place(&mut scratch);
        // Small writes keep their buffer; a large one gives it back.
        if scratch.capacity() <= 64 * 1024 {
            self.scratch = scratch;
        }
        r
    }

    /// Writes one message.
    pub fn write_message(&mut self, m: &Message) -> Result<(), WireError> {
        self.write_all(&m.encode())
    }

    /// Writes a DATA frame whose payload sits at `frame[HEADER_LEN..]`: the
    /// header is filled in and the frame is encrypted where it is (its
    /// plaintext is gone afterwards), so the payload is never copied.
    pub fn write_data(&mut self, frame: &mut [u8]) -> Result<(), WireError> {
        let n = frame.len() - HEADER_LEN;
        frame[..HEADER_LEN].copy_from_slice(&protocol::encode_header(FrameType::Data, n));
        self.send_in_place(frame)
    }

    /// Runs `work` on another thread, sending KEEPALIVE frames every few
    /// seconds until it is done, so that the peer's idle timeout does not
    /// end a session whose side is hashing a large file. A failed write is
    /// left for the next read or write to find.
    pub fn keep_alive_while<T: Send>(&mut self, work: impl FnOnce() -> T + Send) -> T {
        self.keep_alive_every(KEEPALIVE_EVERY, work)
    }

    /// [`Session::keep_alive_while`], with KEEPALIVE every `every`.
    pub fn keep_alive_every<T: Send>(
        &mut self,
        every: Duration,
        work: impl FnOnce() -> T + Send,
    ) -> T {
        use std::sync::mpsc::{RecvTimeoutError, channel};
        std::thread::scope(|sc| {
            let (tx, rx) = channel();
            let worker = sc.spawn(move || {
                let _ = tx.send(work());
            });
            loop {
                match rx.recv_timeout(every) {
                    Ok(v) => return v,
                    Err(RecvTimeoutError::Timeout) => {
                        let _ = self.write_message(&Message::Keepalive);
                    }
                    // It panicked: so does this.
                    Err(RecvTimeoutError::Disconnected) => match worker.join() {
                        Err(p) => std::panic::resume_unwind(p),
                        Ok(()) => unreachable!("the worker sends before it ends"),
                    },
                }
            }
        })
    }

    /// Writes our preamble in `role` (first thing on a session, both sides).
    pub fn write_preamble(&mut self, role: Role) -> Result<(), WireError> {
        self.write_all(&protocol::preamble_of(role))
    }

    /// Reads and checks the peer's preamble: same version, and the other
    /// role than `ours`.
    pub fn read_preamble(&mut self, ours: Role) -> Result<(), WireError> {
        let mut p = [0u8; VERSION_LEN];
        self.read_exact(&mut p)?;
        protocol::check_preamble(&p)?;
        let mut role = [0u8; 1];
        self.read_exact(&mut role)?;
        protocol::check_role(role[0], ours)?;
        Ok(())
    }

    /// Reads the next frame's header: its type and payload length (the
    /// caller may refuse a large one before [`Session::read_body`]).
    pub fn read_header(&mut self) -> Result<(FrameType, usize), WireError> {
        let mut h = [0u8; HEADER_LEN];
        self.read_exact(&mut h)?;
        Ok(protocol::decode_header(&h)?)
    }

    /// Reads and decodes the payload announced by [`Session::read_header`].
    pub fn read_body(&mut self, t: FrameType, len: usize) -> Result<Message, WireError> {
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload)?;
        Ok(Message::decode(t, payload)?)
    }

    /// Reads the next message.
    pub fn read_message(&mut self) -> Result<Message, WireError> {
        let (t, len) = self.read_header()?;
        self.read_body(t, len)
    }

    /// Queues our close_notify in `self.pre` (once).
    fn queue_close_notify(&mut self) -> Result<(), WireError> {
        if !self.close_sent {
            self.close_sent = true;
            self.tls
                .alert(AlertDescription::CloseNotify, &mut self.pre)
                .map_err(WireError::Tls)?;
        }
        Ok(())
    }

    /// Sends close_notify: we write nothing more (raw mode's end of input).
    pub fn finish_writing(&mut self) -> Result<(), WireError> {
        self.queue_close_notify()?;
        self.send_in_place(&mut [])
    }

    /// Sends close_notify, then waits briefly (at most [`CLOSE_WAIT`]) for
    /// the peer to close too, so no unread data turns our close into a reset
    /// that could destroy our last frame in flight.
    pub fn close(&mut self) {
        if self.queue_close_notify().is_ok() {
            let _ = self.send_in_place(&mut []);
        }
        self.pre.clear();
        let wait = match self.sock.closes_last {
            true => RELAY_CLOSE_WAIT,
            false => {
                let _ = self.sock.tcp.shutdown(Shutdown::Write);
                CLOSE_WAIT
            }
        };
        self.sock.deadline = Some(Instant::now() + wait);
        let mut sink = [0u8; 16 * 1024];
        for _ in 0..1024 {
            match self.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Seals `batch` in place, record by record, noting each header and tail
/// in `meta`; a KeyUpdate they need goes to the end of `pre` first.
fn seal_batch(
    tls: &mut Tls,
    batch: &mut [u8],
    pre: &mut Vec<u8>,
    meta: &mut Vec<([u8; record::HEADER], [u8; TAIL])>,
) -> Result<(), rustls::Error> {
    meta.clear();
    tls.prepare(batch.len().div_ceil(MAX_PLAIN), pre)?;
    for chunk in batch.chunks_mut(MAX_PLAIN) {
        meta.push(tls.seal(chunk)?);
    }
    Ok(())
}

/// The wire bytes of `pre` then the sealed records of `batch`.
fn iovecs<'a>(
    pre: &'a [u8],
    batch: &'a [u8],
    meta: &'a [([u8; record::HEADER], [u8; TAIL])],
) -> Vec<IoSlice<'a>> {
    let mut v = Vec::with_capacity(1 + 3 * meta.len());
    if !pre.is_empty() {
        v.push(IoSlice::new(pre));
    }
    for (chunk, (hdr, tail)) in batch.chunks(MAX_PLAIN).zip(meta) {
        v.push(IoSlice::new(hdr));
        v.push(IoSlice::new(chunk));
        v.push(IoSlice::new(tail));
    }
    v
}

#[cfg(test)]
pub(crate) mod tests;
