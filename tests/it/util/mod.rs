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
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
