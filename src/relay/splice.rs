//! One pair's splice: `ok\n` to both, then each direction on its own
//! thread until its end, which is passed on as a half-close. A failed
//! write, or the pair's byte cap, cuts both directions.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::events::{Event, Events};
use crate::sys;

/// Bytes moved per kernel splice (and the pipe's size).
const CHUNK: usize = 1 << 20;

/// Tells both `ok`, splices them until both directions ended, reports.
pub(super) fn carry(
    a: TcpStream,
    b: TcpStream,
    pa: SocketAddr,
    pb: SocketAddr,
    cap: Option<u64>,
    events: &Events,
) {
    let start = Instant::now();
    let ready = [&a, &b]
        .iter()
        .all(|s| s.set_nonblocking(false).is_ok() && (&**s).write_all(b"ok\n").is_ok());
    if !ready {
        cut(&a, &b);
        return;
    }
    events.emit(Event::Paired {
        peer: pa,
        partner: pb,
    });
    let total = Arc::new(AtomicU64::new(0));
    let (back, outcome) = std::thread::scope(|scope| {
        let t = total.clone();
        let back = scope.spawn(|| one_way(&b, &a, cap, t));
        let forth = one_way(&a, &b, cap, total.clone());
        let back = back.join().unwrap_or((0, false));
        (back, forth)
    });
    let ((forth, ok_f), (back, ok_b)) = (outcome, back);
    events.emit(Event::RelayClosed {
        peer: pa,
        partner: pb,
        from_peer: forth,
        from_partner: back,
        duration: start.elapsed(),
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
fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    cap: Option<u64>,
    total: Arc<AtomicU64>,
) -> (u64, bool) {
    let mut moved = 0u64;
    let mut pipe = sys::SplicePipe::new(CHUNK).ok();
    let mut buf = Vec::new();
    loop {
        let step = match pipe.as_mut() {
            Some(p) => p.splice(from, to, CHUNK),
            None => copy_some(from, to, &mut buf),
        };
        let n = match step {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return (moved, true);
            }
            Ok(n) => n as u64,
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
        let all = total.fetch_add(n, Ordering::SeqCst) + n;
        if cap.is_some_and(|c| all > c) {
            cut(from, to);
            return (moved, false);
        }
    }
}

/// The copy through user space, where splice does not work.
fn copy_some(mut from: &TcpStream, mut to: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.resize(256 << 10, 0);
    let n = from.read(buf)?;
    to.write_all(&buf[..n])?;
    Ok(n)
}
