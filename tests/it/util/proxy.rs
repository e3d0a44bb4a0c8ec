//! A TCP proxy that counts what the dialer sends through it (the bytes on
//! the wire, not what pincat reports) and can cut a connection once it
//! has relayed a given number of them, as a dropped link would.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// A running proxy; it stops when the test process ends.
pub struct Proxy {
    pub addr: String,
    up: Arc<AtomicU64>,
    cut: Arc<AtomicU64>,
    /// Cut the next connection once it relayed this many bytes back.
    cut_down: Arc<AtomicU64>,
    /// The first [`CAPTURE`] bytes relayed, both directions mixed: what
    /// someone on the path sees.
    pub capture: Arc<Mutex<Vec<u8>>>,
}

/// How much of the traffic a proxy keeps for [`Proxy::capture`].
pub const CAPTURE: usize = 32 << 20;

impl Proxy {
    /// Relays every connection to `upstream`.
    pub fn start(upstream: &str) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (up, cut) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(u64::MAX)),
        );
        let cut_down = Arc::new(AtomicU64::new(u64::MAX));
        let capture: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (u, c, d, cap) = (up.clone(), cut.clone(), cut_down.clone(), capture.clone());
        let upstream = upstream.to_string();
        thread::spawn(move || {
            for client in l.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (u, c, cap) = (u.clone(), c.clone(), cap.clone());
                let down = d.swap(u64::MAX, Ordering::SeqCst);
                thread::spawn(move || relay(client, server, &u, &c, down, &cap));
            }
        });
        Proxy {
            addr,
            up,
            cut,
            cut_down,
            capture,
        }
    }

    /// Cuts the next connection once it relayed `n` bytes back to the dialer.
    pub fn cut_down_after(&self, n: u64) {
        self.cut_down.store(n, Ordering::SeqCst);
    }

    /// Cuts the next connection once it relayed `n` bytes from the dialer.
    pub fn cut_after(&self, n: u64) {
        self.cut.store(n, Ordering::SeqCst);
    }

    /// Bytes relayed from dialers since the last call (and resets).
    pub fn take_bytes(&self) -> u64 {
        self.up.swap(0, Ordering::SeqCst)
    }
}

fn keep(capture: &Mutex<Vec<u8>>, bytes: &[u8]) {
    let mut c = capture.lock().unwrap_or_else(|p| p.into_inner());
    let room = CAPTURE.saturating_sub(c.len()).min(bytes.len());
    c.extend_from_slice(&bytes[..room]);
}

fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    up: &AtomicU64,
    cut: &AtomicU64,
    down: u64,
    capture: &Arc<Mutex<Vec<u8>>>,
) {
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let cap = capture.clone();
    let back = thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut relayed = 0u64;
        while let Ok(n @ 1..) = s2.read(&mut buf) {
            let n = (n as u64).min(down - relayed) as usize;
            keep(&cap, &buf[..n]);
            if c2.write_all(&buf[..n]).is_err() {
                break;
            }
            relayed += n as u64;
            if relayed >= down {
                let _ = c2.shutdown(Shutdown::Both);
                let _ = s2.shutdown(Shutdown::Both);
                return;
            }
        }
        let _ = c2.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 << 10];
    let mut relayed = 0u64;
    let limit = cut.swap(u64::MAX, Ordering::SeqCst);
    while let Ok(n @ 1..) = client.read(&mut buf) {
        let n = (n as u64).min(limit - relayed) as usize;
        keep(capture, &buf[..n]);
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
        relayed += n as u64;
        up.fetch_add(n as u64, Ordering::SeqCst);
        if relayed >= limit {
            // The link drops: both ends see the connection reset.
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Write);
    let _ = back.join();
}
