//! The dialing side of every client path: resolve, connect (retrying while
//! the listener starts), pinned TLS 1.3 handshake, and the errors a user can
//! act on when any of it fails.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rustls::AlertDescription;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;

use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::fingerprint::{Fingerprint, Pin};
use crate::identity::Identity;
use crate::session::{Session, WireError};
use crate::verify::{self, Presented};

/// How to reach and trust the listening side.
#[derive(Debug, Clone)]
pub struct DialOptions {
    /// `HOST:PORT` as the user gave it.
    pub addr: String,
    /// The pins: the listener's certificate or public key must match one
    /// (several while a key rotates).
    pub pins: Vec<Pin>,
    /// Client certificate to present (mutual pinning).
    pub identity: Option<Identity>,
    /// Limit for each TCP connect attempt.
    pub connect_timeout: Duration,
    /// Keep retrying refused/unreachable connects this long.
    pub retry_for: Option<Duration>,
    /// Limit for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Limit for any single read or write once connected (receipt included).
    pub idle_timeout: Duration,
}

impl DialOptions {
    /// Options with the documented defaults.
    pub fn new(addr: impl Into<String>, pin: impl Into<Pin>) -> Self {
        DialOptions {
            addr: addr.into(),
            pins: vec![pin.into()],
            identity: None,
            connect_timeout: Duration::from_secs(10),
            retry_for: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    /// Zero durations are mistakes, as on the command line.
    pub(crate) fn check(&self) -> Result<()> {
        let zero = [
            ("connect_timeout", self.connect_timeout.is_zero()),
            ("handshake_timeout", self.handshake_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("retry_for", self.retry_for.is_some_and(|d| d.is_zero())),
            ("pins (empty)", self.pins.is_empty()),
        ];
        match zero.iter().find(|(_, z)| *z) {
            Some((name, _)) => Err(anyhow!(
                "SendOptions::{name} must not be zero (leave it at its default instead)"
            )
            .into()),
            None => Ok(()),
        }
    }

    /// The pins as a person reads them.
    pub fn pins_shown(&self) -> String {
        let shown: Vec<String> = self
            .pins
            .iter()
            .map(|p| match p {
                Pin::Cert(f) => format!("sha256:{f}"),
                spki => spki.to_string(),
            })
            .collect();
        shown.join(", ")
    }

    /// Maps a session failure to the error a user can act on.
    pub(crate) fn classify(&self, e: WireError, peer: SocketAddr, when: &str) -> Error {
        classify(e, self, peer, when)
    }
}

/// Connects (retrying within `retry_for`) and completes the pinned handshake.
pub fn dial(opts: &DialOptions, events: &Events) -> Result<Session> {
    opts.check()?;
    let sock = connect_retrying(opts)?;
    let peer = sock
        .peer_addr()
        .context("cannot read the peer address")
        .map_err(Error::Other)?;
    let presented = Presented::default();
    let config =
        verify::client_config_pins(opts.pins.clone(), opts.identity.as_ref(), presented.clone())?;
    let mut s = Session::handshake(client(config)?, sock, opts.handshake_timeout).map_err(|e| {
        match (&e, presented.get()) {
            (WireError::Tls(_), Some(fp)) if !opts.pins.contains(&Pin::Cert(fp)) => {
                Error::PinMismatch {
                    addr: peer,
                    expected: opts.pins_shown(),
                    presented: fp,
                }
            }
            (WireError::Tls(tls), Some(_)) => Error::Impostor {
                addr: peer,
                detail: tls.to_string(),
            },
            _ => handshake_failure(e, opts, peer, "--handshake-timeout"),
        }
    })?;
    s.set_idle_timeout(opts.idle_timeout)
        .context("cannot set socket timeouts")?;
    events.emit(Event::Connected {
        peer,
        fingerprint: presented.get(),
        tls: s.tls_info().clone(),
    });
    Ok(s)
}

/// A client connection with pincat's fixed, meaningless server name.
fn client(config: std::sync::Arc<rustls::ClientConfig>) -> Result<UnbufferedClientConnection> {
    let name =
        ServerName::try_from(verify::SERVER_NAME).map_err(|e| anyhow!("bad server name: {e}"))?;
    Ok(UnbufferedClientConnection::new(config, name).context("cannot start TLS")?)
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

fn connect_once(opts: &DialOptions) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = opts
        .addr
        .to_socket_addrs()
        .map_err(|e| Error::Connect {
            addr: opts.addr.clone(),
            source: e,
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
    })
}

/// A handshake failure that is not about the pin. A timeout names `flag`,
/// the one that bounds the handshake: --idle-timeout only starts after it.
fn handshake_failure(e: WireError, opts: &DialOptions, peer: SocketAddr, flag: &str) -> Error {
    match e {
        WireError::Timeout => Error::Timeout(format!(
            "during the TLS handshake with {peer}: it did not complete within {:?}; is a pincat receiver listening there? (see {flag})",
            opts.handshake_timeout
        )),
        e => classify(e, opts, peer, "during the TLS handshake"),
    }
}

fn classify(e: WireError, opts: &DialOptions, peer: SocketAddr, when: &str) -> Error {
    match e {
        e if e.refused_our_certificate() => Error::NotAllowed {
            addr: peer,
            fingerprint: opts.identity.as_ref().map(|i| i.fingerprint()),
        },
        WireError::Tls(rustls::Error::AlertReceived(AlertDescription::ProtocolVersion))
        | WireError::Tls(rustls::Error::PeerIncompatible(_)) => Error::Other(anyhow!(
            "the server at {peer} does not speak TLS 1.3 (pincat accepts nothing older)"
        )),
        WireError::Tls(t) => Error::Incomplete(format!("TLS failure with {peer} {when}: {t}")),
        WireError::Timeout => Error::Timeout(format!(
            "{when} with {peer}: nothing arrived for {:?}; it may be stuck or gone (see --idle-timeout)",
            opts.idle_timeout
        )),
        WireError::Closed | WireError::Reset => Error::Incomplete(format!(
            "the peer at {peer} closed the connection {when}; nothing is confirmed (is it a pincat receiver?)"
        )),
        WireError::Protocol(p) => Error::Incomplete(format!("the receiver at {peer}: {p}")),
        WireError::Io(io) => Error::Incomplete(format!("connection to {peer} failed {when}: {io}")),
    }
}

/// Connects to `addr`, completes enough of a TLS 1.3 handshake to see the
/// server's certificate, and returns its fingerprint. No application byte
/// is ever sent: the handshake is aborted by the verifier itself.
pub fn remote_fingerprint(addr: &str, timeout: Duration) -> Result<Fingerprint> {
    let mut opts = DialOptions::new(addr, Fingerprint::from_bytes([0; 32]));
    opts.connect_timeout = timeout;
    opts.handshake_timeout = timeout;
    let sock = connect_once(&opts)?;
    let peer = sock.peer_addr().context("cannot read the peer address")?;
    let presented = Presented::default();
    let config = verify::client_config(None, None, presented.clone())?;
    let outcome = Session::handshake(client(config)?, sock, timeout);
    match (presented.get(), outcome) {
        (Some(fp), _) => Ok(fp),
        (None, Err(e)) => Err(handshake_failure(e, &opts, peer, "--connect-timeout")),
        (None, Ok(_)) => Err(anyhow!("the server at {peer} presented no certificate").into()),
    }
}
