//! `pincat serve`: the listener and the taker. Bind, present the identity,
//! optionally pin senders, and store what arrives without ever overwriting
//! or leaving partial files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::error::{Error, Result};
use crate::events::{Events, Transfer};
use crate::fingerprint::Fingerprint;
use crate::identity::Identity;
use crate::net::endpoint::{Bounds, Endpoint};
pub use crate::net::listener::ShutdownHandle;
use crate::net::listener::{AcceptSpec, Flow, Job, Limits, accept_session};
use crate::pair::Gate;
use crate::protocol::Role;
pub use crate::store::Output;
use crate::store::Store;
use crate::take::{Outcome, Taker};

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
    pub allow: Option<crate::verify::Allow>,
    /// When set, only the sender that proves this code gets in (with
    /// neither, anyone who connects).
    pub code: Option<Gate>,
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
            code: None,
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
    pub(crate) fn add(&mut self, t: Transfer) {
        self.transfers += 1;
        self.bytes += t.bytes;
        self.last = Some(t);
    }
}

/// A bound receiver.
pub struct Server {
    endpoint: Endpoint,
    opts: ServeOptions,
    store: Arc<Store>,
}

/// What every connection of one server shares.
struct Shared {
    accept: AcceptSpec,
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
        let store = Store::open(&opts.output).context("cannot open the output")?;
        let endpoint = Endpoint::bind(opts.listen, opts.identity.as_ref(), events)?
            .admitting(&opts.allow, opts.code.clone());
        Ok(Server {
            endpoint,
            opts,
            store: Arc::new(store),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// The fingerprint senders must pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.endpoint.fingerprint()
    }

    /// A handle that stops [`Server::run`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.endpoint.shutdown_handle()
    }

    /// A paste-ready send command for this server (the first address
    /// another machine can dial).
    pub fn send_command(&self) -> String {
        self.endpoint.command("pincat send", self.raw_flag())
    }

    fn raw_flag(&self) -> &'static str {
        match self.opts.raw {
            true => " --raw",
            false => "",
        }
    }

    /// Serves until the first accepted transfer ends (or forever with
    /// `keep_open`), then returns what was received.
    pub fn run(self) -> Result<ServeSummary> {
        let shared = Arc::new(self.shared()?);
        self.endpoint.announce(
            "pincat send",
            self.raw_flag(),
            "sending (add files, or pipe data into it)",
        );
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
            Ok(if keep_open {
                Flow::Continue
            } else {
                Flow::Stop
            })
        };
        let wait_timeout = self.opts.wait_timeout;
        let taker = &shared.taker;
        let idle_limit = || wait_limit(wait_timeout, started, taker.claimed()).map(Some);
        let r = self.endpoint.listening().run(
            limits,
            self.endpoint.events().clone(),
            handler,
            !keep_open,
            on,
            idle_limit,
        );
        // Hold the finalize lock so no thread commits after we return;
        // temporary data of unfinished transfers is removed by its owner.
        let _guard = shared.taker.finalize();
        r.map(|()| summary)
    }

    fn shared(&self) -> Result<Shared> {
        let bounds = Bounds {
            framed: (!self.opts.raw).then_some(Role::Taker),
            handshake_timeout: self.opts.handshake_timeout,
            idle_timeout: self.opts.idle_timeout,
            max_conns: self.opts.max_conns,
        };
        let accept = self.endpoint.accept_spec(&self.opts.allow, bounds)?;
        let taker = Taker::new(
            self.store.clone(),
            self.endpoint.events().clone(),
            self.endpoint.listening().shutdown_flag(),
            self.opts.idle_timeout,
            self.opts.keep_open,
        );
        Ok(Shared { accept, taker })
    }
}

/// How long the accept loop may wait: half a second, or less when
/// `--timeout` is running out before any sender arrived.
pub(crate) fn wait_limit(
    timeout: Option<Duration>,
    started: Instant,
    claimed: bool,
) -> Result<Duration> {
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

/// One connection: handshake and admission, then the taker.
fn handle_conn(sh: &Shared, job: Job) -> Outcome {
    let Some(mut admitted) = accept_session(&sh.accept, job) else {
        return Outcome::NoSession;
    };
    let (s, client) = (&mut admitted.session, admitted.client);
    if sh.accept.framed.is_some() {
        sh.taker.take(s, client)
    } else {
        sh.taker.take_raw(s, client)
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
