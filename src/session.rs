//! A TLS session over TCP with the framing of [`crate::protocol`]: handshake
//! under a deadline, frame reads and writes, and a clean close. After the
//! handshake, records are sealed and opened in place in the session's own
//! buffers (and the caller's DATA frames) by [`crate::record`].

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustls::AlertDescription;

use crate::events::TlsInfo;
use crate::protocol::{self, FrameType, HEADER_LEN, Message, ProtocolError, Role, VERSION_LEN};
use crate::record::{self, Fatal, Inbound, MAX_PLAIN, MAX_RECORD, TAIL, Tls};
use crate::sys;

pub mod exporter;
mod handshake;
mod relay;

pub use handshake::Handshaking;
pub use relay::{Plain, Relayed};

/// Longest a close waits for the peer's own close.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

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

/// Bytes a session's receive buffer grows to: one socket read of this much
/// is opened in place and written out in one vectored call.
const RX_MAX: usize = 256 * 1024 + MAX_RECORD;
/// Where the receive buffer starts (handshakes and short transfers never
/// need more); it grows while reads keep filling it.
const RX_START: usize = 2 * MAX_RECORD;
/// Most opened records waiting to be consumed (the bound on a session's
/// bookkeeping, whatever the records' sizes).
const MAX_READY: usize = 1024;
/// Most records sealed and written in one vectored call.
const BATCH_RECORDS: usize = 64;

/// Most unsent bytes our socket queues (TCP_NOTSENT_LOWAT): one frame
/// waits while the next is read and sealed, so what the kernel copies out
/// is still in cache. Measured on loopback against the kernel's autotuned
/// queue (grown to 4 MiB): 1.14 -> 1.05 CPU-s/GiB, 1684 -> 1851 MB/s.
const UNSENT_MAX: usize = 256 * 1024;

/// The TCP socket behind a session, with an optional deadline for every
/// read.
struct SockIo {
    tcp: TcpStream,
    /// While set, every read must finish by then.
    deadline: Option<Instant>,
    /// The read timeout when no deadline is set.
    idle: Option<Duration>,
    /// A deadline changed the socket's read timeout: restore `idle`.
    stretched: bool,
}

impl SockIo {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
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
    fn drain_after_close(&mut self) {
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
    fn write_all_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
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

/// Received bytes: records are opened in place where they landed, and
/// their plaintext is handed out from there.
struct Rx {
    buf: Vec<u8>,
    /// The first byte not yet opened (a record boundary).
    parsed: usize,
    /// The end of what the socket gave.
    end: usize,
    /// Opened plaintext not yet consumed, in order: (offset, length); at
    /// most [`MAX_READY`] records, so a flood of tiny records costs the
    /// same per record as large ones.
    ready: VecDeque<(usize, usize)>,
    /// The bytes in `ready`.
    pending: usize,
    /// The last read filled all the room there was.
    filled: bool,
}

impl Rx {
    fn new() -> Rx {
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
    fn unread_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.parsed..self.end]
    }

    fn discard(&mut self, n: usize) {
        self.parsed += n;
    }

    /// Reads more from the socket behind what is there (all opened
    /// plaintext must have been consumed); 0 at the end of the stream.
    fn fill(&mut self, sock: &mut SockIo) -> io::Result<usize> {
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
    fn complete_record(&self) -> Result<Option<usize>, Fatal> {
        Ok(record::record_len(&self.buf[self.parsed..self.end])?
            .filter(|&n| self.parsed + n <= self.end))
    }

    /// Opens the whole records received (up to [`MAX_READY`] waiting);
    /// false if there was none.
    fn open_all(&mut self, tls: &mut Tls) -> Result<bool, Fatal> {
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
    fn copy_out(&mut self, out: &mut [u8]) -> usize {
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
    fn slices(&self, max: usize) -> Vec<IoSlice<'_>> {
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
    fn consume(&mut self, mut n: usize) {
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

    fn pending(&self) -> usize {
        self.pending
    }
}

/// A failure while handing received DATA to its sink.
pub enum DataError<E> {
    /// The session failed.
    Wire(WireError),
    /// The sink failed.
    Sink(E),
}

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
        let _ = self.sock.tcp.shutdown(Shutdown::Write);
        self.sock.deadline = Some(Instant::now() + CLOSE_WAIT);
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
pub(crate) mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::verify::{self, Presented};
    use rustls::client::UnbufferedClientConnection;
    use rustls::pki_types::ServerName;
    use rustls::server::UnbufferedServerConnection;
    use std::net::TcpListener;

    /// A client and a server session over loopback.
    pub(crate) fn connected() -> (Session, Session) {
        let id = Identity::generate().unwrap();
        let sc = verify::server_config(&id, None, Presented::default()).unwrap();
        let cc = verify::client_config(Some(id.fingerprint()), None, Presented::default()).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (t, _) = l.accept().unwrap();
            let conn = UnbufferedServerConnection::new(sc).unwrap();
            Session::handshake(conn, t, Duration::from_secs(5)).unwrap()
        });
        let t = TcpStream::connect(addr).unwrap();
        let name = ServerName::try_from(verify::SERVER_NAME).unwrap();
        let conn = UnbufferedClientConnection::new(cc, name).unwrap();
        let c = Session::handshake(conn, t, Duration::from_secs(5)).unwrap();
        (c, h.join().unwrap())
    }

    #[test]
    fn both_ends_queue_at_most_one_frame_unsent() {
        let (c, s) = connected();
        for end in [&c, &s] {
            let lowat = sys::notsent_lowat(end.sock.tcp.as_fd()).unwrap();
            assert_eq!(lowat as usize, UNSENT_MAX);
        }
    }

    #[test]
    fn a_flood_of_tiny_records_keeps_bookkeeping_bounded() {
        let (mut c, mut s) = connected();
        // 20,000 one-byte DATA frames, each byte in a record of its own.
        let frames = 20_000;
        let mut plain = Vec::new();
        for i in 0..frames {
            plain.extend_from_slice(&protocol::encode_header(FrameType::Data, 1));
            plain.push(i as u8);
        }
        let mut wire = Vec::new();
        for b in &plain {
            let mut one = [*b];
            let (h, t) = c.tls.seal(&mut one).unwrap();
            wire.extend_from_slice(&h);
            wire.extend_from_slice(&one);
            wire.extend_from_slice(&t);
        }
        let writer = std::thread::spawn(move || {
            c.sock.tcp.write_all(&wire).unwrap();
            c
        });
        let mut got = Vec::new();
        for _ in 0..frames {
            let (t, len) = s.read_header().unwrap();
            assert_eq!((t, len), (FrameType::Data, 1));
            s.read_data::<()>(len, &mut |io| {
                io.iter().for_each(|b| got.extend_from_slice(b));
                Ok(())
            })
            .ok()
            .unwrap();
            assert!(s.rx.ready.len() <= MAX_READY, "{}", s.rx.ready.len());
            assert_eq!(s.rx.pending, s.rx.ready.iter().map(|r| r.1).sum::<usize>());
        }
        let want: Vec<u8> = (0..frames).map(|i| i as u8).collect();
        assert_eq!(got, want);
        drop(writer.join().unwrap());
    }
}
