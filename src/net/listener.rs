//! Accepting connections. A bare socket waits in the acceptor (no thread)
//! until its first byte arrives; TLS handshakes then run on pooled worker
//! threads under their own cap. When either is full the oldest is dropped,
//! so a flood of idle or slow connections never locks out a sender that
//! completes its handshake; finished handshakes count against `max_conns`.
//!
//! [`Listening`] (this file) binds, runs the accept loop and shuts it down;
//! `acceptor` holds the caps and the worker pool; `admit` turns an accepted
//! socket into a pinned session or a reported refusal.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::events::Events;
use crate::sys;

mod acceptor;
mod admit;

pub use acceptor::{Acceptor, Conns, Handler, Job, Limits, MAX_BARE, Ticket};
pub use admit::{AcceptSpec, accept_session};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

/// A bound listening socket (or, behind a relay only, none) with its
/// wake-up pipe and shutdown flag, and the relay registrations if any.
pub struct Listening {
    listener: Option<TcpListener>,
    relay: Option<crate::net::relay::Registrar>,
    /// The relay's address, for a listener that binds nothing.
    relay_addr: Option<SocketAddr>,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
    wake_rx: UnixStream,
    wake_tx: Arc<UnixStream>,
    ended: Arc<Mutex<Option<crate::Error>>>,
}

impl Listening {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> crate::Result<Listening> {
        Self::bind_maybe(Some(addr))
    }

    /// Binds `addr`, or nothing (a listener that is reached only through a
    /// relay: see [`Listening::register_at`]).
    pub fn bind_maybe(addr: Option<SocketAddr>) -> crate::Result<Listening> {
        use anyhow::Context;
        // Bounded by our own caps, not by a low default descriptor limit.
        sys::raise_fd_limit();
        let listener = match addr {
            Some(addr) => {
                let l =
                    TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
                l.set_nonblocking(true)
                    .context("cannot configure the listening socket")?;
                Some(l)
            }
            None => None,
        };
        let (wake_rx, wake_tx) = UnixStream::pair().context("cannot create a wake-up pipe")?;
        wake_rx
            .set_nonblocking(true)
            .context("cannot configure the wake-up pipe")?;
        Ok(Listening {
            listener,
            relay: None,
            relay_addr: None,
            shutdown: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            wake_rx,
            wake_tx: Arc::new(wake_tx),
            ended: Arc::default(),
        })
    }

    /// Keeps `slots` registrations for `token` waiting at `relay`: each
    /// one the relay pairs comes to the accept loop as an accepted socket.
    /// Fails when the relay cannot be resolved.
    pub fn register_at(
        &mut self,
        relay: &str,
        token: String,
        slots: usize,
        events: Arc<Events>,
    ) -> crate::Result<()> {
        use anyhow::Context;
        use std::net::ToSocketAddrs;
        let addr = relay
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| crate::Error::Connect {
                addr: relay.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "cannot resolve the relay",
                ),
                listener: "the relay",
            })?;
        let timeout = Duration::from_secs(10);
        let r = crate::net::relay::Registrar::start(
            relay,
            token,
            slots,
            timeout,
            self.wake_tx.clone(),
            events,
        )
        .context("cannot start the relay registrations")?;
        self.relay = Some(r);
        self.relay_addr = Some(addr);
        Ok(())
    }

    /// The bound address (with the real port when 0 was asked for); for a
    /// listener that binds nothing, its relay's.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr().ok(),
            None => self.relay_addr,
        }
    }

    /// Whether a port is bound (else only a relay reaches this listener).
    pub fn bound(&self) -> bool {
        self.listener.is_some()
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
                Ok(Some(wait)) => {
                    if let Some(r) = &self.relay {
                        acceptor.adopt(r.paired());
                    }
                    acceptor.round(self.listener.as_ref(), &self.wake_rx, wait);
                    if let Some(r) = &self.relay {
                        acceptor.adopt(r.paired());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        // Stop everything still running: unblock their sockets and wait.
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(r) = &self.relay {
            r.stop();
        }
        acceptor.stop();
        result
    }

    /// `HOST:PORT` forms another machine can dial: when bound to a
    /// wildcard address, the machine's non-loopback interface addresses
    /// (IPv6 in brackets), then its host name; else the bound address.
    pub fn dial_addrs(&self) -> Vec<String> {
        let Some(addr) = self.listener.as_ref().and_then(|l| l.local_addr().ok()) else {
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
