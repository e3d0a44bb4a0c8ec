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

use super::{Outcome, Shared, lock};
use crate::events::Event;
use crate::sys;

/// Most accepted sockets that have sent nothing yet (each costs only a
/// descriptor); past it the oldest is dropped.
pub const MAX_BARE: usize = 1024;

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
}

impl Conns {
    fn add(&self, id: u64, sock: &TcpStream) {
        if let Ok(c) = sock.try_clone() {
            let conn = Conn {
                sock: c,
                handshake_since: Some(Instant::now()),
            };
            lock(&self.map).insert(id, conn);
        }
        self.handshaking.fetch_add(1, Ordering::SeqCst);
    }

    /// The handshake of `id` finished: it now counts as established. False
    /// when `max_conns` are already established (the caller refuses it).
    pub fn established(&self, id: u64, max: usize) -> bool {
        if let Some(c) = lock(&self.map).get_mut(&id) {
            c.handshake_since = None;
        }
        self.handshaking.fetch_sub(1, Ordering::SeqCst);
        let prev = self.established.fetch_add(1, Ordering::SeqCst);
        if prev >= max {
            self.established.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Forgets `id`; `counted` says whether it was established.
    pub fn remove(&self, id: u64, counted: bool) {
        let was = lock(&self.map).remove(&id);
        if counted {
            self.established.fetch_sub(1, Ordering::SeqCst);
        } else if was.is_some_and(|c| c.handshake_since.is_some()) {
            self.handshaking.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Cuts the connection whose handshake has run longest.
    fn evict_oldest_handshake(&self) -> Option<SocketAddr> {
        let map = lock(&self.map);
        let (_, c) = map
            .iter()
            .filter(|(_, c)| c.handshake_since.is_some())
            .min_by_key(|(_, c)| c.handshake_since)?;
        sys::reset_on_close(&c.sock);
        let _ = c.sock.shutdown(Shutdown::Both);
        c.sock.peer_addr().ok()
    }

    /// Resets every connection (shutdown).
    pub fn reset_all(&self) {
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
    /// Key in [`Conns`].
    pub id: u64,
}

/// A bare socket: accepted, nothing received yet.
struct Bare {
    sock: TcpStream,
    peer: SocketAddr,
    since: Instant,
}

/// The accept side of a server: bare sockets, the worker pool.
pub struct Acceptor {
    bare: VecDeque<Bare>,
    next_id: u64,
    threads: Vec<thread::JoinHandle<()>>,
    jobs: Option<mpsc::Sender<Job>>,
    job_rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    idle: Arc<AtomicUsize>,
    outcomes: mpsc::Sender<Outcome>,
    wake: Arc<UnixStream>,
}

impl Acceptor {
    /// An acceptor whose workers report to `outcomes` and poke `wake`.
    pub fn new(outcomes: mpsc::Sender<Outcome>, wake: Arc<UnixStream>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        Acceptor {
            bare: VecDeque::new(),
            next_id: 0,
            threads: Vec::new(),
            jobs: Some(tx),
            job_rx: Arc::new(Mutex::new(rx)),
            idle: Arc::new(AtomicUsize::new(0)),
            outcomes,
            wake,
        }
    }

    /// Waits up to `wait` for activity, then accepts what is new, drops
    /// bare sockets past their deadline, and hands readable ones to workers.
    pub fn round(
        &mut self,
        listener: &TcpListener,
        wake: &UnixStream,
        wait: Duration,
        sh: &Arc<Shared>,
    ) {
        self.threads.retain(|t| !t.is_finished());
        let wait = match self.bare.front() {
            Some(b) => wait.min(
                (b.since + sh.opts.handshake_timeout).saturating_duration_since(Instant::now()),
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
                self.dispatch(b, sh);
            }
        }
        self.expire(sh);
        self.accept_all(listener, sh);
    }

    fn accept_all(&mut self, listener: &TcpListener, sh: &Arc<Shared>) {
        loop {
            let (sock, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: report, back off briefly, keep serving.
                    sh.events.emit(Event::Error {
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
                    sh,
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

    fn expire(&mut self, sh: &Shared) {
        while let Some(b) = self.bare.front() {
            if b.since.elapsed() < sh.opts.handshake_timeout {
                break;
            }
            if let Some(b) = self.bare.pop_front() {
                sys::reset_on_close(&b.sock);
                sh.events.emit(Event::Refused {
                    peer: b.peer,
                    reason: "timeout",
                    fingerprint: None,
                    message: "no TLS handshake in time".into(),
                });
            }
        }
    }

    fn dispatch(&mut self, b: Bare, sh: &Arc<Shared>) {
        if sh.conns.handshaking.load(Ordering::SeqCst) >= sh.opts.max_handshakes
            && let Some(peer) = sh.conns.evict_oldest_handshake()
        {
            refused(
                sh,
                peer,
                "too many handshakes in progress (--max-handshakes); the oldest was cut",
            );
        }
        let _ = b.sock.set_nonblocking(false);
        let id = self.next_id;
        self.next_id += 1;
        sh.conns.add(id, &b.sock);
        let job = Job {
            sock: b.sock,
            peer: b.peer,
            id,
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
        let worker = Worker {
            shared: sh.clone(),
            outcomes: self.outcomes.clone(),
            idle: self.idle.clone(),
            jobs: self.job_rx.clone(),
            wake: self.wake.clone(),
        };
        let spawned = thread::Builder::new()
            .name("pincat-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || worker.run(job));
        match spawned {
            Ok(t) => self.threads.push(t),
            Err(e) => {
                sh.conns.remove(id, false);
                sh.events.emit(Event::Error {
                    peer: Some(b.peer),
                    code: "accept",
                    message: format!("cannot start a thread for the connection: {e}"),
                });
            }
        }
    }

    /// Stops: resets every connection, ends idle workers, waits (bounded)
    /// for busy ones.
    pub fn stop(mut self, sh: &Shared) {
        sh.conns.reset_all();
        for b in self.bare.drain(..) {
            sys::reset_on_close(&b.sock);
        }
        self.jobs = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn refused(sh: &Shared, peer: SocketAddr, message: &str) {
    sh.events.emit(Event::Refused {
        peer,
        reason: "max-handshakes",
        fingerprint: None,
        message: message.into(),
    });
}

/// A connection thread: handles its first job, then waits for more.
struct Worker {
    shared: Arc<Shared>,
    outcomes: mpsc::Sender<Outcome>,
    idle: Arc<AtomicUsize>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    wake: Arc<UnixStream>,
}

impl Worker {
    fn run(self, first: Job) {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            let outcome = super::handle_conn(&self.shared, job);
            let _ = self.outcomes.send(outcome);
            // A one-shot server ends on this outcome: wake it now. A
            // keep-open one collects outcomes at its next poll timeout.
            if !self.shared.opts.keep_open {
                let _ = (&*self.wake).write(&[1]);
            }
            if self.shared.shutdown.load(Ordering::SeqCst) {
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
