//! The TLS 1.3 handshake on rustls's unbuffered API, in the session's own
//! buffers, and the hand-over of its keys to [`crate::record`].

use std::io;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{CommonState, Error, ExtractedSecrets};

use super::{Rx, SockIo, WireError};
use crate::events::TlsInfo;
use crate::record::{Schedule, Tls};

/// A rustls connection on the unbuffered API, client or server.
pub trait Handshaking: Send + 'static {
    /// rustls's per-side state.
    type Data: 'static;
    /// Processes what is in `incoming` (see rustls's `process_tls_records`).
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// The negotiated parameters.
    fn state(&self) -> &CommonState;
    /// The traffic secrets and key schedule, once the handshake is done.
    fn into_kernel(self) -> Result<(ExtractedSecrets, Box<dyn Schedule>), Error>;
}

impl Handshaking for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn state(&self) -> &CommonState {
        self
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Box<dyn Schedule>), Error> {
        let (s, k): (_, KernelConnection<ClientConnectionData>) =
            self.dangerous_into_kernel_connection()?;
        Ok((s, Box::new(k)))
    }
}

impl Handshaking for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn state(&self) -> &CommonState {
        self
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Box<dyn Schedule>), Error> {
        let (s, k): (_, KernelConnection<ServerConnectionData>) =
            self.dangerous_into_kernel_connection()?;
        Ok((s, Box::new(k)))
    }
}

/// What the handshake hands to the session.
pub(super) struct Established {
    pub tls: Tls,
    pub info: TlsInfo,
    /// The RFC 9266 `tls-exporter` channel binding of this session.
    pub binding: Option<[u8; 32]>,
    /// Application data rustls decrypted before the hand-over.
    pub early: Vec<u8>,
}

/// What to do after one step of the state machine (the state borrows the
/// buffers, so the action runs after it is dropped).
enum Step {
    Send,
    Read,
    Done,
    Again,
    Fail(Error),
}

/// Runs the handshake over `sock`, reading into `rx`; every read is bound
/// by the socket's deadline.
pub(super) fn run<H: Handshaking>(
    mut conn: H,
    sock: &mut SockIo,
    rx: &mut Rx,
) -> Result<Established, WireError> {
    let mut out = Vec::with_capacity(4096);
    let mut early = Vec::new();
    let mut peer_closed = false;
    super::exporter::clear();
    loop {
        let step = step(&mut conn, rx, &mut out, &mut early, &mut peer_closed);
        match step {
            Step::Again => {}
            Step::Send => {
                write_all(sock, &out)?;
                out.clear();
            }
            Step::Read => {
                if rx.fill(sock)? == 0 {
                    return Err(WireError::Closed);
                }
            }
            Step::Done => break,
            Step::Fail(e) => {
                send_alert(&mut conn, rx, sock);
                return Err(WireError::Tls(e));
            }
        }
    }
    let info = TlsInfo::of(conn.state());
    let binding = channel_binding(conn.state());
    let limit = conn
        .state()
        .negotiated_cipher_suite()
        .and_then(|s| s.tls13())
        .map_or(1 << 24, |s| s.common.confidentiality_limit);
    let (secrets, schedule) = conn.into_kernel().map_err(WireError::Tls)?;
    let mut tls = Tls::new(secrets, schedule, limit).map_err(WireError::Tls)?;
    if peer_closed {
        tls.set_peer_closed();
    }
    Ok(Established {
        tls,
        info,
        binding,
        early,
    })
}

/// The exporter of the handshake that just finished on this thread.
fn channel_binding(state: &CommonState) -> Option<[u8; 32]> {
    let secret = super::exporter::take()?;
    let suite = state.negotiated_cipher_suite()?;
    let mut out = [0u8; 32];
    let label = super::exporter::CHANNEL_BINDING_LABEL;
    super::exporter::export(suite, &secret, label, &[], &mut out)?;
    Some(out)
}

/// One call into rustls and what it asks for.
fn step<H: Handshaking>(
    conn: &mut H,
    rx: &mut Rx,
    out: &mut Vec<u8>,
    early: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> Step {
    // rustls is given one record at a time while the handshake lasts, and
    // nothing after it: it would go on decrypting what follows the peer's
    // Finished, and what it takes there (a KeyUpdate it owes an answer to,
    // a message split over records) would be lost at the hand-over.
    let unread = rx.unread_mut();
    let offer = match conn.state().is_handshaking() {
        true => first_record(unread),
        false => 0,
    };
    let offered_all = offer == unread.len();
    let UnbufferedStatus { discard, state } = conn.process(&mut unread[..offer]);
    let next = match state {
        Err(e) => Step::Fail(e),
        Ok(ConnectionState::EncodeTlsData(mut enc)) => {
            let at = out.len();
            out.resize(at + 16 * 1024, 0);
            let r = match enc.encode(&mut out[at..]) {
                Err(EncodeError::InsufficientSize(s)) if s.required_size <= 1 << 20 => {
                    out.resize(at + s.required_size, 0);
                    enc.encode(&mut out[at..])
                }
                r => r,
            };
            match r {
                Ok(n) => {
                    out.truncate(at + n);
                    Step::Again
                }
                Err(e) => {
                    out.truncate(at);
                    Step::Fail(Error::General(e.to_string()))
                }
            }
        }
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            Step::Send
        }
        // More records are here already: offer the next one.
        Ok(ConnectionState::BlockedHandshake) if !offered_all && discard > 0 => Step::Again,
        Ok(ConnectionState::BlockedHandshake) => Step::Read,
        Ok(ConnectionState::ReadTraffic(mut r)) => {
            let mut fail = None;
            while let Some(rec) = r.next_record() {
                match rec {
                    Ok(rec) => early.extend_from_slice(rec.payload),
                    Err(e) => {
                        fail = Some(e);
                        break;
                    }
                }
            }
            fail.map_or(Step::Again, Step::Fail)
        }
        // The peer's close_notify right behind its first data: rustls
        // reads nothing after it, and neither will the record layer.
        Ok(ConnectionState::PeerClosed) => {
            *peer_closed = true;
            Step::Again
        }
        Ok(ConnectionState::WriteTraffic(_)) => Step::Done,
        Ok(_) => Step::Fail(Error::General("unexpected TLS state".into())),
    };
    rx.discard(discard);
    next
}

/// The length of the first whole TLS record in `buf`, or all of `buf` when
/// it holds only part of one (rustls then waits for the rest).
fn first_record(buf: &[u8]) -> usize {
    match buf.get(..5) {
        Some(h) => (5 + u16::from_be_bytes([h[3], h[4]]) as usize).min(buf.len()),
        None => buf.len(),
    }
}

/// After a failed handshake: sends the alert rustls queued, best effort.
/// rustls is only called while it has records queued: it hands those out
/// before it looks at input, and what failed must not be processed again
/// (it asserts it sends one fatal alert at most).
fn send_alert<H: Handshaking>(conn: &mut H, rx: &mut Rx, sock: &mut SockIo) {
    let mut out = Vec::new();
    let (mut early, mut closed) = (Vec::new(), false);
    for _ in 0..8 {
        if !conn.state().wants_write() {
            break;
        }
        if let Step::Fail(_) = step(conn, rx, &mut out, &mut early, &mut closed) {
            break;
        }
    }
    if !out.is_empty() {
        let _ = write_all(sock, &out);
    }
    sock.drain_after_close();
}

fn write_all(sock: &mut SockIo, buf: &[u8]) -> Result<(), WireError> {
    use io::Write;
    sock.tcp.write_all(buf)?;
    Ok(())
}
