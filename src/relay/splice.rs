//! One pair's splice: `ok\n` to both, then each direction on its own
//! thread until its end, which is passed on as a half-close. A failed
//! write, the pair's byte cap, or nothing moving either way for the idle
//! time cuts both directions.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::events::{Event, Events};
use crate::sys;

/// Bytes moved per kernel splice (and the pipe's size).
const CHUNK: usize = 1 << 20;

/// What one pair may do.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Most bytes both ways together.
    pub max_bytes: Option<u64>,
    /// Cut once nothing moved either way this long.
    pub idle: Duration,
}

/// What both directions share: bytes the cap still allows, when anything
/// last moved (milliseconds since `start`), and which directions ended.
struct Shared {
    start: Instant,
    left: AtomicU64,
    last: AtomicU64,
    ended: [AtomicBool; 2],
    limits: Limits,
}

impl Shared {
    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::SeqCst)))
    }

    /// Something moved: the pair is not idle.
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::SeqCst);
    }

    /// The most the next read may take: up to a chunk of what the cap
    /// still allows, `None` once it is used up.
    fn room(&self) -> Option<usize> {
        match self.left.load(Ordering::SeqCst).min(CHUNK as u64) {
            0 => None,
            n => Some(n as usize),
        }
    }

    /// Counts `n` bytes read against the cap, if they still fit (both
    /// directions count against one total, so together they never pass
    /// it: what does not fit is never passed on).
    fn claim(&self, n: usize) -> bool {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(n as u64)
            })
            .is_ok()
    }
}

/// Tells both `ok`, splices them until both directions ended, reports.
pub(super) fn carry(ends: [(TcpStream, SocketAddr); 2], limits: Limits, events: &Events) {
    let [(a, pa), (b, pb)] = ends;
    // Reads wake up this often to look at the idle time.
    let tick = (limits.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let ready = [&a, &b].iter().all(|s| {
        s.set_nonblocking(false).is_ok()
            && s.set_read_timeout(Some(tick)).is_ok()
            && (&**s).write_all(b"ok\n").is_ok()
    });
    if !ready {
        cut(&a, &b);
        return;
    }
    events.emit(Event::Paired {
        peer: pa,
        partner: pb,
    });
    let shared = Shared {
        start: Instant::now(),
        left: AtomicU64::new(limits.max_bytes.unwrap_or(u64::MAX)),
        last: AtomicU64::new(0),
        ended: [AtomicBool::new(false), AtomicBool::new(false)],
        limits,
    };
    let ((forth, ok_f), (back, ok_b)) = std::thread::scope(|scope| {
        let other = std::thread::Builder::new()
            .name("relay-back".into())
            .spawn_scoped(scope, || direction(&b, &a, &shared, 1, tick));
        let Ok(other) = other else {
            cut(&a, &b);
            return ((0, false), (0, false));
        };
        let forth = direction(&a, &b, &shared, 0, tick);
        (forth, other.join().unwrap_or((0, false)))
    });
    events.emit(Event::RelayClosed {
        peer: pa,
        partner: pb,
        from_peer: forth,
        from_partner: back,
        duration: shared.start.elapsed(),
        outcome: match ok_f && ok_b {
            true => "ok",
            false => "cut",
        },
    });
}

/// Shuts both sockets down in both directions.
fn cut(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// One direction (`me`, 0 or 1), then, if it ended first and cleanly, a
/// watch on the other: a pair half-closed on one side whose other side
/// stalls is still cut once nothing moved for the idle time.
fn direction(
    from: &TcpStream,
    to: &TcpStream,
    shared: &Shared,
    me: usize,
    tick: Duration,
) -> (u64, bool) {
    let r = one_way(from, to, shared);
    shared.ended[me].store(true, Ordering::SeqCst);
    while r.1 && !shared.ended[1 - me].load(Ordering::SeqCst) {
        if shared.idle_for() >= shared.limits.idle {
            cut(from, to);
            break;
        }
        std::thread::sleep(tick);
    }
    r
}

/// Carries `from` into `to` until `from` ends (then half-closes `to`):
/// the bytes, and whether it ended cleanly.
fn one_way(from: &TcpStream, to: &TcpStream, shared: &Shared) -> (u64, bool) {
    let mut moved = 0u64;
    let mut pipe = sys::SplicePipe::new(CHUNK).ok();
    let mut buf = Vec::new();
    loop {
        let Some(max) = shared.room() else {
            cut(from, to);
            return (moved, false);
        };
        let claim = |n| shared.claim(n);
        let step = match pipe.as_mut() {
            Some(p) => p.splice(from, to, max, &claim, &|_| shared.touch()),
            None => copy_some(from, to, &mut buf, max, &claim),
        };
        let n = match step {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return (moved, true);
            }
            Ok(n) => n as u64,
            // Nothing to read for a tick: cut only when neither way moved.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if shared.idle_for() >= shared.limits.idle {
                    cut(from, to);
                    return (moved, false);
                }
                continue;
            }
            // No splice here (an old kernel, an odd socket): copy instead.
            Err(e) if pipe.is_some() && moved == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                pipe = None;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                cut(from, to);
                return (moved, false);
            }
        };
        moved += n;
        shared.touch();
    }
}

/// The copy through user space, where splice does not work (what `claim`
/// refuses is dropped, as in [`sys::SplicePipe::splice`]).
fn copy_some(
    mut from: &TcpStream,
    mut to: &TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    claim: &dyn Fn(usize) -> bool,
) -> io::Result<usize> {
    buf.resize(max.min(256 << 10), 0);
    let n = from.read(buf)?;
    if n > 0 && !claim(n) {
        return Err(io::ErrorKind::PermissionDenied.into());
    }
    to.write_all(&buf[..n])?;
    Ok(n)
}
