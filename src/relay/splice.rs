//! One pair's splice: `ok\n` to both, then each direction on its own
//! thread until its end, which is passed on as a half-close. A failed
//! write, the pair's byte cap, or nothing moving either way for the idle
//! time cuts both directions.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// What both directions share: bytes so far, and when anything last moved
/// (milliseconds since `start`).
struct Shared {
    start: Instant,
    total: AtomicU64,
    last: AtomicU64,
    limits: Limits,
}

impl Shared {
    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::SeqCst)))
    }

    fn moved(&self, n: u64) {
        self.total.fetch_add(n, Ordering::SeqCst);
        let now = self.start.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::SeqCst);
    }

    /// How much this direction may move next: `None` once the cap is met.
    fn allowance(&self) -> Option<usize> {
        match self.limits.max_bytes {
            None => Some(CHUNK),
            Some(cap) => match cap.saturating_sub(self.total.load(Ordering::SeqCst)) {
                0 => None,
                left => Some(CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))),
            },
        }
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
        total: AtomicU64::new(0),
        last: AtomicU64::new(0),
        limits,
    };
    let ((forth, ok_f), (back, ok_b)) = std::thread::scope(|scope| {
        let other = std::thread::Builder::new()
            .name("relay-back".into())
            .spawn_scoped(scope, || one_way(&b, &a, &shared));
        let Ok(other) = other else {
            cut(&a, &b);
            return ((0, false), (0, false));
        };
        let forth = one_way(&a, &b, &shared);
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

/// Carries `from` into `to` until `from` ends (then half-closes `to`):
/// the bytes, and whether it ended cleanly.
fn one_way(from: &TcpStream, to: &TcpStream, shared: &Shared) -> (u64, bool) {
    let mut moved = 0u64;
    let mut pipe = sys::SplicePipe::new(CHUNK).ok();
    let mut buf = Vec::new();
    loop {
        let Some(max) = shared.allowance() else {
            cut(from, to);
            return (moved, false);
        };
        let step = match pipe.as_mut() {
            Some(p) => p.splice(from, to, max),
            None => copy_some(from, to, &mut buf, max),
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
        shared.moved(n);
    }
}

/// The copy through user space, where splice does not work.
fn copy_some(
    mut from: &TcpStream,
    mut to: &TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    buf.resize(max.min(256 << 10), 0);
    let n = from.read(buf)?;
    to.write_all(&buf[..n])?;
    Ok(n)
}
