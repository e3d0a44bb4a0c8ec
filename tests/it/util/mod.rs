//! The test toolkit: every helper and fake peer that more than one test
//! module needs, written once. Modules by job; the most used names are
//! re-exported here.

pub mod cli;
pub mod data;
pub mod fs;
pub mod netns;
pub mod peers;
pub mod process;
pub mod proxy;
pub mod relay;
pub mod server;
pub mod slow;
pub mod term;
pub mod tools;
pub mod wire;

use std::thread;
use std::time::{Duration, Instant};

pub use cli::{pincat, run, send, wait_output};
pub use data::{random_bytes, sha256, text};
pub use server::Server;

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `done` every few milliseconds until it holds or `limit` has passed;
/// returns whether it held. For conditions nothing announces (a file
/// appearing, a port opening, a directory swept).
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback port that was free a moment ago. Only for peers that must be
/// told a port up front (external tools, a server started later); anything
/// of ours listens on port 0 and reports what it got.
///
/// The port lies below the kernel's ephemeral range, which every `bind` to
/// port 0 (our fake peers, every listener of ours) draws from: a dialer that
/// retries before its listener is up can then never reach another test's
/// listener that happened to get the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000u32, low.saturating_sub(10_000));
    if span < 1000 {
        return ephemeral_port();
    }
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = first + seed.wrapping_add(n.wrapping_mul(7919)) % span;
        let port = u16::try_from(port).unwrap_or(0);
        if port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    ephemeral_port()
}

fn ephemeral_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
