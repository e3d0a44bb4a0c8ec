//! The accept side of a listener: bare sockets waiting for their first byte,
//! the caps on handshakes and connections (the oldest is cut when full), and
//! the pool of worker threads that run each connection's handler.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::lock;
use crate::events::{Event, Events, Reason};
use crate::sys;

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
    /// Whether a relay paired it (the peer address is the relay's).
    pub relayed: bool,
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
    relayed: bool,
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
    pub fn round(&mut self, listener: Option<&TcpListener>, wake: &UnixStream, wait: Duration) {
        let wait = match self.bare.front() {
            Some(b) => wait.min(
                (b.since + self.limits.handshake_timeout).saturating_duration_since(Instant::now()),
            ),
            None => wait,
        };
        let ready = {
            // The wake-up pipe, the listener (when bound), then the bare
            // sockets.
            let mut fds: Vec<BorrowedFd<'_>> = vec![wake.as_fd()];
            fds.extend(listener.map(|l| l.as_fd()));
            let first_bare = fds.len();
            fds.extend(self.bare.iter().map(|b| b.sock.as_fd()));
            (first_bare, sys::poll_readable(&fds, wait))
        };
        let (first_bare, ready) = ready;
        drain(wake);
        // Readable bare sockets go to workers (highest index first, so the
        // removals keep the other indices valid).
        for &i in ready.iter().rev().filter(|&&i| i >= first_bare) {
            if let Some(b) = self.bare.remove(i - first_bare) {
                self.dispatch(b);
            }
        }
        self.expire();
        if let Some(l) = listener {
            self.accept_all(l);
        }
    }

    /// Sockets a relay paired: they wait for their first byte as accepted
    /// ones do.
    pub fn adopt(&mut self, paired: Vec<(TcpStream, SocketAddr)>) {
        for (sock, peer) in paired {
            self.queue(sock, peer, true);
        }
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
            self.queue(sock, peer, false);
        }
    }

    fn queue(&mut self, sock: TcpStream, peer: SocketAddr, relayed: bool) {
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
            relayed,
        });
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
            relayed: b.relayed,
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
