//! `pincat pipe`: one pinned session, full duplex. Standard input (or a
//! program's output) goes to the peer while the peer's data goes to
//! standard output (or the program's input), each direction ending on its
//! own with TLS close_notify. Raw TLS plaintext: `openssl s_client` /
//! `s_server` and `ncat --ssl` can be the other end.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::error::{Error, Result};
use crate::events::Events;
use crate::net::dialer::{self, DialOptions};
use crate::net::endpoint::{Endpoint, Listen, endpoint_accessors};
use crate::net::listener::{Flow, Job, accept_session};
use crate::session::{Plain, Relayed, Session, WireError};
use crate::sys;

/// What is on our side of the pipe.
#[derive(Debug, Clone)]
pub enum Ends {
    /// Standard input and output.
    Stdio,
    /// A program (no shell): its output goes to the peer, the peer's data
    /// to its input.
    Exec(Vec<OsString>),
}

/// Dials a pinned peer and pipes `ends` through the session.
pub fn pipe(
    opts: &DialOptions,
    ends: &Ends,
    idle: Option<Duration>,
    events: &Events,
) -> Result<Relayed> {
    // The program starts only once the peer is authenticated: a failed
    // dial runs nothing.
    let mut s = dialer::dial(opts, events).map_err(|e| e.expecting("`pincat pipe --listen`"))?;
    let mut child = spawn(ends)?;
    let peer = s.peer();
    relay_ends(&mut s, &mut child, idle, events, &|e, when| {
        opts.classify(e, peer, when)
    })
}

/// Most TLS handshakes a pipe's listening end runs at once: it takes one
/// peer, and a few handshakes keep a flood from locking it out.
pub const MAX_HANDSHAKES: usize = 16;

/// A pipe session's default limit for a single read or write outside the
/// relay, on either end (the relay's own idle limit is separate, and off
/// by default).
pub const SESSION_IDLE: Duration = Duration::from_secs(3600);

/// How the listening end of a pipe behaves.
#[derive(Debug, Clone)]
pub struct PipeListenOptions {
    /// Where to listen, who gets in, and the handshake limits. A pipe takes
    /// one peer: `listen.max_conns` is always 1, and others are refused as
    /// busy meanwhile. `listen.idle_timeout` bounds the session's reads
    /// and writes outside the relay, which `relay_idle` bounds.
    pub listen: Listen,
    /// End a pipe where nothing moves this long (`None`: never).
    pub relay_idle: Option<Duration>,
    /// Give up if no peer connected within this time.
    pub wait_timeout: Option<Duration>,
}

impl PipeListenOptions {
    /// Options with the documented defaults, listening on `listen`: one
    /// peer, [`MAX_HANDSHAKES`] at once, no idle limit on the relay (and
    /// [`SESSION_IDLE`] on the session's reads and writes outside it).
    pub fn new(listen: SocketAddr) -> Self {
        PipeListenOptions {
            listen: Listen {
                max_conns: 1,
                max_handshakes: MAX_HANDSHAKES,
                idle_timeout: SESSION_IDLE,
                ..Listen::new(listen)
            },
            relay_idle: None,
            wait_timeout: None,
        }
    }
}

/// A bound listening end of a pipe.
pub struct PipeListener {
    endpoint: Endpoint,
    opts: PipeListenOptions,
}

endpoint_accessors!(PipeListener, "the dialing end");

impl PipeListener {
    /// Binds `opts.listen`.
    pub fn bind(mut opts: PipeListenOptions, events: Events) -> Result<PipeListener> {
        opts.listen.max_conns = 1;
        let zero = |d: Option<Duration>| d.is_some_and(|d| d.is_zero());
        opts.listen.check(
            "PipeListenOptions",
            &[
                ("relay_idle", zero(opts.relay_idle)),
                ("wait_timeout", zero(opts.wait_timeout)),
            ],
        )?;
        let endpoint = opts.listen.bind(events)?;
        Ok(PipeListener { endpoint, opts })
    }

    /// Waits for one peer that passes the pin (and the allow list), pipes
    /// `ends` through its session, and returns when both directions ended.
    /// Other peers meanwhile are refused as busy.
    pub fn run(self, ends: Ends) -> Result<Relayed> {
        let l = &self.opts.listen;
        let accept = self.endpoint.accept_spec(&l.allow, l.bounds(None))?;
        self.endpoint.announce("pincat pipe", "", "other");
        let events = self.endpoint.events().clone();
        let taken = Arc::new(AtomicBool::new(false));
        let ends = Arc::new(Mutex::new(Some(ends)));
        let idle = self.opts.relay_idle;
        let handler = Arc::new(move |job: Job| -> Option<Result<Relayed>> {
            let mut admitted = accept_session(&accept, job)?;
            let s = &mut admitted.session;
            if taken.swap(true, Ordering::SeqCst) {
                return None;
            }
            let ends = ends.lock().unwrap_or_else(|p| p.into_inner()).take()?;
            let peer = s.peer();
            let r = spawn(&ends).and_then(|mut child| {
                relay_ends(s, &mut child, idle, &events, &|e, when| {
                    peer_failure(e, peer, when)
                })
            });
            Some(r)
        });
        let limits = l.limits();
        let mut result = None;
        let on = |o: Option<Result<Relayed>>| {
            Ok(match o {
                Some(r) => {
                    result = Some(r);
                    Flow::Stop
                }
                None => Flow::Continue,
            })
        };
        let started = Instant::now();
        let wait = self.opts.wait_timeout;
        let idle_limit = || crate::serve::wait_limit(wait, started, false).map(Some);
        self.endpoint.run(limits, handler, true, on, idle_limit)?;
        result.unwrap_or(Err(Error::Interrupted))
    }
}

/// The program of `--exec`, started with its standard input and output on
/// pipes of ours (no shell).
fn spawn(ends: &Ends) -> Result<Option<Child>> {
    let Ends::Exec(argv) = ends else {
        return Ok(None);
    };
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| anyhow!("--exec needs a program"))?;
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", prog.to_string_lossy()))?;
    Ok(Some(child))
}

/// Relays between the session and our ends (standard I/O or the child's
/// pipes), reports the outcome, and reaps the child.
fn relay_ends(
    s: &mut Session,
    child: &mut Option<Child>,
    idle: Option<Duration>,
    events: &Events,
    classify: &dyn Fn(WireError, &str) -> Error,
) -> Result<Relayed> {
    let start = Instant::now();
    let peer = s.peer();
    let r = match child {
        None => {
            let (input, output) = sys::stdio();
            let plain = Plain {
                input: Some(input),
                output,
                end_output: &mut sys::end_stdout,
            };
            s.relay(plain, idle)
        }
        Some(c) => relay_child(s, c, idle),
    };
    events.emit(crate::session::closed_event(peer, start, &r));
    if let Some(c) = child {
        reap(c);
    }
    r.map_err(|e| match e {
        WireError::Closed => Error::Incomplete(format!(
            "the peer at {peer} closed the connection without TLS close_notify: its data may be truncated"
        )),
        e => classify(e, "while piping"),
    })
}

fn relay_child(
    s: &mut Session,
    c: &mut Child,
    idle: Option<Duration>,
) -> Result<Relayed, WireError> {
    let (Some(out), Some(inp)) = (c.stdout.take(), c.stdin.take()) else {
        return Err(WireError::Io(std::io::Error::other(
            "the program has no pipes",
        )));
    };
    // Our own pipes: non-blocking is safe (nobody else shares them).
    sys::set_nonblocking(out.as_fd(), true)?;
    sys::set_nonblocking(inp.as_fd(), true)?;
    // The peer's end closes the program's input (its descriptor then points
    // at /dev/null until `inp` is dropped).
    let mut end = || sys::end_fd(inp.as_fd());
    let plain = Plain {
        input: Some(out.as_fd()),
        output: inp.as_fd(),
        end_output: &mut end,
    };
    s.relay(plain, idle)
}

/// Waits (bounded) for the program to end, then stops it.
fn reap(c: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// A session failure of the listening end, as the user's error.
fn peer_failure(e: WireError, peer: SocketAddr, when: &str) -> Error {
    match e {
        WireError::Timeout => Error::Timeout(format!("{when} with {peer}: nothing moved")),
        WireError::Reset => {
            Error::Incomplete(format!("the peer at {peer} reset the connection {when}"))
        }
        e => Error::Incomplete(format!("with the peer at {peer} {when}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_listener_takes_one_peer_whatever_max_conns_says() {
        let mut o = PipeListenOptions::new("127.0.0.1:0".parse().unwrap());
        o.listen.max_conns = 8;
        let l = PipeListener::bind(o, Events::silent()).unwrap();
        assert_eq!(l.opts.listen.max_conns, 1);
        assert_eq!(l.opts.listen.limits().max_conns, 1);
        assert_ne!(l.local_addr().port(), 0);
    }
}
