//! The receiving side: listen, present the identity, optionally pin senders,
//! and store what arrives without ever overwriting or leaving partial files.

mod listener;
pub mod store;

use listener::{Acceptor, Conns, Job};

pub use store::{Fail, Output, Store, Transfer};

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rustls::ServerConnection;

use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::fingerprint::Fingerprint;
use crate::identity::Identity;
use crate::protocol::{self, FrameType, Offer, ProtocolError, RejectCode, TransferKind};
use crate::sys;
use crate::verify::{self, Presented};
use crate::wire::{Session, WireError};

/// The port `serve` listens on when `--listen` is not given.
pub const DEFAULT_PORT: u16 = 7878;

/// How the receiver behaves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Persistent identity; `None` generates an ephemeral one.
    pub identity: Option<Identity>,
    /// When set, only senders presenting one of these certificates get in.
    pub allow: Option<HashSet<Fingerprint>>,
    /// Where received data goes.
    pub output: Output,
    /// Accept many transfers instead of exiting after the first.
    pub keep_open: bool,
    /// Most connections handled at once (past the TLS handshake).
    pub max_conns: usize,
    /// Most TLS handshakes in progress at once; past it the oldest is cut.
    pub max_handshakes: usize,
    /// Limit for a sender's TLS handshake.
    pub handshake_timeout: Duration,
    /// Limit for any single read or write once connected.
    pub idle_timeout: Duration,
    /// Give up if no transfer has started within this time.
    pub wait_timeout: Option<Duration>,
    /// Raw mode: no pincat framing, the TLS plaintext is the data (for openssl, ncat, socat).
    pub raw: bool,
}

impl ServeOptions {
    /// Options with the documented defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        ServeOptions {
            listen,
            identity: None,
            allow: None,
            output: Output::Default,
            keep_open: false,
            max_conns: 256,
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            wait_timeout: None,
            raw: false,
        }
    }
}

impl ServeOptions {
    /// Zero durations and caps are mistakes, as on the command line.
    fn check(&self) -> Result<()> {
        let zero = [
            ("handshake_timeout", self.handshake_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            (
                "wait_timeout",
                self.wait_timeout.is_some_and(|d| d.is_zero()),
            ),
            ("max_conns", self.max_conns == 0),
            ("max_handshakes", self.max_handshakes == 0),
        ];
        match zero.iter().find(|(_, z)| *z) {
            Some((name, _)) => Err(Error::Other(anyhow!(
                "ServeOptions::{name} must not be zero (leave it at its default instead)"
            ))),
            None => Ok(()),
        }
    }
}

/// What one completed transfer stored.
#[derive(Debug, Clone)]
pub struct Received {
    /// The sender.
    pub peer: SocketAddr,
    /// Files stored.
    pub files: u32,
    /// Payload bytes stored.
    pub bytes: u64,
}

/// What a server received over its lifetime.
#[derive(Debug, Clone, Default)]
pub struct ServeSummary {
    /// Transfers stored and confirmed.
    pub transfers: u64,
    /// Payload bytes over all of them.
    pub bytes: u64,
    /// The most recent one (for a one-shot server: the only one).
    pub last: Option<Received>,
}

/// Stops a running server from another thread (e.g. a signal handler).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    wake: Arc<UnixStream>,
}

impl ShutdownHandle {
    /// Asks the server to stop: no new connections; in-flight transfers are
    /// aborted and their temporary files removed.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = (&*self.wake).write(&[1]);
    }
}

/// A bound receiver.
pub struct Server {
    listener: TcpListener,
    identity: Identity,
    opts: ServeOptions,
    events: Arc<Events>,
    shutdown: Arc<AtomicBool>,
    wake_rx: UnixStream,
    wake_tx: Arc<UnixStream>,
    store: Arc<Store>,
}

struct Shared {
    opts: ServeOptions,
    /// One TLS config for every connection (the verifier records per thread).
    tls: Arc<rustls::ServerConfig>,
    allow: Option<Arc<HashSet<Fingerprint>>>,
    events: Arc<Events>,
    shutdown: Arc<AtomicBool>,
    /// One-shot mode: set by the first transfer that is accepted.
    claimed: AtomicBool,
    stdout: Mutex<()>,
    /// Connections held by workers (caps, eviction, shutdown).
    conns: Conns,
    /// Serializes renames into place with the shutdown sweep.
    finalize: Mutex<()>,
    /// The output, opened once.
    store: Arc<Store>,
    /// Memory promised to offers in progress (see [`OFFER_MEMORY`]).
    offer_memory: AtomicU64,
}

enum Outcome {
    /// A transfer was accepted and ended this way.
    Transfer(Result<Received>),
    /// The connection ended before any transfer was accepted.
    NoTransfer,
}

impl Server {
    /// Binds the socket and prepares the identity (generating one if needed).
    ///
    /// ```
    /// use pincat::{Server, ServeOptions, Events};
    /// let server = Server::bind(ServeOptions::new("127.0.0.1:0".parse().unwrap()), Events::silent()).unwrap();
    /// assert_ne!(server.local_addr().port(), 0);
    /// println!("pin: {}", server.fingerprint());
    /// ```
    pub fn bind(opts: ServeOptions, events: Events) -> Result<Server> {
        opts.check()?;
        let identity = match &opts.identity {
            Some(id) => id.clone(),
            None => Identity::generate()?,
        };
        let store = Store::open(&opts.output).context("cannot open the output")?;
        // Bounded by our own caps, not by a low default descriptor limit.
        sys::raise_fd_limit();
        let listener = TcpListener::bind(opts.listen)
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        listener
            .set_nonblocking(true)
            .context("cannot configure the listening socket")?;
        let (wake_rx, wake_tx) = UnixStream::pair().context("cannot create a wake-up pipe")?;
        wake_rx
            .set_nonblocking(true)
            .context("cannot configure the wake-up pipe")?;
        Ok(Server {
            listener,
            identity,
            opts,
            events: Arc::new(events),
            shutdown: Arc::new(AtomicBool::new(false)),
            wake_rx,
            wake_tx: Arc::new(wake_tx),
            store: Arc::new(store),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.opts.listen)
    }

    /// The fingerprint senders must pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// A handle that stops [`Server::run`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.shutdown.clone(),
            wake: self.wake_tx.clone(),
        }
    }

    /// A paste-ready send command for this server.
    pub fn send_command(&self) -> String {
        let addr = self.local_addr();
        let host = if addr.ip().is_unspecified() {
            sys::hostname().unwrap_or_else(|| "HOST".into())
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        format!(
            "pincat send {host}:{} --pin {}",
            addr.port(),
            self.fingerprint()
        )
    }

    /// Serves until the first accepted transfer ends (or forever with
    /// `keep_open`), then returns what was received.
    pub fn run(self) -> Result<ServeSummary> {
        let allow = self.opts.allow.clone().map(Arc::new);
        let tls = verify::server_config(&self.identity, allow.clone(), Presented::per_thread())?;
        self.events.emit(Event::Listening {
            addr: self.local_addr(),
            fingerprint: self.fingerprint(),
            send_command: self.send_command(),
        });
        let shared = Arc::new(Shared {
            tls,
            allow,
            opts: self.opts.clone(),
            events: self.events.clone(),
            shutdown: self.shutdown.clone(),
            claimed: AtomicBool::new(false),
            stdout: Mutex::new(()),
            conns: Conns::default(),
            finalize: Mutex::new(()),
            store: self.store.clone(),
            offer_memory: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel::<Outcome>();
        let started = Instant::now();
        // Counters, not a list: a keep-open server may run for months.
        let mut summary = ServeSummary::default();
        let mut any_transfer = false;
        let mut acceptor = Acceptor::new(tx, self.wake_tx.clone());

        let result: Result<()> = loop {
            // Collect finished connections.
            let mut done = None;
            while let Ok(o) = rx.try_recv() {
                if let Outcome::Transfer(r) = o {
                    any_transfer = true;
                    match r {
                        Ok(rcv) => {
                            summary.transfers += 1;
                            summary.bytes += rcv.bytes;
                            summary.last = Some(rcv);
                        }
                        Err(e) if !self.opts.keep_open => done = Some(Err(e)),
                        Err(_) => {}
                    }
                    if !self.opts.keep_open && done.is_none() {
                        done = Some(Ok(()));
                    }
                }
            }
            if let Some(d) = done {
                break d;
            }
            if self.shutdown.load(Ordering::SeqCst) {
                break Err(Error::Interrupted);
            }
            let mut wait = Duration::from_millis(500);
            if let Some(t) = self.opts.wait_timeout
                && !any_transfer
                && !shared.claimed.load(Ordering::SeqCst)
            {
                let left = t.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break Err(Error::Timeout(format!(
                        "waiting for a sender: none arrived within {t:?}"
                    )));
                }
                wait = wait.min(left);
            }
            acceptor.round(&self.listener, &self.wake_rx, wait, &shared);
        };

        // Stop everything still running: unblock their sockets and wait.
        shared.shutdown.store(true, Ordering::SeqCst);
        acceptor.stop(&shared);
        // Hold the finalize lock so no thread renames a file into place after
        // we return; temporary files of unfinished threads are unnamed or
        // removed by their owners.
        let _guard = lock(&shared.finalize);
        result.map(|()| summary)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handles one connection from handshake to close.
fn handle_conn(sh: &Shared, job: Job) -> Outcome {
    let id = job.id;
    let mut established = false;
    let outcome = serve_conn(sh, job, &mut established);
    sh.conns.remove(id, established);
    outcome
}

/// Handshake, admission and the transfer of one connection.
fn serve_conn(sh: &Shared, job: Job, established: &mut bool) -> Outcome {
    let Job { sock, peer, id } = job;
    let presented = Presented::per_thread();
    presented.clear();
    let conn = match ServerConnection::new(sh.tls.clone()) {
        Ok(c) => c,
        Err(e) => {
            sh.events.emit(Event::Error {
                peer: Some(peer),
                code: "failure",
                message: format!("cannot start TLS: {e}"),
            });
            return Outcome::NoTransfer;
        }
    };
    let mut s = match Session::handshake(conn, sock, sh.opts.handshake_timeout) {
        Ok(s) => s,
        Err(e) => {
            let (reason, message) = match (&e, sh.allow.is_some()) {
                (WireError::Tls(rustls::Error::NoCertificatesPresented), true) => (
                    "not-allowed",
                    "the sender presented no client certificate".to_string(),
                ),
                (WireError::Tls(rustls::Error::InvalidCertificate(_)), true) => (
                    "not-allowed",
                    match presented.get() {
                        Some(fp) => format!("client certificate sha256:{fp} is not allowed"),
                        None => "the client certificate was refused".to_string(),
                    },
                ),
                (WireError::Tls(t), _) if is_signature_failure(t) => (
                    "not-allowed",
                    format!("the sender could not prove it holds the key of its certificate ({t})"),
                ),
                (WireError::Timeout, _) => ("timeout", "no TLS handshake in time".to_string()),
                (e, _) => ("handshake", format!("TLS handshake failed: {e}")),
            };
            sh.events.emit(Event::Refused {
                peer,
                reason,
                fingerprint: presented.get(),
                message,
            });
            return Outcome::NoTransfer;
        }
    };
    let _ = s.set_idle_timeout(sh.opts.idle_timeout);
    if !sh.conns.established(id, sh.opts.max_conns) {
        let message = format!(
            "already {} connections open (--max-conns); try again later",
            sh.opts.max_conns
        );
        if !sh.opts.raw {
            let _ = s.write_frame(
                FrameType::Reject,
                &protocol::encode_reject(RejectCode::Busy, &message),
            );
        }
        s.close();
        sh.events.emit(Event::Refused {
            peer,
            reason: "max-conns",
            fingerprint: presented.get(),
            message,
        });
        return Outcome::NoTransfer;
    }
    *established = true;
    sh.events.emit(Event::Connected {
        peer,
        fingerprint: presented.get(),
    });
    if sh.opts.raw {
        receive_raw(sh, &mut s, presented.get())
    } else {
        receive(sh, &mut s, presented.get())
    }
}

fn is_signature_failure(t: &rustls::Error) -> bool {
    matches!(
        t,
        rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
            | rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            | rustls::Error::PeerMisbehaved(_)
    )
}

/// The receiving protocol on an established session.
fn receive(sh: &Shared, s: &mut Session<ServerConnection>, client: Option<Fingerprint>) -> Outcome {
    let peer = s.peer;
    let refuse = |s: &mut Session<ServerConnection>, code: RejectCode, message: String| {
        refuse_transfer(sh, s, client, code, message, true)
    };

    // Our preamble goes out at once; theirs, and the offer, must follow
    // within one idle period however the bytes trickle in.
    s.set_deadline(Some(Instant::now() + sh.opts.idle_timeout));
    if let Err(e) = s.write_all(&protocol::preamble()) {
        return handshake_phase_error(sh, peer, client, e);
    }
    if let Err(e) = s.read_preamble() {
        return handshake_phase_error(sh, peer, client, e);
    }
    let (offer, _grant) = match read_offer(sh, s) {
        Ok(x) => x,
        Err(Err(e)) => return handshake_phase_error(sh, peer, client, e),
        Err(Ok((code, message))) => return refuse(s, code, message),
    };
    let kind = offer.kind;
    let files = offer.file_count();
    let started = TransferStarted {
        kind,
        names: crate::send::top_names(&offer),
        files,
        total: (kind == TransferKind::Files).then(|| offer.total_bytes()),
    };
    let mut t = match claim(sh, offer) {
        Ok(t) => t,
        Err((code, message)) => return refuse(s, code, message),
    };
    // A stream to stdout is one at a time, in arrival order.
    let _stdout = t.to_stdout().then(|| lock(&sh.stdout));
    let start = Instant::now();
    let result = transfer(sh, s, started, &mut t, &mut Vec::new());
    s.set_deadline(None);
    let kind = match kind {
        TransferKind::Stream => "stream",
        TransferKind::Files => "files",
    };
    conclude(sh, s, t, result, kind, files, start, true)
}

/// Memory all offers held at once may take (decoded names and the frame);
/// an offer past it is refused as busy.
pub const OFFER_MEMORY: u64 = 256 << 20;

/// Memory an offer of `len` encoded bytes may take once decoded (the
/// smallest entry encodes in 16 bytes and decodes into about 100).
fn offer_cost(len: usize) -> u64 {
    (len as u64).saturating_mul(8).max(4096)
}

/// A share of [`OFFER_MEMORY`], given back on drop.
struct Grant<'a> {
    pool: &'a AtomicU64,
    n: u64,
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.n, Ordering::SeqCst);
    }
}

/// Reads and decodes the OFFER, holding a share of the offer memory for
/// as long as the offer lives. `Err(Ok(..))` is a refusal to send back.
fn read_offer<'a>(
    sh: &'a Shared,
    s: &mut Session<ServerConnection>,
) -> std::result::Result<(Offer, Grant<'a>), std::result::Result<Fail, WireError>> {
    let (t, len) = s.read_header().map_err(Err)?;
    if t != FrameType::Offer {
        return Err(Ok((
            RejectCode::Protocol,
            format!("expected an OFFER frame, got {}", t.name()),
        )));
    }
    let n = offer_cost(len);
    let before = sh.offer_memory.fetch_add(n, Ordering::SeqCst);
    let grant = Grant {
        pool: &sh.offer_memory,
        n,
    };
    if before.saturating_add(n) > OFFER_MEMORY {
        return Err(Ok((
            RejectCode::Busy,
            "the receiver is at its memory limit for offers in progress; try again later".into(),
        )));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).map_err(Err)?;
    match Offer::decode(&buf) {
        Ok(o) => Ok((o, grant)),
        Err(ProtocolError::Name(n)) => Err(Ok((RejectCode::BadName, n.to_string()))),
        Err(e) => Err(Ok((RejectCode::Protocol, e.to_string()))),
    }
}

/// Refuses a transfer before any data was stored: tells a framed peer why
/// (a raw peer only sees the close), and reports it.
fn refuse_transfer(
    sh: &Shared,
    s: &mut Session<ServerConnection>,
    client: Option<Fingerprint>,
    code: RejectCode,
    message: String,
    framed: bool,
) -> Outcome {
    if framed {
        let _ = s.write_frame(FrameType::Reject, &protocol::encode_reject(code, &message));
    }
    s.close();
    sh.events.emit(Event::Refused {
        peer: s.peer,
        reason: code.as_str(),
        fingerprint: client,
        message,
    });
    Outcome::NoTransfer
}

/// Takes the one-shot slot (if this server has one) and prepares the output.
/// A refusal here stored nothing, so the slot is given back for the next sender.
fn claim(sh: &Shared, offer: Offer) -> std::result::Result<Transfer, Fail> {
    if sh.shutdown.load(Ordering::SeqCst) {
        return Err((RejectCode::Busy, "the receiver is shutting down".into()));
    }
    if !sh.opts.keep_open && sh.claimed.swap(true, Ordering::SeqCst) {
        return Err((
            RejectCode::Busy,
            "this receiver already took a transfer (run it with --keep-open for more)".into(),
        ));
    }
    sh.store.begin(offer).inspect_err(|_| {
        if !sh.opts.keep_open {
            sh.claimed.store(false, Ordering::SeqCst);
        }
    })
}

/// Names the received data (or undoes it), tells the peer, emits the event.
#[allow(clippy::too_many_arguments)] // One call site each for framed and raw mode.
fn conclude(
    sh: &Shared,
    s: &mut Session<ServerConnection>,
    mut sink: Transfer,
    result: std::result::Result<(), Fail>,
    kind: &'static str,
    files: u32,
    start: Instant,
    framed: bool,
) -> Outcome {
    let peer = s.peer;
    let bytes = sink.written();
    let result = result.and_then(|()| {
        let _g = lock(&sh.finalize);
        if sh.shutdown.load(Ordering::SeqCst) {
            Err((RejectCode::Busy, "the receiver is shutting down".into()))
        } else {
            sink.commit()
        }
    });
    match result {
        Ok(()) => {
            if framed {
                // The data is stored whether or not the sender hears it.
                let receipt = protocol::encode_counts(files, bytes);
                let _ = s.write_frame(FrameType::Receipt, &receipt);
            }
            s.close();
            sh.events.emit(Event::TransferDone {
                peer,
                kind,
                files,
                bytes,
                duration: start.elapsed(),
            });
            Outcome::Transfer(Ok(Received { peer, files, bytes }))
        }
        Err((code, message)) => {
            sink.abort();
            if framed {
                let _ = s.write_frame(FrameType::Error, &protocol::encode_reject(code, &message));
            }
            s.close();
            sh.events.emit(Event::Error {
                peer: Some(peer),
                code: code.as_str(),
                message: message.clone(),
            });
            let err = match code {
                RejectCode::Busy => Error::Interrupted,
                RejectCode::Protocol => Error::Incomplete(message),
                _ => Error::Other(anyhow!(message)),
            };
            Outcome::Transfer(Err(err))
        }
    }
}

/// Raw mode: the plaintext of the pinned session is the data, until the
/// peer's close_notify. No framing, no receipt (the peer is a plain TLS tool).
fn receive_raw(
    sh: &Shared,
    s: &mut Session<ServerConnection>,
    client: Option<Fingerprint>,
) -> Outcome {
    let peer = s.peer;
    let offer = Offer {
        kind: TransferKind::Stream,
        entries: vec![],
    };
    let mut sink = match claim(sh, offer) {
        Ok(sink) => sink,
        Err((code, message)) => return refuse_transfer(sh, s, client, code, message, false),
    };
    let _stdout = sink.to_stdout().then(|| lock(&sh.stdout));
    sh.events.emit(Event::TransferStarted {
        peer,
        kind: "raw",
        names: vec![],
        files: 0,
        bytes: None,
    });
    let start = Instant::now();
    let mut buf = vec![0u8; crate::send::CHUNK];
    let mut filled = 0usize;
    let result = loop {
        if sh.shutdown.load(Ordering::SeqCst) {
            break Err((RejectCode::Busy, "the receiver is shutting down".into()));
        }
        // Gather what is already here into one large write; flush before
        // a read that may block, so interactive streams are not held back.
        if filled > 0 && (filled == buf.len() || !s.has_buffered_input()) {
            if let Err(e) = sink.write(&buf[..filled]) {
                break Err(e);
            }
            filled = 0;
            sh.events.emit(Event::Progress {
                peer,
                bytes: sink.written(),
                total: None,
            });
        }
        match s.read(&mut buf[filled..]) {
            Ok(0) => {
                break sink
                    .write(&buf[..filled])
                    .and_then(|()| sink.finish(0, sink.written()));
            }
            Ok(n) => filled += n,
            Err(WireError::Closed | WireError::Reset) => {
                break Err((
                    RejectCode::Protocol,
                    "the peer closed the connection without close_notify; the data may be truncated and was not stored".into(),
                ));
            }
            Err(e) => break Err(wire_fail(e)),
        }
    };
    conclude(sh, s, sink, result, "raw", 0, start, false)
}

fn handshake_phase_error(
    sh: &Shared,
    peer: SocketAddr,
    client: Option<Fingerprint>,
    e: WireError,
) -> Outcome {
    let (reason, message) = match e {
        WireError::Protocol(p) => ("protocol", p.to_string()),
        WireError::Timeout => ("timeout", "the sender sent no offer in time".to_string()),
        e => (
            "closed",
            format!("the connection ended before an offer: {e}"),
        ),
    };
    sh.events.emit(Event::Refused {
        peer,
        reason,
        fingerprint: client,
        message,
    });
    Outcome::NoTransfer
}

/// Payload a files transfer must move per idle period to count as progress.
const PROGRESS_BYTES: u64 = 64 * 1024;

/// What the `transfer-started` event reports.
struct TransferStarted {
    kind: TransferKind,
    names: Vec<String>,
    files: u32,
    total: Option<u64>,
}

/// Reads DATA frames into the sink until END, checking every count.
fn transfer(
    sh: &Shared,
    s: &mut Session<ServerConnection>,
    started: TransferStarted,
    sink: &mut Transfer,
    buf: &mut Vec<u8>,
) -> std::result::Result<(), Fail> {
    let peer = s.peer;
    let total = started.total;
    if let Err(e) = s.write_frame(FrameType::Accept, &[]) {
        return Err(wire_fail(e));
    }
    sh.events.emit(Event::TransferStarted {
        peer,
        kind: match started.kind {
            TransferKind::Stream => "stream",
            TransferKind::Files => "files",
        },
        names: started.names,
        files: started.files,
        bytes: total,
    });
    // The idle timeout bounds progress: a files transfer must move
    // PROGRESS_BYTES (or finish) per period, a stream a whole frame.
    let mut mark = 0u64;
    s.set_deadline(Some(Instant::now() + sh.opts.idle_timeout));
    loop {
        if sh.shutdown.load(Ordering::SeqCst) {
            return Err((RejectCode::Busy, "the receiver is shutting down".into()));
        }
        let (t, len) = s.read_header().map_err(|e| shutdown_or(sh, e))?;
        // Grow only as large frames arrive: short transfers stay cheap.
        if buf.len() < len {
            buf.resize(len, 0);
        }
        match t {
            FrameType::Data => {
                s.read_exact(&mut buf[..len])
                    .map_err(|e| shutdown_or(sh, e))?;
                sink.write(&buf[..len])?;
                if total.is_none() || sink.written() - mark >= PROGRESS_BYTES {
                    mark = sink.written();
                    s.set_deadline(Some(Instant::now() + sh.opts.idle_timeout));
                }
                sh.events.emit(Event::Progress {
                    peer,
                    bytes: sink.written(),
                    total,
                });
            }
            FrameType::End => {
                s.read_exact(&mut buf[..len]).map_err(wire_fail)?;
                let (files, bytes) = protocol::decode_counts(&buf[..len], "END")
                    .map_err(|e| (RejectCode::Protocol, e.to_string()))?;
                return sink.finish(files, bytes);
            }
            FrameType::Abort => {
                s.read_exact(&mut buf[..len]).map_err(wire_fail)?;
                return Err((
                    RejectCode::Protocol,
                    format!("the sender gave up: {}", protocol::peer_text(&buf[..len])),
                ));
            }
            t => {
                return Err((
                    RejectCode::Protocol,
                    format!("unexpected {} frame during the transfer", t.name()),
                ));
            }
        }
    }
}

/// A read that failed because we are shutting down says so.
fn shutdown_or(sh: &Shared, e: WireError) -> Fail {
    if sh.shutdown.load(Ordering::SeqCst) {
        (RejectCode::Busy, "the receiver is shutting down".into())
    } else {
        wire_fail(e)
    }
}

fn wire_fail(e: WireError) -> Fail {
    match e {
        WireError::Closed | WireError::Reset => (
            RejectCode::Protocol,
            "the sender closed the connection before the end; nothing was stored".into(),
        ),
        WireError::Timeout => (
            RejectCode::Protocol,
            "the sender made no progress within the idle timeout (--idle-timeout); nothing was stored".into(),
        ),
        e => (RejectCode::Protocol, format!("{e}; nothing was stored")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_durations_and_caps_are_refused() {
        let base = ServeOptions::new("127.0.0.1:0".parse().unwrap());
        let mut o = base.clone();
        o.idle_timeout = Duration::ZERO;
        let e = Server::bind(o, Events::silent()).err().unwrap();
        assert!(e.to_string().contains("idle_timeout"), "{e}");
        let mut o = base.clone();
        o.max_handshakes = 0;
        assert!(Server::bind(o, Events::silent()).is_err());
        assert!(Server::bind(base, Events::silent()).is_ok());
    }
}
