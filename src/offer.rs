//! `pincat offer` and `pincat get`: the pull direction. The machine that
//! has the data listens and gives (listener + giver); the one that wants it
//! dials and takes (dialer + taker), with the same store and guarantees as
//! `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::error::{Error, Result};
use crate::events::{Event, Events, Transfer};
use crate::fingerprint::Fingerprint;
use crate::give::{self, Plan, Source};
use crate::identity::Identity;
use crate::net::dialer::{self, DialOptions};
use crate::net::endpoint::{Bounds, Endpoint};
use crate::net::listener::{AcceptSpec, Flow, Job, Limits, ShutdownHandle, accept_session};
use crate::pair::Gate;
use crate::protocol::{Message, Refusal, RejectCode, Role};
use crate::serve::ServeSummary;
use crate::session::WireError;
use crate::store::{Output, Store};
use crate::take::{Outcome, Taker};

/// How the offering side behaves.
#[derive(Debug, Clone)]
pub struct OfferOptions {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Persistent identity; `None` generates an ephemeral one.
    pub identity: Option<Identity>,
    /// When set, only takers presenting one of these certificates get in.
    pub allow: Option<crate::verify::Allow>,
    /// When set, only the taker that proves this code gets in (with
    /// neither, anyone who connects).
    pub code: Option<Gate>,
    /// Serve the same files to many takers instead of exiting after one.
    pub keep_open: bool,
    /// With `keep_open`: stop after this many confirmed gets.
    pub max_gets: Option<u64>,
    /// Stop offering this long after starting (exit 0).
    pub expire: Option<Duration>,
    /// Most connections past the TLS handshake at once.
    pub max_conns: usize,
    /// Most TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// Limit for a taker's TLS handshake.
    pub handshake_timeout: Duration,
    /// Idle limit once connected (the receipt included).
    pub idle_timeout: Duration,
    /// Give up if no taker has connected within this time.
    pub wait_timeout: Option<Duration>,
}

impl OfferOptions {
    /// Options with the documented defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        OfferOptions {
            listen,
            identity: None,
            allow: None,
            code: None,
            keep_open: false,
            max_gets: None,
            expire: None,
            max_conns: 256,
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            wait_timeout: None,
        }
    }
}

/// What is offered: paths are planned again for every get (each sees the
/// files as they are then); a stream can be given once.
enum Offered {
    Paths(Vec<PathBuf>),
    Stream(Mutex<Option<Plan>>),
}

/// A bound offering side.
pub struct Offering {
    endpoint: Endpoint,
    opts: OfferOptions,
    offered: Arc<Offered>,
}

/// What every connection of one offering side shares.
struct Shared {
    accept: AcceptSpec,
    offered: Arc<Offered>,
    events: Arc<Events>,
    /// Gets started, against `max_gets`.
    started: AtomicU64,
    max_gets: Option<u64>,
}

impl Offering {
    /// Plans the source (so a missing or unreadable path fails now, before
    /// anyone connects) and binds.
    pub fn bind(opts: OfferOptions, source: Source, events: Events) -> Result<Offering> {
        let offered = match source {
            Source::Paths(paths) => {
                Plan::new(Source::Paths(paths.clone()), &events)?;
                Offered::Paths(paths)
            }
            stream if opts.keep_open => {
                drop(stream);
                return Err(anyhow!(
                    "a stream can be given only once: offer files with --keep-open, or drop it"
                )
                .into());
            }
            stream => Offered::Stream(Mutex::new(Some(Plan::new(stream, &events)?))),
        };
        let endpoint = Endpoint::bind(opts.listen, opts.identity.as_ref(), events)?
            .admitting(&opts.allow, opts.code.clone());
        Ok(Offering {
            endpoint,
            opts,
            offered: Arc::new(offered),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// The fingerprint takers must pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.endpoint.fingerprint()
    }

    /// A handle that stops [`Offering::run`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.endpoint.shutdown_handle()
    }

    /// A paste-ready get command for the other machine.
    pub fn get_command(&self) -> String {
        self.endpoint.command("pincat get", "")
    }

    /// Gives to takers until the first confirmed get (or, with
    /// `keep_open`, until `max_gets`, `expire` or a signal).
    pub fn run(self) -> Result<ServeSummary> {
        let bounds = Bounds {
            framed: Some(Role::Giver),
            handshake_timeout: self.opts.handshake_timeout,
            idle_timeout: self.opts.idle_timeout,
            max_conns: self.opts.max_conns,
        };
        let events = self.endpoint.events().clone();
        let shared = Arc::new(Shared {
            accept: self.endpoint.accept_spec(&self.opts.allow, bounds)?,
            offered: self.offered.clone(),
            events,
            started: AtomicU64::new(0),
            max_gets: self.opts.max_gets,
        });
        self.endpoint.announce("pincat get", "", "receiving");
        let limits = Limits {
            max_conns: self.opts.max_conns,
            max_handshakes: self.opts.max_handshakes,
            handshake_timeout: self.opts.handshake_timeout,
        };
        let state = shared.clone();
        let handler = Arc::new(move |job: Job| give_to(&state, job));
        self.serve(limits, handler, &shared)
    }

    fn serve(
        &self,
        limits: Limits,
        handler: crate::net::listener::Handler<Outcome>,
        shared: &Shared,
    ) -> Result<ServeSummary> {
        let (keep_open, max_gets) = (self.opts.keep_open, self.opts.max_gets);
        let mut summary = ServeSummary::default();
        let on = |o: Outcome| {
            let Outcome::Transfer(r) = o else {
                return Ok(Flow::Continue);
            };
            match r {
                Ok(t) => summary.add(t),
                Err(e) if !keep_open => return Err(e),
                Err(_) => {}
            }
            let done = max_gets.is_some_and(|m| summary.transfers >= m);
            Ok(if !keep_open || done {
                Flow::Stop
            } else {
                Flow::Continue
            })
        };
        let started = Instant::now();
        let (wait, expire) = (self.opts.wait_timeout, self.opts.expire);
        let idle_limit = || {
            if expire.is_some_and(|e| started.elapsed() >= e) {
                return Ok(None);
            }
            let claimed = shared.started.load(Ordering::SeqCst) > 0;
            let mut w = crate::serve::wait_limit(wait, started, claimed)?;
            if let Some(e) = expire {
                w = w.min(
                    e.saturating_sub(started.elapsed())
                        .max(Duration::from_millis(1)),
                );
            }
            Ok(Some(w))
        };
        let r = self.endpoint.listening().run(
            limits,
            self.endpoint.events().clone(),
            handler,
            !keep_open,
            on,
            idle_limit,
        );
        r.map(|()| summary)
    }
}

/// One taker: handshake and admission, a get slot, then the giver.
fn give_to(sh: &Shared, job: Job) -> Outcome {
    let Some(mut admitted) = accept_session(&sh.accept, job) else {
        return Outcome::NoSession;
    };
    let s = &mut admitted.session;
    let peer = s.peer();
    let n = sh.started.fetch_add(1, Ordering::SeqCst);
    let plan = match sh.max_gets {
        Some(m) if n >= m => Err(format!("this offer has given its {m} get(s)")),
        _ => plan_for(&sh.offered, &sh.events),
    };
    let plan = match plan {
        Ok(p) => p,
        Err(message) => {
            sh.started.fetch_sub(1, Ordering::SeqCst);
            let r = Refusal::new(RejectCode::Busy, message.clone());
            let _ = s
                .write_preamble(Role::Giver)
                .and_then(|()| s.write_message(&Message::Reject(r)));
            s.close();
            sh.events.emit(Event::Refused {
                peer,
                reason: crate::events::Reason::Offer(RejectCode::Busy),
                fingerprint: None,
                message,
            });
            return Outcome::NoSession;
        }
    };
    let classify = |e: WireError, when: &str| taker_failure(e, peer, when);
    Outcome::Transfer(give::give(s, plan, &sh.events, &classify))
}

/// This get's plan: the paths as they are now, or the one stream.
fn plan_for(offered: &Offered, events: &Events) -> std::result::Result<Plan, String> {
    match offered {
        Offered::Paths(p) => {
            Plan::new(Source::Paths(p.clone()), events).map_err(|e| format!("{e:#}"))
        }
        Offered::Stream(m) => m
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| "this offer's stream was already given to another taker".to_string()),
    }
}

/// A session failure while giving to a taker, as the user's error.
fn taker_failure(e: WireError, peer: SocketAddr, when: &str) -> Error {
    match e {
        WireError::Timeout => Error::Timeout(format!("{when} with {peer}: the taker went silent")),
        WireError::Closed | WireError::Reset => Error::Incomplete(format!(
            "the taker at {peer} closed the connection {when}; nothing is confirmed"
        )),
        WireError::Protocol(p) => Error::Incomplete(format!("the taker at {peer}: {p}")),
        e => Error::Incomplete(format!("with the taker at {peer} {when}: {e}")),
    }
}

/// Dials an offering side, pins it, and stores what it gives exactly as
/// `serve` would; `Ok` only once everything is durable.
pub fn get(opts: &DialOptions, output: &Output, events: Events) -> Result<Transfer> {
    opts.check()?;
    let store = Arc::new(Store::open(output).context("cannot open the output")?);
    let events = Arc::new(events);
    let mut s = dialer::dial(opts, &events)?;
    let taker = Taker::new(
        store,
        events.clone(),
        Arc::new(AtomicBool::new(false)),
        opts.idle_timeout,
        false,
    )
    .presenting(opts.identity.as_ref().map(|i| i.fingerprint()));
    match taker.take(&mut s, None) {
        Outcome::Transfer(r) => r,
        Outcome::NoTransfer(e) => Err(e),
        Outcome::NoSession => Err(Error::Incomplete("no session".into())),
    }
}
