//! `pincat forward`: a TCP service carried over pinned TLS. The exposing
//! end accepts pinned sessions (allowed clients only) and relays each to a
//! plaintext target; the using end listens in plaintext locally and carries
//! each connection to the exposing end. Half-closes pass both ways.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::error::{Error, Result};
use crate::events::{Event, Events, Reason};
use crate::fingerprint::{Fingerprint, Pin};
use crate::identity::Identity;
use crate::net::dialer::{self, DialOptions};
use crate::net::endpoint::{Endpoint, Listen, endpoint_accessors};
use crate::net::listener::{Flow, Job, accept_session};
use crate::session::{Plain, Session};
use crate::sys;

/// How the exposing end behaves.
#[derive(Debug, Clone)]
pub struct ExposeOptions {
    /// Where to listen for pinned TLS, which clients get in, how many are
    /// relayed at once, and how long a connection may stay silent.
    pub listen: Listen,
    /// The plaintext service, `HOST:PORT`.
    pub to: String,
    /// Limit for connecting to the target.
    pub connect_timeout: Duration,
}

/// A bound exposing end.
pub struct Exposer {
    endpoint: Endpoint,
    opts: ExposeOptions,
}

endpoint_accessors!(Exposer, "the using end");

impl Exposer {
    /// Binds `opts.listen`.
    pub fn bind(opts: ExposeOptions, events: Events) -> Result<Exposer> {
        let connect = opts.connect_timeout.is_zero();
        opts.listen
            .check("ExposeOptions", &[("connect_timeout", connect)])?;
        let endpoint = opts.listen.bind(events)?;
        Ok(Exposer { endpoint, opts })
    }

    /// Relays every admitted connection until a shutdown.
    pub fn run(self) -> Result<()> {
        let l = &self.opts.listen;
        let accept = self.endpoint.accept_spec(&l.allow, l.bounds(None))?;
        self.endpoint.announce(
            "pincat forward --local 127.0.0.1:LOCAL_PORT --to",
            "",
            "using",
        );
        let events = self.endpoint.events().clone();
        let to = self.opts.to.clone();
        let (idle, connect) = (l.idle_timeout, self.opts.connect_timeout);
        let handler = Arc::new(move |job: Job| {
            if let Some(mut admitted) = accept_session(&accept, job) {
                let s = &mut admitted.session;
                let peer = s.peer();
                match connect_target(&to, connect) {
                    Ok(tcp) => carry(s, peer, tcp, &to, idle, &events),
                    Err(e) => events.emit(Event::Error {
                        peer: Some(peer),
                        code: "connect",
                        message: format!("{e:#}"),
                    }),
                }
            }
        });
        let r = self.endpoint.run(
            l.limits(),
            handler,
            false,
            |()| Ok(Flow::Continue),
            || Ok(Some(Duration::from_millis(500))),
        );
        match r {
            Err(Error::Interrupted) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn connect_target(to: &str, timeout: Duration) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = to
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {to}"))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => anyhow!("cannot connect to the target {to}: {e}").into(),
        None => anyhow!("{to} resolved to no address").into(),
    })
}

/// Relays one session and one plaintext TCP connection until both
/// directions ended; reports `opened` and `closed`.
fn carry(
    s: &mut Session,
    peer: SocketAddr,
    tcp: TcpStream,
    to: &str,
    idle: Duration,
    events: &Events,
) {
    let start = Instant::now();
    events.emit(Event::Opened {
        peer,
        to: to.to_string(),
    });
    let _ = tcp.set_nodelay(true);
    let mut end = || {
        let _ = tcp.shutdown(Shutdown::Write);
    };
    let plain = Plain {
        input: Some(tcp.as_fd()),
        output: tcp.as_fd(),
        end_output: &mut end,
    };
    let r = s.relay(plain, Some(idle));
    events.emit(crate::session::closed_event(peer, start, &r));
    if r.is_err() {
        // A broken session must not look like a clean end to the service.
        sys::reset_on_close(&tcp);
    }
}

/// How the using end behaves.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    /// Local plaintext address to listen on.
    pub local: SocketAddr,
    /// The exposing end and how to trust it.
    pub dial: DialOptions,
    /// Connections carried at once; more are closed at once.
    pub max_conns: usize,
    /// End a connection where nothing moved this long.
    pub idle_timeout: Duration,
}

/// A bound using end.
pub struct Tunnel {
    listener: TcpListener,
    opts: TunnelOptions,
    events: Arc<Events>,
    stop: Arc<AtomicBool>,
    learned: Arc<Trust>,
}

/// Failed code exchanges after which a using end stops: each one gives
/// whoever answered in place of the exposing end one guess at the code.
const TUNNEL_CODE_FAILURES: u32 = 3;

/// What a using end with a code (and no pin) learned: the exposing end's
/// key once a code exchange confirmed it, which later sessions then pin,
/// and how many exchanges failed.
#[derive(Debug, Default)]
struct Learned {
    key: Option<Pin>,
    failures: u32,
}

/// A using end's [`Learned`], and the turn that makes code exchanges run
/// one at a time until a key is learned (parallel local connections would
/// each give whoever answers one more guess).
#[derive(Debug, Default)]
struct Trust {
    learned: Mutex<Learned>,
    first: Mutex<()>,
}

/// Stops a [`Tunnel`] from another thread.
#[derive(Clone)]
pub struct TunnelStop(Arc<AtomicBool>);

impl TunnelStop {
    /// Asks the tunnel to stop: no new connections, open ones reset.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Tunnel {
    /// Binds the local plaintext address.
    pub fn bind(mut opts: TunnelOptions, events: Events) -> Result<Tunnel> {
        opts.dial.check()?;
        if opts.dial.code.is_some() && opts.dial.identity.is_none() {
            // One key for every session, so the exposing end's events name
            // this using end (the code's confirmation covers the key).
            opts.dial.identity = Some(Identity::generate()?);
        }
        let listener = TcpListener::bind(opts.local)
            .with_context(|| format!("cannot listen on {}", opts.local))?;
        listener
            .set_nonblocking(true)
            .context("cannot configure the listening socket")?;
        Ok(Tunnel {
            listener,
            opts,
            events: Arc::new(events),
            stop: Arc::new(AtomicBool::new(false)),
            learned: Arc::default(),
        })
    }

    /// The bound local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.opts.local)
    }

    /// The using end's own certificate when it has one (the exposing end
    /// allows it), else the first certificate it pins.
    fn own_fingerprint(&self) -> Fingerprint {
        let first_pin = self.opts.dial.pins.iter().find_map(|p| match p {
            Pin::Cert(f) => Some(*f),
            Pin::Spki(_) => None,
        });
        self.opts
            .dial
            .identity
            .as_ref()
            .map(|i| i.fingerprint())
            .or(first_pin)
            .unwrap_or(Fingerprint::from_bytes([0; 32]))
    }

    /// A handle that stops [`Tunnel::run`].
    pub fn stop_handle(&self) -> TunnelStop {
        TunnelStop(self.stop.clone())
    }

    /// Carries every local connection over its own pinned session until
    /// stopped. A local client may speak first or wait: it is handed on at
    /// once.
    pub fn run(self) -> Result<()> {
        self.events.emit(Event::Listening {
            addr: self.local_addr(),
            // Its own certificate, which the exposing end must --allow.
            fingerprint: self.own_fingerprint(),
            dial_addrs: vec![self.local_addr().to_string()],
            command: format!("connect to {} (plaintext, this machine)", self.local_addr()),
            short_command: None,
            code: None,
            open: false,
            hint: "local",
            via: None,
        });
        let active = Arc::new(AtomicUsize::new(0));
        let open: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let next = AtomicU64::new(0);
        while !self.stop.load(Ordering::SeqCst) {
            let ready = sys::poll_readable(&[self.listener.as_fd()], Duration::from_millis(200));
            if ready.is_empty() {
                continue;
            }
            while let Ok((tcp, peer)) = self.listener.accept() {
                let _ = tcp.set_nonblocking(false);
                if active.load(Ordering::SeqCst) >= self.opts.max_conns {
                    self.events.emit(Event::Refused {
                        peer,
                        reason: Reason::MaxConns,
                        fingerprint: None,
                        message: format!(
                            "already {} connections (--max-conns)",
                            self.opts.max_conns
                        ),
                    });
                    continue;
                }
                let id = next.fetch_add(1, Ordering::Relaxed);
                if let Ok(c) = tcp.try_clone() {
                    lock(&open).insert(id, c);
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (opts, events) = (self.opts.clone(), self.events.clone());
                let (active, open) = (active.clone(), open.clone());
                let (learned, stop) = (self.learned.clone(), self.stop.clone());
                std::thread::spawn(move || {
                    tunnel_one(tcp, &opts, &events, &learned, &stop);
                    lock(&open).remove(&id);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
        for c in lock(&open).values() {
            sys::reset_on_close(c);
            let _ = c.shutdown(Shutdown::Both);
        }
        if lock(&self.learned.learned).failures >= TUNNEL_CODE_FAILURES {
            return Err(Error::CodeNotConfirmed(format!(
                "{TUNNEL_CODE_FAILURES} code exchanges with {} failed (a wrong code, or someone in the middle): the tunnel stopped",
                self.opts.dial.addr
            )));
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One local connection: dial the exposing end, then relay. With a code
/// and no pin, the first confirmed key is pinned for the sessions after
/// it, exchanges run one at a time until then, and failed exchanges stop
/// the tunnel after a few.
fn tunnel_one(
    tcp: TcpStream,
    opts: &TunnelOptions,
    events: &Events,
    trust: &Trust,
    stop: &AtomicBool,
) {
    let to = opts.dial.addr.clone();
    let client = tcp.peer_addr().unwrap_or(opts.local);
    let learning = opts.dial.code.is_some() && opts.dial.pins.is_empty();
    let turn = (learning && lock(&trust.learned).key.is_none()).then(|| lock(&trust.first));
    let (key, failures) = {
        let l = lock(&trust.learned);
        (l.key, l.failures)
    };
    if failures >= TUNNEL_CODE_FAILURES {
        sys::reset_on_close(&tcp);
        return;
    }
    let mut dial = opts.dial.clone();
    if let Some(key) = key.filter(|_| learning) {
        dial.pins = vec![key];
    }
    let r = dialer::dial_seen(&dial, events).map_err(|e| e.expecting("`pincat forward --listen`"));
    {
        let mut l = lock(&trust.learned);
        match &r {
            Ok((_, seen)) if learning && l.key.is_none() => l.key = seen.spki(),
            Err(Error::CodeNotConfirmed(_)) => {
                l.failures += 1;
                if l.failures >= TUNNEL_CODE_FAILURES {
                    stop.store(true, Ordering::SeqCst);
                }
            }
            _ => {}
        }
    }
    drop(turn);
    match r {
        Ok((mut s, _)) => carry(&mut s, client, tcp, &to, opts.idle_timeout, events),
        Err(e) => {
            events.emit(Event::Error {
                peer: tcp.peer_addr().ok(),
                code: e.code(),
                message: format!("{e:#}"),
            });
            sys::reset_on_close(&tcp);
        }
    }
}
