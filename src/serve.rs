//! `pincat serve`: the listener and the taker. Bind, present the identity,
//! optionally pin senders, and store what arrives without ever overwriting
//! or leaving partial files.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rustls::ServerConnection;

use crate::error::{Error, Result};
use crate::events::{Event, Events, Reason, Transfer};
use crate::fingerprint::Fingerprint;
use crate::identity::Identity;
use crate::net::listener::{Flow, Job, Limits, Listening};
pub use crate::net::listener::ShutdownHandle;
use crate::protocol::{Message, Refusal, RejectCode};
use crate::session::{Session, WireError};
pub use crate::store::Output;
use crate::store::Store;
use crate::take::{Outcome, Taker};
use crate::verify::{self, Presented};

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
pub type Received = Transfer;

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

impl ServeSummary {
    /// Counts one finished transfer.
    fn add(&mut self, t: Transfer) {
        self.transfers += 1;
        self.bytes += t.bytes;
        self.last = Some(t);
    }
}

/// A bound receiver.
pub struct Server {
    listening: Listening,
    identity: Identity,
    opts: ServeOptions,
    events: Arc<Events>,
    store: Arc<Store>,
}

/// What every connection of one server shares.
struct Shared {
    /// One TLS config for every connection (the verifier records per thread).
    tls: Arc<rustls::ServerConfig>,
    allow: bool,
    raw: bool,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    max_conns: usize,
    events: Arc<Events>,
    taker: Taker,
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
        let listening = Listening::bind(opts.listen)?;
        Ok(Server {
            listening,
            identity,
            opts,
            events: Arc::new(events),
            store: Arc::new(store),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listening.local_addr().unwrap_or(self.opts.listen)
    }

    /// The fingerprint senders must pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// A handle that stops [`Server::run`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.listening.shutdown_handle()
    }

    /// A paste-ready send command for this server (the first address
    /// another machine can dial).
    pub fn send_command(&self) -> String {
        let addrs = self.listening.dial_addrs();
        let addr = addrs.first().map_or("HOST", String::as_str);
        format!("pincat send {addr} --pin {}", self.fingerprint())
    }

    /// Serves until the first accepted transfer ends (or forever with
    /// `keep_open`), then returns what was received.
    pub fn run(self) -> Result<ServeSummary> {
        let shared = Arc::new(self.shared()?);
        self.events.emit(Event::Listening {
            addr: self.local_addr(),
            fingerprint: self.fingerprint(),
            dial_addrs: self.listening.dial_addrs(),
            command: self.send_command(),
            hint: "sending (add files, or pipe data into it)",
        });
        let limits = Limits {
            max_conns: self.opts.max_conns,
            max_handshakes: self.opts.max_handshakes,
            handshake_timeout: self.opts.handshake_timeout,
        };
        let state = shared.clone();
        let handler = Arc::new(move |job: Job| handle_conn(&state, job));
        let started = Instant::now();
        // Counters, not a list: a keep-open server may run for months.
        let mut summary = ServeSummary::default();
        let mut any_transfer = false;
        let keep_open = self.opts.keep_open;
        let on = |o: Outcome| {
            let Outcome::Transfer(r) = o else {
                return Ok(Flow::Continue);
            };
            any_transfer = true;
            match r {
                Ok(t) => summary.add(t),
                Err(e) if !keep_open => return Err(e),
                Err(_) => {}
            }
            Ok(if keep_open { Flow::Continue } else { Flow::Stop })
        };
        let wait_timeout = self.opts.wait_timeout;
        let taker = &shared.taker;
        let idle_limit = || wait_limit(wait_timeout, started, taker.claimed());
        let r = self
            .listening
            .run(limits, self.events.clone(), handler, !keep_open, on, idle_limit);
        // Hold the finalize lock so no thread commits after we return;
        // temporary data of unfinished transfers is removed by its owner.
        let _guard = shared.taker.finalize();
        r.map(|()| summary)
    }

    fn shared(&self) -> Result<Shared> {
        let allow = self.opts.allow.clone().map(Arc::new);
        let tls = verify::server_config(&self.identity, allow.clone(), Presented::per_thread())?;
        let taker = Taker::new(
            self.store.clone(),
            self.events.clone(),
            self.listening.shutdown_flag(),
            self.opts.idle_timeout,
            self.opts.keep_open,
        );
        Ok(Shared {
            tls,
            allow: allow.is_some(),
            raw: self.opts.raw,
            handshake_timeout: self.opts.handshake_timeout,
            idle_timeout: self.opts.idle_timeout,
            max_conns: self.opts.max_conns,
            events: self.events.clone(),
            taker,
        })
    }

}

/// How long the accept loop may wait: half a second, or less when
/// `--timeout` is running out before any sender arrived.
fn wait_limit(timeout: Option<Duration>, started: Instant, claimed: bool) -> Result<Duration> {
    let wait = Duration::from_millis(500);
    let Some(t) = timeout.filter(|_| !claimed) else {
        return Ok(wait);
    };
    let left = t.saturating_sub(started.elapsed());
    if left.is_zero() {
        return Err(Error::Timeout(format!(
            "waiting for a sender: none arrived within {t:?}"
        )));
    }
    Ok(wait.min(left))
}

/// One connection: handshake, admission, then the taker.
fn handle_conn(sh: &Shared, job: Job) -> Outcome {
    let presented = Presented::per_thread();
    presented.clear();
    let Job { sock, peer, ticket } = job;
    let mut s = match handshake(sh, sock, peer, &presented) {
        Ok(s) => s,
        Err(()) => return Outcome::NoTransfer,
    };
    let _ = s.set_idle_timeout(sh.idle_timeout);
    let client = presented.get();
    if !ticket.establish() {
        let message = format!(
            "already {} connections open (--max-conns); try again later",
            sh.max_conns
        );
        if !sh.raw {
            let r = Refusal::new(RejectCode::Busy, message.clone());
            let _ = s.write_message(&Message::Reject(r));
        }
        s.close();
        sh.events.emit(Event::Refused {
            peer,
            reason: Reason::MaxConns,
            fingerprint: client,
            message,
        });
        return Outcome::NoTransfer;
    }
    sh.events.emit(Event::Connected {
        peer,
        fingerprint: client,
    });
    if sh.raw {
        sh.taker.take_raw(&mut s, client)
    } else {
        sh.taker.take(&mut s, client)
    }
}

/// The TLS handshake of an accepted socket; a failure is reported as a
/// refusal with the reason a person can act on.
fn handshake(
    sh: &Shared,
    sock: TcpStream,
    peer: SocketAddr,
    presented: &Presented,
) -> std::result::Result<Session<ServerConnection>, ()> {
    let conn = ServerConnection::new(sh.tls.clone()).map_err(|e| {
        sh.events.emit(Event::Error {
            peer: Some(peer),
            code: "failure",
            message: format!("cannot start TLS: {e}"),
        });
    })?;
    Session::handshake(conn, sock, sh.handshake_timeout).map_err(|e| {
        let (reason, message) = refusal_of(&e, sh.allow, presented);
        sh.events.emit(Event::Refused {
            peer,
            reason,
            fingerprint: presented.get(),
            message,
        });
    })
}

fn refusal_of(e: &WireError, allow: bool, presented: &Presented) -> (Reason, String) {
    match (e, allow) {
        (WireError::Tls(rustls::Error::NoCertificatesPresented), true) => (
            Reason::NotAllowed,
            "the sender presented no client certificate".to_string(),
        ),
        (WireError::Tls(rustls::Error::InvalidCertificate(_)), true) => (
            Reason::NotAllowed,
            match presented.get() {
                Some(fp) => format!("client certificate sha256:{fp} is not allowed"),
                None => "the client certificate was refused".to_string(),
            },
        ),
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
