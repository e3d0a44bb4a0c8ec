//! A TCP proxy that carries every connection slowly in both directions, so
//! a transfer on loopback lasts long enough to be watched.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// Relays every connection to `upstream`, at most `per_tick` bytes per
/// `tick` each way; returns the address to dial. It stops with the tests.
pub fn slow_proxy(upstream: &str, per_tick: usize, tick: Duration) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let upstream = upstream.to_string();
    thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || pump(client, server, per_tick, tick));
            thread::spawn(move || pump(s, c, per_tick, tick));
        }
    });
    addr
}

fn pump(mut from: TcpStream, mut to: TcpStream, per_tick: usize, tick: Duration) {
    let mut buf = vec![0u8; per_tick];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        thread::sleep(tick);
    }
    let _ = to.shutdown(Shutdown::Write);
}
