//! `pincat relay`: a small relay on the magic-wormhole transit relay
//! protocol (see `net::relay`). It pairs two connections that ask for the
//! same token under different sides, answers `ok\n` to both and splices
//! them, half-closes included. It never parses or logs what it carries:
//! events hold addresses, byte counts and times only (never a token).
//!
//! Bounds: a connection must send its request line within
//! `line_timeout`; an unpaired one waits at most `pending_timeout`; at
//! most `max_pending` wait in all and `max_per_source` from one address
//! (a flood from one address never stops another's pairing); at most
//! `max_pairs` splices run at once, each optionally capped in bytes. One
//! thread polls every unpaired connection; each pair has two threads.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::Result;
use crate::events::{Event, Events, Reason};
use crate::sys;

mod slots;
mod splice;

use slots::{Slots, source_key};

/// How the relay is bounded.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Most connections waiting unpaired (or still sending their request) at once.
    pub max_pending: usize,
    /// Most of those from one source address.
    pub max_per_source: usize,
    /// Most pairs spliced at once.
    pub max_pairs: usize,
    /// Most of those with one source address in them.
    pub max_pairs_per_source: usize,
    /// A pair that moves nothing either way this long is cut.
    pub idle_timeout: Duration,
    /// Time to send the request line.
    pub line_timeout: Duration,
    /// Time an unpaired connection waits for its partner.
    pub pending_timeout: Duration,
    /// Most bytes one pair may carry (both ways together); `None`: no cap.
    pub max_bytes: Option<u64>,
    /// When not empty, only sources in these networks (address, prefix length).
    pub allow_from: Vec<(IpAddr, u8)>,
}

impl RelayOptions {
    /// The documented defaults, listening on `listen`: 1024 unpaired, 16
    /// per source, 256 pairs (64 per source, both ends of a pair counting), 10 s for the request, 10 min
    /// unpaired, 1 h idle (as long as a quiet `pipe`), no byte cap, any source (an IPv6 source
    /// counts by its /64).
    pub fn new(listen: SocketAddr) -> Self {
        RelayOptions {
            listen,
            max_pending: 1024,
            max_per_source: 16,
            max_pairs: 256,
            max_pairs_per_source: 64,
            idle_timeout: Duration::from_secs(3600),
            line_timeout: Duration::from_secs(10),
            pending_timeout: Duration::from_secs(600),
            max_bytes: None,
            allow_from: Vec::new(),
        }
    }
}

/// The longest request line: `please relay` + 64 + ` for side ` + 16.
const MAX_LINE: usize = 128;

/// Most connections taken per round of the loop, so that a connect flood
/// cannot starve pairing and expiry.
const ACCEPTS_PER_ROUND: usize = 256;

/// Most `refused` events a second; the rest are counted in one warning.
const REFUSALS_SHOWN: u32 = 20;

/// A bound relay.
pub struct Relay {
    listener: TcpListener,
    opts: RelayOptions,
    events: Arc<Events>,
    wake_rx: UnixStream,
    wake_tx: Arc<UnixStream>,
    stop: Arc<AtomicBool>,
    slots: Arc<Slots>,
    quiet: std::sync::Mutex<Quiet>,
}

/// How many refusals this second were shown and how many were not.
struct Quiet {
    since: Instant,
    shown: u32,
    hidden: u64,
}

/// Stops a running [`Relay`] from another thread.
#[derive(Clone)]
pub struct RelayStop {
    stop: Arc<AtomicBool>,
    wake: Arc<UnixStream>,
}

impl RelayStop {
    /// Stops accepting and pairing; running splices end on their own.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = (&*self.wake).write(&[1]);
    }
}

/// A connection not yet paired.
struct Pending {
    /// Unique among this relay's connections: indices shift as others go.
    id: u64,
    sock: TcpStream,
    peer: SocketAddr,
    since: Instant,
    line: Vec<u8>,
    /// Token and side once the request arrived (side `None`: the old form).
    asked: Option<(String, Option<String>)>,
}

impl Relay {
    /// Binds `opts.listen`.
    pub fn bind(opts: RelayOptions, events: Events) -> Result<Relay> {
        sys::raise_fd_limit();
        let listener = TcpListener::bind(opts.listen)
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        listener
            .set_nonblocking(true)
            .context("cannot configure the listening socket")?;
        let (wake_rx, wake_tx) = UnixStream::pair().context("cannot create a wake-up pipe")?;
        wake_rx
            .set_nonblocking(true)
            .context("cannot configure the wake-up pipe")?;
        Ok(Relay {
            listener,
            opts,
            events: Arc::new(events),
            wake_rx,
            wake_tx: Arc::new(wake_tx),
            stop: Arc::default(),
            slots: Arc::default(),
            quiet: std::sync::Mutex::new(Quiet {
                since: Instant::now(),
                shown: 0,
                hidden: 0,
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.opts.listen)
    }

    /// A handle that stops [`Relay::run`].
    pub fn stop_handle(&self) -> RelayStop {
        RelayStop {
            stop: self.stop.clone(),
            wake: self.wake_tx.clone(),
        }
    }

    /// Pairs and splices until stopped.
    pub fn run(self) -> Result<()> {
        self.events.emit(Event::RelayListening {
            addr: self.local_addr(),
        });
        let mut pending: Vec<Pending> = Vec::new();
        let mut next_id = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let wait = self.next_deadline(&pending);
            let ready: Vec<u64> = {
                let mut fds = vec![self.wake_rx.as_fd(), self.listener.as_fd()];
                fds.extend(pending.iter().map(|p| p.sock.as_fd()));
                let ready = sys::poll_readable(&fds, wait);
                ready
                    .iter()
                    .filter(|&&i| i >= 2)
                    .map(|&i| pending[i - 2].id)
                    .collect()
            };
            drain(&self.wake_rx);
            // By id: handling one may pair and remove others.
            for id in ready {
                if let Some(i) = pending.iter().position(|p| p.id == id) {
                    self.readable(&mut pending, i);
                }
            }
            self.expire(&mut pending);
            self.accept_all(&mut pending, &mut next_id);
            self.flush_refusals(false);
        }
        self.flush_refusals(true);
        Ok(())
    }

    fn next_deadline(&self, pending: &[Pending]) -> Duration {
        let now = Instant::now();
        pending
            .iter()
            .map(|p| (p.since + self.limit(p)).saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(60))
            // Refusals not shown yet are told within about a second.
            .min(match self.quiet.lock().map_or(0, |q| q.hidden) {
                0 => Duration::from_secs(60),
                _ => Duration::from_secs(1),
            })
            .max(Duration::from_millis(10))
    }

    fn limit(&self, p: &Pending) -> Duration {
        match p.asked {
            None => self.opts.line_timeout,
            Some(_) => self.opts.pending_timeout,
        }
    }

    fn refuse(&self, p: Pending, reason: Reason, message: &str, answer: Option<&[u8]>) {
        if let Some(a) = answer {
            let _ = (&p.sock).write(a);
        }
        let _ = p.sock.shutdown(Shutdown::Both);
        self.refused(p.peer, reason, message);
    }

    /// Says how many refusals were not shown, once their second is over
    /// (or at once, when `now`: the relay stops), and starts a new second.
    fn flush_refusals(&self, now: bool) {
        let mut q = self.quiet.lock().unwrap_or_else(|p| p.into_inner());
        if !now && q.since.elapsed() < Duration::from_secs(1) {
            return;
        }
        if q.hidden > 0 {
            let message = format!(
                "{} more connections refused (not shown one by one)",
                q.hidden
            );
            self.events.emit(Event::Warning { message });
        }
        *q = Quiet {
            since: Instant::now(),
            shown: 0,
            hidden: 0,
        };
    }

    /// The `refused` event, at most [`REFUSALS_SHOWN`] a second: a flood
    /// is counted in one warning a second instead of a line per connection.
    fn refused(&self, peer: SocketAddr, reason: Reason, message: &str) {
        self.flush_refusals(false);
        let mut q = self.quiet.lock().unwrap_or_else(|p| p.into_inner());
        if q.shown >= REFUSALS_SHOWN {
            q.hidden += 1;
            return;
        }
        q.shown += 1;
        drop(q);
        self.events.emit(Event::Refused {
            peer,
            reason,
            fingerprint: None,
            message: message.into(),
        });
    }

    fn accept_all(&self, pending: &mut Vec<Pending>, next_id: &mut u64) {
        for _ in 0..ACCEPTS_PER_ROUND {
            let (sock, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.events.emit(Event::Error {
                        peer: None,
                        code: "accept",
                        message: format!("cannot accept a connection: {e}"),
                    });
                    std::thread::sleep(Duration::from_millis(50));
                    return;
                }
            };
            *next_id += 1;
            let p = Pending {
                id: *next_id,
                sock,
                peer,
                since: Instant::now(),
                line: Vec::new(),
                asked: None,
            };
            let key = source_key(peer.ip());
            let from_here = pending
                .iter()
                .filter(|q| source_key(q.peer.ip()) == key)
                .count();
            if !self.allowed(peer.ip()) {
                self.refuse(
                    p,
                    Reason::NotAllowed,
                    "this relay does not serve that address",
                    None,
                );
            } else if from_here >= self.opts.max_per_source {
                let m = "too many unpaired connections from this address";
                self.refuse(p, Reason::MaxConns, m, Some(b"busy\n"));
            } else if pending.len() >= self.opts.max_pending {
                let m = "too many unpaired connections";
                self.refuse(p, Reason::MaxConns, m, Some(b"busy\n"));
            } else if p.sock.set_nonblocking(true).is_ok() {
                pending.push(p);
            }
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.opts.allow_from.is_empty()
            || self
                .opts
                .allow_from
                .iter()
                .any(|&(net, len)| in_net(ip, net, len))
    }

    fn expire(&self, pending: &mut Vec<Pending>) {
        let now = Instant::now();
        let mut i = 0;
        while i < pending.len() {
            let p = &pending[i];
            if now.duration_since(p.since) < self.limit(p) {
                i += 1;
                continue;
            }
            let p = pending.swap_remove(i);
            let (reason, m) = match p.asked {
                None => (Reason::Timeout, "no request line in time"),
                Some(_) => (Reason::Unpaired, "nobody came to pair with it in time"),
            };
            self.refuse(p, reason, m, None);
        }
    }

    /// Reads what a pending connection sent: its request, or (after it)
    /// its end or data too early.
    fn readable(&self, pending: &mut Vec<Pending>, i: usize) {
        let mut buf = [0u8; MAX_LINE + 1];
        let room = match pending[i].asked {
            Some(_) => buf.len(),
            None => MAX_LINE + 1 - pending[i].line.len(),
        };
        let n = match (&pending[i].sock).read(&mut buf[..room]) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return;
            }
            Err(_) => 0,
        };
        if n == 0 {
            // Gone before it was paired: nothing to report but the end.
            let p = pending.swap_remove(i);
            let _ = p.sock.shutdown(Shutdown::Both);
            return;
        }
        if pending[i].asked.is_some() {
            let p = pending.swap_remove(i);
            let m = "it sent data before it was paired";
            return self.refuse(p, Reason::Protocol, m, Some(b"impatient\n"));
        }
        let p = &mut pending[i];
        p.line.extend_from_slice(&buf[..n]);
        let Some(end) = p.line.iter().position(|&b| b == b'\n') else {
            if p.line.len() > MAX_LINE {
                let p = pending.swap_remove(i);
                self.refuse(
                    p,
                    Reason::Protocol,
                    "a request line too long",
                    Some(b"bad handshake\n"),
                );
            }
            return;
        };
        let early = end + 1 < p.line.len();
        match parse_request(&p.line[..end]) {
            Some(_) if early => {
                let p = pending.swap_remove(i);
                let m = "it sent data before it was paired";
                self.refuse(p, Reason::Protocol, m, Some(b"impatient\n"));
            }
            Some(asked) => {
                p.asked = Some(asked);
                self.pair(pending, i);
            }
            None => {
                let p = pending.swap_remove(i);
                self.refuse(
                    p,
                    Reason::Protocol,
                    "not a relay request",
                    Some(b"bad handshake\n"),
                );
            }
        }
    }

    /// Pairs pending `i` with an earlier one asking for the same token
    /// under another side, if any.
    fn pair(&self, pending: &mut Vec<Pending>, i: usize) {
        let Some((token, side)) = pending[i].asked.clone() else {
            return;
        };
        let partner = pending.iter().enumerate().position(|(j, q)| {
            j != i
                && q.asked.as_ref().is_some_and(|(t, s)| {
                    *t == token && (s.is_none() || side.is_none() || *s != side)
                })
        });
        let Some(j) = partner else { return };
        let o = &self.opts;
        let (a, b) = (pending[j].peer.ip(), pending[i].peer.ip());
        let slot = match self.slots.take(a, b, o.max_pairs, o.max_pairs_per_source) {
            Ok(slot) => slot,
            Err(why) => {
                // Only the newcomer goes: the one that waited stays.
                let p = pending.swap_remove(i);
                return self.refuse(p, Reason::MaxConns, why, Some(b"busy\n"));
            }
        };
        // Remove the higher index first so the lower one stays valid.
        let (hi, lo) = (i.max(j), i.min(j));
        let x = pending.swap_remove(hi);
        let y = pending.swap_remove(lo);
        let (first, second) = if x.since <= y.since { (x, y) } else { (y, x) };
        let events = self.events.clone();
        let limits = splice::Limits {
            max_bytes: o.max_bytes,
            idle: o.idle_timeout,
        };
        // The slot goes with the thread and comes back when it ends (or
        // when it cannot start: the closure is dropped).
        let _ = std::thread::Builder::new()
            .name("relay-pair".into())
            .spawn(move || {
                let _slot = slot;
                splice::carry([first, second].map(|p| (p.sock, p.peer)), limits, &events);
            });
    }
}

/// `please relay TOKEN` or `please relay TOKEN for side SIDE` (64 and 16
/// word characters, as the transit relay takes them).
fn parse_request(line: &[u8]) -> Option<(String, Option<String>)> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("please relay ")?;
    let word = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    match rest.split_once(" for side ") {
        Some((t, s)) if word(t, 64) && word(s, 16) => Some((t.to_string(), Some(s.to_string()))),
        None if word(rest, 64) => Some((rest.to_string(), None)),
        _ => None,
    }
}

/// Whether `ip` lies in `net`/`len` (an IPv4 source seen as IPv4-mapped
/// IPv6 counts as IPv4).
pub fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn drain(s: &UnixStream) {
    let mut b = [0u8; 64];
    while matches!((&*s).read(&mut b), Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_in_both_forms_and_nothing_else() {
        let t = "a".repeat(64);
        let s = "0123456789abcdef";
        let with = format!("please relay {t} for side {s}");
        assert_eq!(
            parse_request(with.as_bytes()),
            Some((t.clone(), Some(s.into())))
        );
        let old = format!("please relay {t}");
        assert_eq!(parse_request(old.as_bytes()), Some((t.clone(), None)));
        for bad in [
            format!("please relay {}", "a".repeat(63)),
            format!("please relay {t} for side 0123"),
            format!("please relay {t} for side {s} x"),
            format!("please relay {t}\r"),
            "GET / HTTP/1.1".into(),
        ] {
            assert_eq!(parse_request(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn sources_match_their_networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_net(ip("10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(!in_net(ip("11.1.2.3"), ip("10.0.0.0"), 8));
        assert!(in_net(ip("::ffff:10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(in_net(ip("192.0.2.7"), ip("0.0.0.0"), 0));
        assert!(in_net(ip("fd00::1"), ip("fd00::"), 8));
        assert!(!in_net(ip("fe80::1"), ip("fd00::"), 8));
        assert!(!in_net(ip("10.1.2.3"), ip("fd00::"), 8));
    }
}
