//! A TLS session over TCP with the framing of [`crate::protocol`]: handshake
//! under a deadline, frame reads and writes, and a clean close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Longest a close waits for the peer's own close.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

use rustls::{ConnectionCommon, SideData};

use crate::protocol::{self, FrameType, HEADER_LEN, Message, ProtocolError, Role, VERSION_LEN};

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

/// Bytes read from the socket per syscall. rustls asks for a few KiB at a
/// time; serving those from one large read saves most of the syscalls.
const READ_BUF: usize = 256 * 1024;

/// The TCP socket behind a session, with a large read buffer and an
/// optional deadline for every read.
struct SockIo {
    tcp: TcpStream,
    /// While set, every read must finish by then.
    deadline: Option<std::time::Instant>,
    /// The read timeout when no deadline is set.
    idle: std::cell::Cell<Option<Duration>>,
    /// A deadline changed the socket's read timeout: restore `idle`.
    stretched: bool,
    rbuf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl SockIo {
    fn new(tcp: TcpStream) -> Self {
        SockIo {
            tcp,
            deadline: None,
            idle: std::cell::Cell::new(None),
            stretched: false,
            rbuf: Vec::new(),
            pos: 0,
            len: 0,
        }
    }
}

impl Read for SockIo {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            // Start small (handshakes and short transfers never need more),
            // grow while reads keep filling the buffer.
            if self.rbuf.is_empty() {
                self.rbuf = vec![0u8; 16 * 1024];
            } else if self.len == self.rbuf.len() && self.rbuf.len() < READ_BUF {
                self.rbuf.resize(self.rbuf.len() * 4, 0);
            }
            if let Some(d) = self.deadline {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.tcp.set_read_timeout(Some(left))?;
                self.stretched = true;
            } else if self.stretched {
                self.tcp.set_read_timeout(self.idle.get())?;
                self.stretched = false;
            }
            self.len = self.tcp.read(&mut self.rbuf)?;
            self.pos = 0;
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.rbuf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for SockIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.tcp.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Plaintext rustls may buffer before it must be written out: large enough
/// that one DATA frame is encrypted and written in one vectored syscall.
const SEND_BUFFER: usize = 2 * 1024 * 1024;

/// A TLS session on a TCP socket, speaking [`Message`]s.
pub struct Session<C> {
    conn: C,
    sock: SockIo,
    peer: SocketAddr,
    /// A DATA buffer handed back with [`Session::recycle`], reused by the
    /// next DATA read so large frames cost no allocation each.
    spare: Vec<u8>,
}

impl<C, S> Session<C>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// Wraps a connected socket and runs the handshake within `timeout`.
    pub fn handshake(conn: C, sock: TcpStream, timeout: Duration) -> Result<Self, WireError> {
        let peer = sock.peer_addr().map_err(WireError::Io)?;
        sock.set_nodelay(true).map_err(WireError::Io)?;
        let mut conn = conn;
        conn.set_buffer_limit(Some(SEND_BUFFER));
        let mut s = Session {
            conn,
            sock: SockIo::new(sock),
            peer,
            spare: Vec::new(),
        };
        // The deadline is enforced on every socket read (rustls may read
        // many times within one complete_io), so a peer trickling bytes
        // cannot stretch the handshake.
        s.sock.deadline = Some(std::time::Instant::now() + timeout);
        s.sock
            .tcp
            .set_write_timeout(Some(timeout))
            .map_err(WireError::Io)?;
        while s.conn.is_handshaking() {
            match s.conn.complete_io(&mut s.sock) {
                Ok((0, 0)) if s.conn.is_handshaking() => return Err(WireError::Closed),
                Ok(_) => {}
                Err(e) => {
                    let e = WireError::from(e);
                    if let WireError::Tls(_) = e {
                        s.flush_alert();
                    }
                    return Err(e);
                }
            }
        }
        s.sock.deadline = None;
        Ok(s)
    }

    /// Sends a pending alert and lets the peer read it: closing a socket with
    /// unread input sends a TCP reset, which can destroy the alert in flight.
    fn flush_alert(&mut self) {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.sock).is_err() {
                return;
            }
        }
        let _ = self.sock.tcp.shutdown(Shutdown::Write);
        self.sock.deadline = Some(Instant::now() + CLOSE_WAIT);
        let mut sink = [0u8; 4096];
        for _ in 0..64 {
            match self.sock.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// True when received bytes wait in our buffer or in rustls, so the
    /// next read will not block on the socket.
    pub fn has_buffered_input(&self) -> bool {
        self.sock.pos < self.sock.len || !self.conn.wants_read()
    }

    /// Sets the idle timeout for every later read and write.
    pub fn set_idle_timeout(&self, t: Duration) -> io::Result<()> {
        self.sock.idle.set(Some(t));
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

    /// The rustls connection (negotiated parameters, peer certificates).
    pub fn tls(&self) -> &C {
        &self.conn
    }

    /// Reads one message that the peer may already have sent, without
    /// writing anything first (after a failed write, rustls would otherwise
    /// try to flush its pending output and fail before reading). Waits at
    /// most `limit`.
    pub fn read_pending_message(&mut self, limit: Duration) -> Option<Message> {
        self.sock.deadline = Some(Instant::now() + limit);
        let mut h = [0u8; HEADER_LEN];
        self.read_unflushed(&mut h)?;
        let (t, len) = protocol::decode_header(&h).ok()?;
        let mut payload = vec![0u8; len];
        self.read_unflushed(&mut payload)?;
        Message::decode(t, payload).ok()
    }

    /// Reads the peer's preamble without writing anything first (see
    /// [`Session::read_pending_message`]); `None` if it never came.
    pub fn read_pending_preamble(
        &mut self,
        ours: Role,
        limit: Duration,
    ) -> Option<Result<(), ProtocolError>> {
        self.sock.deadline = Some(Instant::now() + limit);
        let mut p = [0u8; VERSION_LEN];
        self.read_unflushed(&mut p)?;
        if let Err(e) = protocol::check_preamble(&p) {
            return Some(Err(e));
        }
        let mut role = [0u8; 1];
        self.read_unflushed(&mut role)?;
        Some(protocol::check_role(role[0], ours))
    }

    fn read_unflushed(&mut self, out: &mut [u8]) -> Option<()> {
        let mut got = 0;
        while got < out.len() {
            match self.conn.reader().read(&mut out[got..]) {
                Ok(0) => return None,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.conn.read_tls(&mut self.sock) {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {
                            self.conn.process_new_packets().ok()?;
                        }
                    }
                }
                Err(_) => return None,
            }
        }
        Some(())
    }

    fn stream(&mut self) -> rustls::Stream<'_, C, SockIo> {
        rustls::Stream::new(&mut self.conn, &mut self.sock)
    }

    /// Writes plaintext (framed, or raw mode's bytes) and flushes it.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let mut st = self.stream();
        st.write_all(buf)?;
        st.flush()?;
        Ok(())
    }

    /// Writes one message and flushes it to the socket.
    pub fn write_message(&mut self, m: &Message) -> Result<(), WireError> {
        self.write_all(&m.encode())
    }

    /// Writes a DATA frame whose payload sits at `frame[HEADER_LEN..]`: the
    /// header is filled in place, so the payload is never copied here.
    pub fn write_data(&mut self, frame: &mut [u8]) -> Result<(), WireError> {
        let n = frame.len() - HEADER_LEN;
        frame[..HEADER_LEN].copy_from_slice(&protocol::encode_header(FrameType::Data, n));
        self.write_all(frame)
    }

    /// Writes our preamble in `role` (first thing on a session, both sides).
    pub fn write_preamble(&mut self, role: Role) -> Result<(), WireError> {
        self.write_all(&protocol::preamble_of(role))
    }

    /// Reads exactly `buf.len()` plaintext bytes.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), WireError> {
        self.stream().read_exact(buf)?;
        Ok(())
    }

    /// Reads some plaintext (raw mode); 0 means the peer closed cleanly
    /// (close_notify).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, WireError> {
        Ok(self.stream().read(buf)?)
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
        let mut payload = if t == FrameType::Data {
            std::mem::take(&mut self.spare)
        } else {
            Vec::new()
        };
        payload.resize(len, 0);
        self.read_exact(&mut payload)?;
        Ok(Message::decode(t, payload)?)
    }

    /// Reads the next message.
    pub fn read_message(&mut self) -> Result<Message, WireError> {
        let (t, len) = self.read_header()?;
        self.read_body(t, len)
    }

    /// Gives a DATA payload's buffer back for the next DATA read.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() > self.spare.capacity() {
            self.spare = buf;
        }
    }

    /// Sends close_notify: we write nothing more (raw mode's end of input).
    pub fn finish_writing(&mut self) -> Result<(), WireError> {
        self.conn.send_close_notify();
        self.write_all(&[])
    }

    /// Sends close_notify, then waits briefly (at most [`CLOSE_WAIT`]) for
    /// the peer to close too, so no unread data turns our close into a reset
    /// that could destroy our last frame in flight.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.stream().flush();
        let _ = self.sock.tcp.shutdown(Shutdown::Write);
        self.sock.deadline = Some(Instant::now() + CLOSE_WAIT);
        let mut sink = [0u8; 64 * 1024];
        for _ in 0..1024 {
            match self.stream().read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

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

/// Most received plaintext a relay holds for a slow output before it stops
/// reading the peer (backpressure).
const RELAY_PENDING: usize = 256 * 1024;

/// A relay's progress in each direction.
#[derive(Default)]
struct Duplex {
    pending: Vec<u8>,
    off: usize,
    input_open: bool,
    close_sent: bool,
    write_shut: bool,
    peer_done: bool,
    output_done: bool,
    moved: Relayed,
}

impl<C, S> Session<C>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
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
        let mut inbuf = vec![0u8; 64 * 1024];
        // A second handle for poll(): the session's own is borrowed mutably.
        let sock = self.sock.tcp.try_clone()?;
        loop {
            self.relay_ends(&mut d, &mut *plain.end_output);
            if d.output_done && d.write_shut {
                return Ok(d.moved);
            }
            // Only descriptors with something to wait for: poll() reports a
            // hang-up or an error whatever was asked, and a descriptor we
            // would not act on would then wake us in a busy loop.
            let sock_read = !d.peer_done && d.pending.len() - d.off < RELAY_PENDING;
            let sock_write = self.conn.wants_write();
            let input = plain
                .input
                .filter(|_| d.input_open && !d.close_sent && !sock_write);
            let output_write = d.off < d.pending.len();
            let mut want = Vec::with_capacity(3);
            let at_sock = (sock_read || sock_write).then(|| {
                want.push(sys_interest(sock.as_fd(), sock_read, sock_write));
                want.len() - 1
            });
            let at_input = input.map(|i| {
                want.push(sys_interest(i, true, false));
                want.len() - 1
            });
            let at_output = output_write.then(|| {
                want.push(sys_interest(plain.output, false, true));
                want.len() - 1
            });
            // Bytes already in our socket buffer do not wake poll().
            let buffered = self.sock.pos < self.sock.len && sock_read;
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
                self.flush_nonblocking()?;
            }
            if (at(at_sock).read && sock_read) || buffered {
                self.relay_from_peer(&mut d)?;
            }
            if let Some(i) = input
                && at(at_input).read
            {
                self.relay_to_peer(i, &mut inbuf, &mut d)?;
            }
            if at(at_output).write {
                relay_out(plain.output, &mut d)?;
            }
        }
    }

    /// Ends whatever direction has ended: the output once the peer's data
    /// is all written, ours with close_notify then a TCP half-close.
    fn relay_ends(&mut self, d: &mut Duplex, end_output: &mut dyn FnMut()) {
        if d.peer_done && d.off == d.pending.len() && !d.output_done {
            end_output();
            d.output_done = true;
        }
        if !d.input_open && !d.close_sent {
            self.conn.send_close_notify();
            d.close_sent = true;
            let _ = self.flush_nonblocking();
        }
        if d.close_sent && !self.conn.wants_write() && !d.write_shut {
            let _ = self.sock.tcp.shutdown(Shutdown::Write);
            d.write_shut = true;
        }
    }

    fn flush_nonblocking(&mut self) -> Result<(), WireError> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads what the peer sent (ours and the kernel's buffered bytes) into
    /// `d.pending`, until nothing more is there or `d.pending` is full.
    fn relay_from_peer(&mut self, d: &mut Duplex) -> Result<(), WireError> {
        loop {
            let eof = match self.conn.read_tls(&mut self.sock) {
                Ok(n) => n == 0,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if let Err(e) = self.conn.process_new_packets() {
                self.flush_alert();
                return Err(WireError::Tls(e));
            }
            self.drain_plaintext(d)?;
            if eof {
                // TCP closed (or close_notify seen): clean only if
                // close_notify came first.
                return if d.peer_done {
                    Ok(())
                } else {
                    Err(WireError::Closed)
                };
            }
            if d.peer_done
                || d.pending.len() - d.off >= RELAY_PENDING
                || self.sock.pos == self.sock.len
            {
                return Ok(());
            }
        }
    }

    fn drain_plaintext(&mut self, d: &mut Duplex) -> Result<(), WireError> {
        if d.off == d.pending.len() {
            d.pending.clear();
            d.off = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.conn.reader().read(&mut chunk) {
                Ok(0) => {
                    d.peer_done = true;
                    return Ok(());
                }
                Ok(n) => d.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(WireError::Closed);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn relay_to_peer(
        &mut self,
        input: BorrowedFd<'_>,
        buf: &mut [u8],
        d: &mut Duplex,
    ) -> Result<(), WireError> {
        match crate::sys::read_fd(input, buf) {
            Ok(0) => d.input_open = false,
            Ok(n) => {
                self.conn.writer().write_all(&buf[..n])?;
                d.moved.sent += n as u64;
                self.flush_nonblocking()?;
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
}

fn sys_interest(fd: BorrowedFd<'_>, read: bool, write: bool) -> crate::sys::Interest<'_> {
    crate::sys::Interest { fd, read, write }
}

/// Writes what the peer sent to the output, a bounded piece at a time (a
/// blocking pipe is not made non-blocking: the flag would be shared).
fn relay_out(output: BorrowedFd<'_>, d: &mut Duplex) -> Result<(), WireError> {
    let end = d.pending.len().min(d.off + 64 * 1024);
    match crate::sys::write_fd(output, &d.pending[d.off..end]) {
        Ok(n) => {
            d.off += n;
            d.moved.received += n as u64;
            if d.off == d.pending.len() {
                d.pending.clear();
                d.off = 0;
            } else if d.off >= RELAY_PENDING / 2 {
                // Written bytes go, so the buffer stays bounded however
                // long the stream (not only when the output catches up).
                d.pending.drain(..d.off);
                d.off = 0;
            }
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
