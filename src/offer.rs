//! `pincat offer` and `pincat get`: the pull direction. The machine that
//! has the data listens and gives (listener + giver); the one that wants it
//! dials and takes (dialer + taker), with the same store and guarantees as
//! `serve`.

use crate::give::Paths;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::error::{Error, Result};
use crate::events::{Event, Events, Transfer};
use crate::give::{self, Plan, Source};
use crate::net::dialer::{self, DialOptions};
use crate::net::endpoint::{Endpoint, Listen, endpoint_accessors};
use crate::net::listener::{AcceptSpec, Flow, Job, Limits, accept_session};
use crate::protocol::{Message, Refusal, RejectCode, Role};
use crate::serve::ServeSummary;
use crate::session::WireError;
use crate::store::{Keep, Output, Store};
use crate::take::{Outcome, Taker};

/// How the offering side behaves.
#[derive(Debug, Clone)]
pub struct OfferOptions {
    /// Where to listen, who gets in (takers), how many at once for how
    /// long (the idle limit covers the receipt).
    pub listen: Listen,
    /// Serve the same files to many takers instead of exiting after one.
    pub keep_open: bool,
    /// With `keep_open`: stop after this many confirmed gets.
    pub max_gets: Option<u64>,
    /// Stop offering this long after starting (exit 0).
    pub expire: Option<Duration>,
    /// Give up if no taker has connected within this time.
    pub wait_timeout: Option<Duration>,
    /// One-shot: how long to keep offering after a get of files was cut
    /// short, for the taker to run `get` again and resume (zero: end at
    /// once).
    pub resume_wait: Duration,
}

impl OfferOptions {
    /// Options with the documented defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        OfferOptions {
            listen: Listen::new(listen),
            keep_open: false,
            max_gets: None,
            expire: None,
            wait_timeout: None,
            resume_wait: crate::serve::DEFAULT_RESUME_WAIT,
        }
    }

    /// Zero caps and durations are mistakes, as on the command line.
    fn check(&self) -> Result<()> {
        let zero = |d: Option<Duration>| d.is_some_and(|d| d.is_zero());
        self.listen.check(
            "OfferOptions",
            &[
                ("max_gets", self.max_gets == Some(0)),
                ("expire", zero(self.expire)),
                ("wait_timeout", zero(self.wait_timeout)),
            ],
        )
    }
}

/// What is offered: paths are planned again for every get (each sees the
/// files as they are then); a stream can be given once.
enum Offered {
    Paths(Paths),
    Stream(Mutex<Option<Plan>>),
}

/// A bound offering side.
pub struct Offering {
    endpoint: Endpoint,
    opts: OfferOptions,
    offered: Arc<Offered>,
}

endpoint_accessors!(Offering, "takers");

/// What every connection of one offering side shares.
struct Shared {
    accept: AcceptSpec,
    offered: Arc<Offered>,
    events: Arc<Events>,
    /// Gets started and not failed, against `max_gets`.
    started: AtomicU64,
    max_gets: Option<u64>,
    /// Whether the offer goes on after a failed get (it reports it then).
    keep_open: bool,
}

impl Offering {
    /// Plans the source (so a missing or unreadable path fails now, before
    /// anyone connects) and binds.
    pub fn bind(opts: OfferOptions, source: Source, events: Events) -> Result<Offering> {
        opts.check()?;
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
        let endpoint = opts.listen.bind(events)?;
        Ok(Offering {
            endpoint,
            opts,
            offered: Arc::new(offered),
        })
    }

    /// A paste-ready get command for the other machine.
    pub fn get_command(&self) -> String {
        self.endpoint.command("pincat get", "")
    }

    /// Gives to takers until the first confirmed get (or, with
    /// `keep_open`, until `max_gets`, `expire` or a signal).
    pub fn run(self) -> Result<ServeSummary> {
        let l = &self.opts.listen;
        let accept = self
            .endpoint
            .accept_spec(&l.allow, l.bounds(Some(Role::Giver)))?;
        let events = self.endpoint.events().clone();
        let shared = Arc::new(Shared {
            accept,
            offered: self.offered.clone(),
            events,
            started: AtomicU64::new(0),
            max_gets: self.opts.max_gets,
            keep_open: self.opts.keep_open,
        });
        self.endpoint.announce("pincat get", "", "receiving");
        let state = shared.clone();
        let handler = Arc::new(move |job: Job| give_to(&state, job));
        self.serve(l.limits(), handler, &shared)
    }

    fn serve(
        &self,
        limits: Limits,
        handler: crate::net::listener::Handler<Outcome>,
        shared: &Shared,
    ) -> Result<ServeSummary> {
        let (keep_open, max_gets) = (self.opts.keep_open, self.opts.max_gets);
        let mut summary = ServeSummary::default();
        // A one-shot get of files cut short: until when its resume is
        // awaited, and the error to end with if none comes.
        let resumable = matches!(*self.offered, Offered::Paths(_)) && !keep_open;
        let wait_resume = self.opts.resume_wait;
        let pending: RefCell<Option<(Instant, Error)>> = RefCell::new(None);
        let on = |o: Outcome| {
            let r = match o {
                Outcome::Resumable(e) if resumable && !wait_resume.is_zero() => {
                    shared.events.emit(Event::Warning {
                        message: format!(
                            "{e}; run the same get command again within {} to resume",
                            humantime::format_duration(wait_resume)
                        ),
                    });
                    *pending.borrow_mut() = Some((Instant::now() + wait_resume, e));
                    return Ok(Flow::Continue);
                }
                Outcome::Resumable(e) => Err(e),
                Outcome::Transfer(r) => r,
                _ => return Ok(Flow::Continue),
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
            let expired =
                matches!(pending.borrow().as_ref(), Some((until, _)) if Instant::now() >= *until);
            if expired && let Some((_, e)) = pending.borrow_mut().take() {
                return Err(e);
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
        let r = self
            .endpoint
            .run(limits, handler, !keep_open, on, idle_limit);
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
    // An offered stream is read once: not a byte of it before the taker
    // accepts, so a dialer that refuses or is no taker leaves it whole.
    let plan = match &*sh.offered {
        Offered::Stream(m) => match give::announce(s, plan, &classify) {
            Ok(p) => p,
            Err((p, e)) => {
                *m.lock().unwrap_or_else(|p| p.into_inner()) = Some(*p);
                sh.started.fetch_sub(1, Ordering::SeqCst);
                report(&sh.events, peer, &e);
                return Outcome::NoTransfer(e);
            }
        },
        Offered::Paths(_) => plan,
    };
    let accepted = Cell::new(false);
    let r = give::give(s, plan, &sh.events, &classify, &accepted);
    // Only a get that was given counts against --max-gets: a dialer that
    // was no taker (a mistaken `send`, a raw client) or a get that failed
    // gives its slot back.
    if r.is_err() {
        sh.started.fetch_sub(1, Ordering::SeqCst);
    }
    match r {
        Ok(t) => Outcome::Transfer(Ok(t)),
        Err(e) if sh.keep_open => {
            report(&sh.events, peer, &e);
            Outcome::Transfer(Err(e))
        }
        // The taker had accepted: it keeps what arrived for a resume.
        Err(e @ (Error::Incomplete(_) | Error::Timeout(_))) if accepted.get() => {
            Outcome::Resumable(e)
        }
        // Nothing was taken yet (files are planned again for every get):
        // say why and wait for a real taker. A stream the taker accepted
        // was read from, and cannot be given again.
        Err(e) if !accepted.get() && matches!(*sh.offered, Offered::Paths(_)) => {
            report(&sh.events, peer, &e);
            Outcome::NoTransfer(e)
        }
        Err(e) => Outcome::Transfer(Err(e)),
    }
}

/// A get that failed while the offer goes on, for people and scripts.
fn report(events: &Events, peer: SocketAddr, e: &Error) {
    events.emit(Event::Error {
        peer: Some(peer),
        code: e.code(),
        message: format!("{e:#}"),
    });
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
/// `serve` would (keeping what `keep` says of the sender's tree); `Ok`
/// only once everything is durable.
pub fn get(opts: &DialOptions, output: &Output, keep: Keep, events: Events) -> Result<Transfer> {
    opts.check()?;
    let store = Store::open(output).context("cannot open the output")?;
    let store = Arc::new(store.keeping(keep));
    let events = Arc::new(events);
    let (mut s, seen) =
        dialer::dial_seen(opts, &events).map_err(|e| e.expecting("`pincat offer`"))?;
    // What this getter keeps of an interrupted transfer is named by the
    // offering side it pinned (and the code it proved).
    let secret = seen.get().map(|fp| match &opts.code {
        Some(c) => crate::store::secret_of_code(&fp, c.as_str()),
        None => crate::store::secret_of_key(&fp),
    });
    let taker = Taker::new(
        store,
        events.clone(),
        Arc::new(AtomicBool::new(false)),
        opts.idle_timeout,
        false,
    )
    .presenting(opts.identity.as_ref().map(|i| i.fingerprint()));
    match taker.take(&mut s, None, secret) {
        Outcome::Transfer(r) => r,
        Outcome::NoTransfer(e) | Outcome::Resumable(e) => Err(e),
        Outcome::NoSession => Err(Error::Incomplete("no session".into())),
    }
}
