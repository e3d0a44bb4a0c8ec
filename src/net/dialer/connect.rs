//! Reaching the listener's socket: directly (retrying while it starts),
//! or through a relay after a short try of the direct address.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{DIRECT_FIRST, DialOptions};
use crate::error::{Error, Result};
use crate::net::relay;

/// Connects directly, or through the relay (after trying the direct
/// address for [`DIRECT_FIRST`], when there is one): the socket, and
/// whether it goes through the relay.
pub(super) fn connect_any(opts: &DialOptions, relay_only: bool) -> Result<(TcpStream, bool)> {
    let Some(via) = &opts.via else {
        return Ok((connect_retrying(opts)?, false));
    };
    if !opts.addr.is_empty() && !relay_only {
        let mut direct = opts.clone();
        direct.connect_timeout = opts.connect_timeout.min(DIRECT_FIRST);
        if let Ok(s) = connect_once(&direct) {
            return Ok((s, false));
        }
    }
    let wait = opts.retry_for.unwrap_or_default().max(opts.connect_timeout);
    Ok((relay::dial(via, opts.connect_timeout, wait)?, true))
}

fn connect_retrying(opts: &DialOptions) -> Result<TcpStream> {
    let deadline = opts.retry_for.map(|d| Instant::now() + d);
    let mut delay = Duration::from_millis(50);
    loop {
        match connect_once(opts) {
            Ok(sock) => return Ok(sock),
            Err(e) => {
                let retryable = matches!(&e, Error::Connect { .. } | Error::Timeout(_));
                match deadline {
                    Some(d) if retryable && Instant::now() + delay < d => {
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_millis(500));
                    }
                    _ => return Err(e),
                }
            }
        }
    }
}

/// What `send` dials; the other dialing verbs say what they expect
/// ([`Error::expecting`]).
const SERVE: &str = "`pincat serve`";

pub(super) fn connect_once(opts: &DialOptions) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = opts
        .addr
        .to_socket_addrs()
        .map_err(|e| Error::Connect {
            addr: opts.addr.clone(),
            source: e,
            listener: SERVE,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for a in &addrs {
        match TcpStream::connect_timeout(a, opts.connect_timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    if matches!(
        last.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        return Err(Error::Timeout(format!(
            "connecting to {} (see --connect-timeout)",
            opts.addr
        )));
    }
    Err(Error::Connect {
        addr: opts.addr.clone(),
        source: last,
        listener: SERVE,
    })
}
