//! `pincat serve`: the listener and the taker. Bind, present the identity,
//! optionally pin senders, and store what arrives without ever overwriting
//! or leaving partial files.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::{Error, Result};
use crate::events::{Event, Events, Transfer};
use crate::net::endpoint::{Endpoint, Listen, endpoint_accessors};
pub use crate::net::listener::ShutdownHandle;
use crate::net::listener::{AcceptSpec, Flow, Job, accept_session};
use crate::protocol::Role;
use crate::store::Store;
pub use crate::store::{Keep, Output};
use crate::take::{Outcome, Taker};

/// The port `serve` listens on when `--listen` is not given.
pub const DEFAULT_PORT: u16 = 7878;

/// How the receiver behaves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen, who gets in (senders), how many at once for how long.
    pub listen: Listen,
    /// Where received data goes.
    pub output: Output,
    /// Accept many transfers instead of exiting after the first.
    pub keep_open: bool,
    /// Give up if no transfer has started within this time.
    pub wait_timeout: Option<Duration>,
    /// Raw mode: no pincat framing, the TLS plaintext is the data (for openssl, ncat, socat).
    pub raw: bool,
    /// What is kept of the sender's tree beyond its bytes (times, links).
    pub keep: Keep,
    /// One-shot: how long to keep listening after an interrupted files
    /// transfer, for the sender to resume it (zero: end at once).
    pub resume_wait: Duration,
    /// Remove the partial files kept for resumes in the output first.
    pub clean: bool,
    /// Hand each transfer to a program (`--exec`): streams without an
    /// output directory, files with one.
    pub exec: Option<crate::exec::ExecOptions>,
}

impl ServeOptions {
    /// Options with the documented defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        ServeOptions {
            listen: Listen::new(listen),
            output: Output::Default,
            keep_open: false,
            wait_timeout: None,
            raw: false,
            keep: Keep::default(),
            resume_wait: DEFAULT_RESUME_WAIT,
            clean: false,
            exec: None,
        }
    }

    /// Zero durations and caps are mistakes, as on the command line.
    fn check(&self) -> Result<()> {
        if self.raw && self.exec.is_some() {
            return Err(anyhow::anyhow!("ServeOptions: raw and exec exclude each other").into());
        }
        let wait = self.wait_timeout.is_some_and(|d| d.is_zero());
        self.listen.check("ServeOptions", &[("wait_timeout", wait)])
    }
}

/// How often a long-running server removes kept partial files past their time.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How long a one-shot server waits for an interrupted transfer's resume.
pub const DEFAULT_RESUME_WAIT: Duration = Duration::from_secs(600);

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

endpoint_accessors!(Server, "senders");

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
        // Under a code made for this run, or an ephemeral identity, what an
        // interrupted transfer kept cannot be resumed once this ends.
        let l = &opts.listen;
        let this_run = l
            .code
            .as_ref()
            .is_some_and(|g| !g.is_fixed() || l.identity.is_none());
        let store = Store::open(&opts.output)
            .context("cannot open the output")?
            .keeping(opts.keep)
            .kept_for_this_run(this_run);
        if opts.clean {
            let n = store.clean_kept();
            events.emit(Event::Warning {
                message: format!("--clean: removed {n} partial file(s) kept for resumes"),
            });
        }
        let endpoint = opts.listen.bind(events)?;
        Ok(Server {
            endpoint,
            opts,
            store: Arc::new(store),
        })
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
        let limits = self.opts.listen.limits();
        let state = shared.clone();
        let handler = Arc::new(move |job: Job| handle_conn(&state, job));
        let started = Instant::now();
        // Counters, not a list: a keep-open server may run for months.
        let mut summary = ServeSummary::default();
        let mut any_transfer = false;
        let keep_open = self.opts.keep_open;
        let events = self.endpoint.events().clone();
        let resume_wait = self.opts.resume_wait;
        // An interrupted one-shot transfer: until when its resume is
        // awaited, and the error to end with if none comes.
        let pending: RefCell<Option<(Instant, Error)>> = RefCell::new(None);
        let on = |o: Outcome| {
            let r = match o {
                Outcome::Transfer(r) => r,
                Outcome::Resumable(e) if !keep_open && !resume_wait.is_zero() => {
                    shared.taker.unclaim();
                    events.emit(Event::Warning {
                        message: format!(
                            "{e}; what arrived is kept: run the same send command again within {} to resume",
                            humantime::format_duration(resume_wait)
                        ),
                    });
                    *pending.borrow_mut() = Some((Instant::now() + resume_wait, e));
                    return Ok(Flow::Continue);
                }
                Outcome::Resumable(e) => Err(e),
                _ => return Ok(Flow::Continue),
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
        let last_sweep = std::cell::Cell::new(Instant::now());
        let idle_limit = || {
            if last_sweep.get().elapsed() >= SWEEP_EVERY {
                last_sweep.set(Instant::now());
                self.store.sweep_kept();
            }
            let expired = matches!(pending.borrow().as_ref(),
                Some((until, _)) if !taker.claimed() && Instant::now() >= *until);
            if expired && let Some((_, e)) = pending.borrow_mut().take() {
                // Minutes later: say again why the receiver ends.
                return Err(match e {
                    Error::Shown(e) => *e,
                    e => e,
                });
            }
            let claimed = taker.claimed() || pending.borrow().is_some();
            wait_limit(wait_timeout, started, claimed).map(Some)
        };
        let r = self
            .endpoint
            .run(limits, handler, !keep_open, on, idle_limit);
        // Hold the finalize lock so no thread commits after we return;
        // temporary data of unfinished transfers is removed by its owner.
        let _guard = shared.taker.finalize();
        self.store.forget_kept_here();
        // No handler outlives the receiver: those still running are ended.
        shared.taker.end_handlers();
        r.map(|()| summary)
    }

    fn shared(&self) -> Result<Shared> {
        let l = &self.opts.listen;
        let framed = (!self.opts.raw).then_some(Role::Taker);
        let accept = self.endpoint.accept_spec(&l.allow, l.bounds(framed))?;
        let taker = Taker::new(
            self.store.clone(),
            self.endpoint.events().clone(),
            self.endpoint.listening().shutdown_flag(),
            l.idle_timeout,
            self.opts.keep_open,
        );
        let exec = match &self.opts.exec {
            Some(x) => {
                let out = match &self.opts.output {
                    Output::Path(p) => Some(p.clone()),
                    Output::Default | Output::Stdout => None,
                };
                let events = self.endpoint.events().clone();
                let stop = self.endpoint.listening().shutdown_flag();
                Some(crate::exec::Exec::new(x.clone(), out, events, stop)?)
            }
            None => None,
        };
        let taker = taker.with_exec(exec);
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
    let (s, client, secret) = (&mut admitted.session, admitted.client, admitted.secret);
    if sh.accept.framed.is_some() {
        sh.taker.take(s, client, secret)
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
        o.listen.idle_timeout = Duration::ZERO;
        let e = Server::bind(o, Events::silent()).err().unwrap();
        assert!(e.to_string().contains("listen.idle_timeout"), "{e}");
        let mut o = base.clone();
        o.wait_timeout = Some(Duration::ZERO);
        let e = Server::bind(o, Events::silent()).err().unwrap();
        assert!(e.to_string().contains("wait_timeout"), "{e}");
        let mut o = base.clone();
        o.listen.max_handshakes = 0;
        assert!(Server::bind(o, Events::silent()).is_err());
        assert!(Server::bind(base, Events::silent()).is_ok());
    }
}
