//! Accepting connections. A bare socket waits in the acceptor (no thread)
//! until its first byte arrives; TLS handshakes then run on pooled worker
//! threads under their own cap. When either is full the oldest is dropped,
//! so a flood of idle or slow connections never locks out a sender that
//! completes its handshake; finished handshakes count against `max_conns`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustls::server::UnbufferedServerConnection;

use crate::events::{Event, Events, Reason};
use crate::fingerprint::Fingerprint;
use crate::pair::{self, AdmitFailure, Ends, Gate, Verdict};
use crate::protocol::{Message, Refusal, RejectCode, Role};
use crate::session::{Session, WireError};
use crate::sys;
use crate::verify::Presented;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The caps and deadlines of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections past the TLS handshake at once.
    pub max_conns: usize,
    /// TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// How long a connection may take to start and finish its handshake.
    pub handshake_timeout: Duration,
}

/// What handles each accepted connection, on a worker thread.
pub type Handler<O> = Arc<dyn Fn(Job) -> O + Send + Sync>;

/// Most accepted sockets that have sent nothing yet (each costs only a
/// descriptor); past it the oldest is dropped.
pub const MAX_BARE: usize = 1024;

/// Most worker threads kept waiting for the next connection.
const MAX_IDLE_WORKERS: usize = 16;

/// Every connection a worker holds, for caps, eviction and shutdown.
#[derive(Default)]
pub struct Conns {
    map: Mutex<HashMap<u64, Conn>>,
    handshaking: AtomicUsize,
    established: AtomicUsize,
}

struct Conn {
    sock: TcpStream,
    /// While the TLS handshake runs: when it started.
    handshake_since: Option<Instant>,
    /// Counted against `max_conns`.
    established: bool,
    /// Cut by the listener (its refusal is already reported).
    evicted: bool,
}

impl Conns {
    fn add(&self, id: u64, sock: &TcpStream) {
        if let Ok(c) = sock.try_clone() {
            let conn = Conn {
                sock: c,
                handshake_since: Some(Instant::now()),
                established: false,
                evicted: false,
            };
            lock(&self.map).insert(id, conn);
        }
        self.handshaking.fetch_add(1, Ordering::SeqCst);
    }

    /// The handshake of `id` finished: it now counts as established. False
    /// when `max` are already established (the caller refuses it).
    fn establish(&self, id: u64, max: usize) -> bool {
        let mut map = lock(&self.map);
        let Some(c) = map.get_mut(&id) else {
            return false;
        };
        if c.handshake_since.take().is_some() {
            self.handshaking.fetch_sub(1, Ordering::SeqCst);
        }
        if self.established.fetch_add(1, Ordering::SeqCst) >= max {
            self.established.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        c.established = true;
        true
    }

    /// Forgets `id`, whatever state it reached.
    fn remove(&self, id: u64) {
        let Some(c) = lock(&self.map).remove(&id) else {
            return;
        };
        if c.handshake_since.is_some() {
            self.handshaking.fetch_sub(1, Ordering::SeqCst);
        }
        if c.established {
            self.established.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Cuts the connection whose handshake has run longest.
    fn evict_oldest_handshake(&self) -> Option<SocketAddr> {
        let mut map = lock(&self.map);
        let (_, c) = map
            .iter_mut()
            .filter(|(_, c)| c.handshake_since.is_some() && !c.evicted)
            .min_by_key(|(_, c)| c.handshake_since)?;
        c.evicted = true;
        sys::reset_on_close(&c.sock);
        let _ = c.sock.shutdown(Shutdown::Both);
        c.sock.peer_addr().ok()
    }

    /// Resets every connection (shutdown).
    fn reset_all(&self) {
        for c in lock(&self.map).values() {
            // Reset rather than close politely: a polite close of a socket
            // whose peer is blocked on a full window leaves the peer waiting
            // for minutes on an orphaned connection.
            sys::reset_on_close(&c.sock);
            let _ = c.sock.shutdown(Shutdown::Both);
        }
    }
}

/// An accepted connection for a worker.
pub struct Job {
    /// The socket.
    pub sock: TcpStream,
    /// The peer.
    pub peer: SocketAddr,
    /// Its place among the listener's connections.
    pub ticket: Ticket,
}

/// A connection's place among the listener's connections.
pub struct Ticket {
    id: u64,
    conns: Arc<Conns>,
    max_conns: usize,
}

impl Ticket {
    /// True when the listener cut this connection (and reported it).
    pub fn evicted(&self) -> bool {
        lock(&self.conns.map)
            .get(&self.id)
            .is_some_and(|c| c.evicted)
    }

    /// Called once the TLS handshake is done: false when `max_conns`
    /// connections are already established (refuse this one as busy).
    pub fn establish(&self) -> bool {
        self.conns.establish(self.id, self.max_conns)
    }
}

/// A bare socket: accepted, nothing received yet.
struct Bare {
    sock: TcpStream,
    peer: SocketAddr,
    since: Instant,
}

/// The accept side of a server: bare sockets, caps, the worker pool.
pub struct Acceptor<O: Send + 'static> {
    bare: VecDeque<Bare>,
    next_id: u64,
    limits: Limits,
    conns: Arc<Conns>,
    events: Arc<Events>,
    handler: Handler<O>,
    jobs: Option<mpsc::Sender<Job>>,
    job_rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    idle: Arc<AtomicUsize>,
    outcomes: mpsc::Sender<O>,
    /// Every worker holds a clone; `stop` waits until all are dropped.
    alive: Option<mpsc::Sender<()>>,
    all_gone: mpsc::Receiver<()>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Poked after each connection when set (a one-shot server ends on it).
    wake: Option<Arc<UnixStream>>,
}

impl<O: Send + 'static> Acceptor<O> {
    /// An acceptor whose workers run `handler` and report to `outcomes`.
    pub fn new(
        limits: Limits,
        events: Arc<Events>,
        handler: Handler<O>,
        outcomes: mpsc::Sender<O>,
        wake: Option<Arc<UnixStream>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let (alive, all_gone) = mpsc::channel();
        Acceptor {
            bare: VecDeque::new(),
            next_id: 0,
            limits,
            conns: Arc::new(Conns::default()),
            events,
            handler,
            jobs: Some(tx),
            job_rx: Arc::new(Mutex::new(rx)),
            idle: Arc::new(AtomicUsize::new(0)),
            outcomes,
            alive: Some(alive),
            all_gone,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            wake,
        }
    }

    /// Waits up to `wait` for activity, then accepts what is new, drops
    /// bare sockets past their deadline, and hands readable ones to workers.
    pub fn round(&mut self, listener: &TcpListener, wake: &UnixStream, wait: Duration) {
        let wait = match self.bare.front() {
            Some(b) => wait.min(
                (b.since + self.limits.handshake_timeout).saturating_duration_since(Instant::now()),
            ),
            None => wait,
        };
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = vec![listener.as_fd(), wake.as_fd()];
            fds.extend(self.bare.iter().map(|b| b.sock.as_fd()));
            sys::poll_readable(&fds, wait)
        };
        drain(wake);
        // Readable bare sockets go to workers (highest index first, so the
        // removals keep the other indices valid).
        for &i in ready.iter().rev().filter(|&&i| i >= 2) {
            if let Some(b) = self.bare.remove(i - 2) {
                self.dispatch(b);
            }
        }
        self.expire();
        self.accept_all(listener);
    }

    fn accept_all(&mut self, listener: &TcpListener) {
        loop {
            let (sock, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: report, back off briefly, keep serving.
                    self.events.emit(Event::Error {
                        peer: None,
                        code: "accept",
                        message: format!("cannot accept a connection: {e}"),
                    });
                    thread::sleep(Duration::from_millis(50));
                    return;
                }
            };
            if self.bare.len() >= MAX_BARE
                && let Some(old) = self.bare.pop_front()
            {
                sys::reset_on_close(&old.sock);
                refused(
                    &self.events,
                    old.peer,
                    "too many connections that sent nothing; the oldest was dropped",
                );
            }
            self.bare.push_back(Bare {
                sock,
                peer,
                since: Instant::now(),
            });
        }
    }

    fn expire(&mut self) {
        while let Some(b) = self.bare.front() {
            if b.since.elapsed() < self.limits.handshake_timeout {
                break;
            }
            if let Some(b) = self.bare.pop_front() {
                sys::reset_on_close(&b.sock);
                self.events.emit(Event::Refused {
                    peer: b.peer,
                    reason: Reason::Timeout,
                    fingerprint: None,
                    message: "no TLS handshake in time".into(),
                });
            }
        }
    }

    fn dispatch(&mut self, b: Bare) {
        if self.conns.handshaking.load(Ordering::SeqCst) >= self.limits.max_handshakes
            && let Some(peer) = self.conns.evict_oldest_handshake()
        {
            refused(
                &self.events,
                peer,
                "too many handshakes in progress (--max-handshakes); the oldest was cut",
            );
        }
        let _ = b.sock.set_nonblocking(false);
        let id = self.next_id;
        self.next_id += 1;
        self.conns.add(id, &b.sock);
        let job = Job {
            sock: b.sock,
            peer: b.peer,
            ticket: Ticket {
                id,
                conns: self.conns.clone(),
                max_conns: self.limits.max_conns,
            },
        };
        if self
            .idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
            && let Some(tx) = &self.jobs
        {
            // An idle worker is reserved for this job; it cannot fail while
            // we hold the receiver alive.
            let _ = tx.send(job);
            return;
        }
        let Some(alive) = self.alive.clone() else {
            return;
        };
        let worker = Worker {
            handler: self.handler.clone(),
            outcomes: self.outcomes.clone(),
            idle: self.idle.clone(),
            jobs: self.job_rx.clone(),
            wake: self.wake.clone(),
            stopping: self.stopping.clone(),
            _alive: alive,
        };
        let spawned = thread::Builder::new()
            .name("pincat-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || worker.run(job));
        if let Err(e) = spawned {
            self.conns.remove(id);
            self.events.emit(Event::Error {
                peer: Some(b.peer),
                code: "accept",
                message: format!("cannot start a thread for the connection: {e}"),
            });
        }
    }

    /// Stops: resets every connection, ends idle workers, and waits (at
    /// most 10 s) until every worker has dropped its guard.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.conns.reset_all();
        for b in self.bare.drain(..) {
            sys::reset_on_close(&b.sock);
        }
        self.jobs = None;
        self.alive = None;
        // Disconnected once the last worker's guard is dropped.
        let _ = self.all_gone.recv_timeout(Duration::from_secs(10));
    }
}

fn refused(events: &Events, peer: SocketAddr, message: &str) {
    events.emit(Event::Refused {
        peer,
        reason: Reason::MaxHandshakes,
        fingerprint: None,
        message: message.into(),
    });
}

/// A connection thread: handles its first job, then waits for more.
struct Worker<O> {
    handler: Handler<O>,
    outcomes: mpsc::Sender<O>,
    idle: Arc<AtomicUsize>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    wake: Option<Arc<UnixStream>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Dropped when the worker ends: [`Acceptor::stop`] waits for all.
    _alive: mpsc::Sender<()>,
}

impl<O> Worker<O> {
    fn run(self, first: Job) {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            let (id, conns) = (job.ticket.id, job.ticket.conns.clone());
            let outcome = (self.handler)(job);
            conns.remove(id);
            let _ = self.outcomes.send(outcome);
            if let Some(w) = &self.wake {
                let _ = (&**w).write(&[1]);
            }
            // A flood's threads go away again: only a few wait for work.
            if self.stopping.load(Ordering::SeqCst)
                || self.idle.load(Ordering::SeqCst) >= MAX_IDLE_WORKERS
            {
                return;
            }
            self.idle.fetch_add(1, Ordering::SeqCst);
            next = lock(&self.jobs).recv().ok();
        }
    }
}

fn drain(s: &UnixStream) {
    let mut buf = [0u8; 64];
    while matches!(io::Read::read(&mut &*s, &mut buf), Ok(n) if n > 0) {}
}

/// What to do after a connection's outcome.
pub enum Flow {
    /// Keep accepting.
    Continue,
    /// Stop the listener and return.
    Stop,
}

/// Stops a running listener from another thread (e.g. a signal handler).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    flag: Arc<std::sync::atomic::AtomicBool>,
    wake: Arc<UnixStream>,
    ended: Arc<Mutex<Option<crate::Error>>>,
}

impl ShutdownHandle {
    /// Asks the listener to stop: no new connections; connections in
    /// progress are reset and their work undone.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = (&*self.wake).write(&[1]);
    }

    /// Stops the listener, which then returns `e` (the first one given).
    pub fn end_with(&self, e: crate::Error) {
        lock(&self.ended).get_or_insert(e);
        self.shutdown();
    }
}

/// A bound listening socket with its wake-up pipe and shutdown flag.
pub struct Listening {
    listener: TcpListener,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
    wake_rx: UnixStream,
    wake_tx: Arc<UnixStream>,
    ended: Arc<Mutex<Option<crate::Error>>>,
}

impl Listening {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> crate::Result<Listening> {
        use anyhow::Context;
        // Bounded by our own caps, not by a low default descriptor limit.
        sys::raise_fd_limit();
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        listener
            .set_nonblocking(true)
            .context("cannot configure the listening socket")?;
        let (wake_rx, wake_tx) = UnixStream::pair().context("cannot create a wake-up pipe")?;
        wake_rx
            .set_nonblocking(true)
            .context("cannot configure the wake-up pipe")?;
        Ok(Listening {
            listener,
            shutdown: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            wake_rx,
            wake_tx: Arc::new(wake_tx),
            ended: Arc::default(),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// A handle that stops [`Listening::run`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.shutdown.clone(),
            wake: self.wake_tx.clone(),
            ended: self.ended.clone(),
        }
    }

    /// The flag a shutdown sets (for work that must notice it).
    pub fn shutdown_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.shutdown.clone()
    }

    /// True once a shutdown was asked for.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Accepts until `on` says stop, a shutdown, or `idle_limit` says the
    /// wait is over (it is asked before every wait and returns how long to
    /// wait, `None` to stop cleanly, or an error to end with). Every connection runs `handler` on a
    /// pooled worker; with `one_shot`, workers wake the loop at once after
    /// each connection.
    pub fn run<O: Send + 'static>(
        &self,
        limits: Limits,
        events: Arc<Events>,
        handler: Handler<O>,
        one_shot: bool,
        mut on: impl FnMut(O) -> crate::Result<Flow>,
        mut idle_limit: impl FnMut() -> crate::Result<Option<Duration>>,
    ) -> crate::Result<()> {
        let (tx, rx) = mpsc::channel::<O>();
        let wake = one_shot.then(|| self.wake_tx.clone());
        let mut acceptor = Acceptor::new(limits, events, handler, tx, wake);
        let result = loop {
            let mut flow = Ok(Flow::Continue);
            while let Ok(o) = rx.try_recv() {
                flow = on(o);
                if !matches!(flow, Ok(Flow::Continue)) {
                    break;
                }
            }
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => break Ok(()),
                Err(e) => break Err(e),
            }
            if self.stopping() {
                break Err(lock(&self.ended)
                    .take()
                    .unwrap_or(crate::Error::Interrupted));
            }
            match idle_limit() {
                Ok(Some(wait)) => acceptor.round(&self.listener, &self.wake_rx, wait),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        // Stop everything still running: unblock their sockets and wait.
        self.shutdown.store(true, Ordering::SeqCst);
        acceptor.stop();
        result
    }

    /// `HOST:PORT` forms another machine can dial: when bound to a
    /// wildcard address, the machine's non-loopback interface addresses
    /// (IPv6 in brackets), then its host name; else the bound address.
    pub fn dial_addrs(&self) -> Vec<String> {
        let Some(addr) = self.local_addr() else {
            return Vec::new();
        };
        let port = addr.port();
        let show = |ip: std::net::IpAddr| match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            v4 => format!("{v4}:{port}"),
        };
        if !addr.ip().is_unspecified() {
            return vec![show(addr.ip())];
        }
        let mut out: Vec<String> = sys::interface_addrs()
            .into_iter()
            .filter(|ip| addr.is_ipv6() || ip.is_ipv4())
            .map(show)
            .collect();
        if let Some(h) = sys::hostname() {
            out.push(format!("{h}:{port}"));
        }
        if out.is_empty() {
            out.push(format!("HOST:{port}"));
        }
        out
    }
}

/// How accepted connections become pinned sessions.
pub struct AcceptSpec {
    /// One TLS config for every connection (the verifier records per thread).
    pub tls: Arc<rustls::ServerConfig>,
    /// Whether clients must present an allowed certificate.
    pub allow: bool,
    /// The data role this listener plays when it speaks the pincat framing
    /// (a busy refusal is then its preamble and a REJECT); `None` for raw.
    pub framed: Option<Role>,
    /// Limit for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Idle limit once connected.
    pub idle_timeout: Duration,
    /// Connections past the handshake at once.
    pub max_conns: usize,
    /// Where refusals are reported.
    pub events: Arc<Events>,
    /// The listener's code, when dialers must prove it.
    pub gate: Option<Gate>,
    /// The listener's certificate (the code's confirmation covers it).
    pub fingerprint: Fingerprint,
}

/// Runs the TLS handshake of an accepted connection and admits it under
/// `max_conns`. Refusals (not allowed, no handshake in time, busy) are
/// reported as events; `None` then.
pub fn accept_session(spec: &AcceptSpec, job: Job) -> Option<(Session, Option<Fingerprint>)> {
    let presented = Presented::per_thread();
    presented.clear();
    let Job { sock, peer, ticket } = job;
    let conn = match UnbufferedServerConnection::new(spec.tls.clone()) {
        Ok(c) => c,
        Err(e) => {
            spec.events.emit(Event::Error {
                peer: Some(peer),
                code: "failure",
                message: format!("cannot start TLS: {e}"),
            });
            return None;
        }
    };
    let mut s = match Session::handshake(conn, sock, spec.handshake_timeout) {
        Ok(s) => s,
        Err(_) if ticket.evicted() => return None,
        Err(e) => {
            let (reason, message) = refusal_of(&e, spec.allow, &presented);
            spec.events.emit(Event::Refused {
                peer,
                reason,
                fingerprint: presented.get(),
                message,
            });
            return None;
        }
    };
    let _ = s.set_idle_timeout(spec.idle_timeout);
    let client = presented.get();
    if !ticket.establish() {
        let message = format!(
            "already {} connections open (--max-conns); try again later",
            spec.max_conns
        );
        if let Some(role) = spec.framed {
            let r = Refusal::new(RejectCode::Busy, message.clone());
            let _ = s
                .write_preamble(role)
                .and_then(|()| s.write_message(&Message::Reject(r)));
        }
        s.close();
        spec.events.emit(Event::Refused {
            peer,
            reason: Reason::MaxConns,
            fingerprint: client,
            message,
        });
        return None;
    }
    if let Some(gate) = &spec.gate {
        let ends = Ends {
            listener: spec.fingerprint,
            dialer: client,
        };
        if let Err(f) = pair::admit(&mut s, gate, &ends, spec.handshake_timeout) {
            refuse_code(spec, &mut s, peer, client, gate, f);
            return None;
        }
    }
    spec.events.emit(Event::Connected {
        peer,
        fingerprint: client,
        tls: s.tls_info().clone(),
    });
    Some((s, client))
}

/// Tells a dialer that did not prove the code why (a pincat dialer without
/// `--code` gets a REJECT it can explain), closes, and reports it.
fn refuse_code(
    spec: &AcceptSpec,
    s: &mut Session,
    peer: SocketAddr,
    client: Option<Fingerprint>,
    gate: &Gate,
    f: AdmitFailure,
) {
    let counted = || {
        format!(
            "failed code attempt {} of {}",
            gate.failures(),
            gate.policy().budget()
        )
    };
    let (reason, message) = match f {
        AdmitFailure::NoCode => {
            if let Some(role) = spec.framed {
                let r = Refusal::new(
                    RejectCode::CodeRequired,
                    "this listener admits only the dialer with its code: add --code CODE from its paste-ready line",
                );
                let _ = s
                    .write_preamble(role)
                    .and_then(|()| s.write_message(&Message::Reject(r)));
            }
            (Reason::Code, "the dialer gave no code".to_string())
        }
        AdmitFailure::NotPake => (
            Reason::Code,
            "the dialer sent something other than the code exchange".to_string(),
        ),
        AdmitFailure::Held(Verdict::Wait(_)) => (
            Reason::Code,
            "a code attempt came too soon after another (it was not answered)".to_string(),
        ),
        AdmitFailure::Held(_) => (
            Reason::Code,
            "no more codes are accepted here (it was not answered)".to_string(),
        ),
        AdmitFailure::WrongCode => (
            Reason::Code,
            format!(
                "the code was not confirmed: a wrong code, or someone in the middle ({})",
                counted()
            ),
        ),
        AdmitFailure::Broken(WireError::Timeout) => (
            Reason::Code,
            format!(
                "the dialer did not finish the code exchange in time ({})",
                counted()
            ),
        ),
        AdmitFailure::Broken(e) => (
            Reason::Code,
            format!(
                "the code was not confirmed: the dialer broke off the exchange, after a wrong code or an abort ({e}; {})",
                counted()
            ),
        ),
        AdmitFailure::Early(WireError::Timeout) => {
            (Reason::Timeout, "no code exchange in time".to_string())
        }
        AdmitFailure::Early(e) => (
            Reason::Closed,
            format!("the connection ended before the code exchange: {e}"),
        ),
    };
    s.close();
    spec.events.emit(Event::Refused {
        peer,
        reason,
        fingerprint: client,
        message,
    });
}

fn refusal_of(e: &WireError, allow: bool, presented: &Presented) -> (Reason, String) {
    match (e, allow) {
        (WireError::Tls(t), true) if presented.accepted() => (
            Reason::NotAllowed,
            format!("the sender could not prove it holds the key of its certificate ({t})"),
        ),
        (WireError::Tls(rustls::Error::NoCertificatesPresented), true) => (
            Reason::NotAllowed,
            "the sender presented no client certificate".to_string(),
        ),
        (WireError::Tls(t @ rustls::Error::InvalidCertificate(c)), true) => {
            // With --allow-ca, say why the CA check refused it too.
            let why = match c {
                rustls::CertificateError::ApplicationVerificationFailure => String::new(),
                _ => crate::verify::ca::explain(t)
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default(),
            };
            (
                Reason::NotAllowed,
                match presented.get() {
                    Some(fp) => format!("client certificate sha256:{fp} is not allowed{why}"),
                    None => format!("the client certificate was refused{why}"),
                },
            )
        }
        (WireError::Tls(t), _) if is_signature_failure(t) => (
            Reason::NotAllowed,
            format!("the sender could not prove it holds the key of its certificate ({t})"),
        ),
        (WireError::Timeout, _) => (Reason::Timeout, "no TLS handshake in time".to_string()),
        (e, _) => (Reason::Handshake, format!("TLS handshake failed: {e}")),
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
