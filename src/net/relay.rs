//! Reaching a peer through a relay that only splices two TCP streams, on
//! the magic-wormhole transit relay protocol (that project's
//! `docs/transit.md`): each side connects and sends `please relay TOKEN
//! for side SIDE\n`; once a second connection with the same token and
//! another side arrives, the relay answers `ok\n` to both and from then on
//! carries bytes between them. TLS then runs through the splice exactly as
//! on a direct connection, with the same pins and codes: the relay sees
//! neither the data nor anything that lets it pose as either end.
//!
//! The token is derived (HKDF-SHA256, a pincat label) from a random
//! [`Rendezvous`] the listener makes and its paste-ready line carries,
//! never from the code: a relay learns nothing that helps it guess one.
//! A listener's registrations all use one side, so the relay never pairs
//! them with each other; two dialers it pairs fail their TLS handshake
//! (both speak first) and try again.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::{Duration, Instant};

use aws_lc_rs::hkdf;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

mod registrar;

pub use registrar::Registrar;

/// Bytes of randomness in a rendezvous (96 bits).
pub const RENDEZVOUS_LEN: usize = 12;

/// The longest line a relay answers with before the splice (`ok\n`, or an
/// explanation such as `bad handshake\n` or `impatient\n`).
const MAX_ANSWER: usize = 64;

/// The random value both ends derive the relay token from: made by the
/// listener, carried in its paste-ready line (`--via RELAY/RENDEZVOUS`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rendezvous([u8; RENDEZVOUS_LEN]);

impl Rendezvous {
    /// A fresh random rendezvous.
    pub fn generate() -> io::Result<Rendezvous> {
        let mut b = [0u8; RENDEZVOUS_LEN];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| io::Error::other("no randomness for a rendezvous"))?;
        Ok(Rendezvous(b))
    }

    /// The relay token: 32 bytes from HKDF-SHA256 over the rendezvous, as
    /// 64 hex digits (what the transit relay expects).
    pub fn token(&self) -> String {
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"pincat relay rendezvous v1").extract(&self.0);
        let mut out = [0u8; 32];
        // HKDF-SHA256 expands up to 8160 bytes: 32 cannot fail. Were it to,
        // every listener would share one token, so it must not pass quietly.
        prk.expand(&[b"transit token"], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .expect("HKDF-SHA256 expands 32 bytes");
        hex::encode(out)
    }
}

impl fmt::Display for Rendezvous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Rendezvous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rendezvous({self})")
    }
}

impl FromStr for Rendezvous {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "the rendezvous after the relay's address must be the {} hex digits the listener printed",
                RENDEZVOUS_LEN * 2
            )
        };
        let b = hex::decode(s).map_err(|_| bad())?;
        Ok(Rendezvous(b.try_into().map_err(|_| bad())?))
    }
}

/// A relay and (for a dialer, or a listener that keeps one) the rendezvous:
/// `HOST:PORT` or `HOST:PORT/RENDEZVOUS`.
#[derive(Clone, PartialEq, Eq)]
pub struct Via {
    /// The relay, `HOST:PORT` as the user typed it.
    pub relay: String,
    /// The meeting point; a listener without one makes a fresh one.
    pub rendezvous: Option<Rendezvous>,
}

impl Via {
    /// The same relay with a rendezvous: this one's, or a fresh one.
    pub fn with_rendezvous(&self) -> io::Result<Via> {
        Ok(Via {
            relay: self.relay.clone(),
            rendezvous: Some(match self.rendezvous {
                Some(r) => r,
                None => Rendezvous::generate()?,
            }),
        })
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rendezvous {
            Some(r) => write!(f, "{}/{r}", self.relay),
            None => f.write_str(&self.relay),
        }
    }
}

impl fmt::Debug for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Via({self})")
    }
}

impl FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (relay, rendezvous) = match s.split_once('/') {
            Some((a, r)) => (a, Some(r.parse()?)),
            None => (s, None),
        };
        if crate::peers::check_addr(relay).is_err() {
            return Err(format!(
                "the relay must be HOST:PORT (then /RENDEZVOUS on a dialer), not {:?}",
                crate::protocol::escape_text(relay)
            ));
        }
        Ok(Via {
            relay: relay.to_string(),
            rendezvous,
        })
    }
}

/// A random side: 8 bytes as 16 hex digits. One per listener (all its
/// registrations), one per dial.
pub fn new_side() -> io::Result<String> {
    let mut b = [0u8; 8];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| io::Error::other("no randomness for a relay side"))?;
    Ok(hex::encode(b))
}

/// Why a registration at the relay did not become a splice.
#[derive(Debug)]
pub enum RelayError {
    /// The relay could not be resolved or reached.
    Connect(io::Error),
    /// The relay answered something else than `ok` (its words).
    Refused(String),
    /// The connection failed or closed before `ok`.
    Io(io::Error),
    /// No partner within the wait.
    Timeout,
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::Connect(e) => write!(f, "cannot reach the relay: {e}"),
            RelayError::Refused(why) => write!(f, "the relay refused: {why}"),
            RelayError::Io(e) => write!(f, "the relay closed before pairing: {e}"),
            RelayError::Timeout => f.write_str("nobody came to the rendezvous in time"),
        }
    }
}

/// Resolves `relay` and connects to the first address that answers within
/// `timeout` each.
pub fn connect(relay: &str, timeout: Duration) -> Result<TcpStream, RelayError> {
    let addrs: Vec<SocketAddr> = relay
        .to_socket_addrs()
        .map_err(RelayError::Connect)?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the relay");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(RelayError::Connect(last))
}

/// Sends the request for `token` and `side` on `sock` and waits until the
/// relay pairs it (`ok\n`), polling `stop` about every `tick`, for at most
/// `wait` (`None`: as long as the relay keeps it). Reads one byte at a
/// time: what follows `ok\n` is the partner's, and stays in the socket.
pub fn register(
    sock: &mut TcpStream,
    token: &str,
    side: &str,
    wait: Option<Duration>,
    tick: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<(), RelayError> {
    let line = format!("please relay {token} for side {side}\n");
    sock.set_write_timeout(Some(tick.max(Duration::from_secs(5))))
        .map_err(RelayError::Io)?;
    sock.write_all(line.as_bytes()).map_err(RelayError::Io)?;
    sock.set_read_timeout(Some(tick)).map_err(RelayError::Io)?;
    let until = wait.map(|w| Instant::now() + w);
    let mut answer = Vec::with_capacity(8);
    let mut b = [0u8; 1];
    loop {
        if stop() || until.is_some_and(|u| Instant::now() >= u) {
            return Err(RelayError::Timeout);
        }
        match sock.read(&mut b) {
            Ok(0) => {
                return Err(RelayError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed",
                )));
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if answer.len() >= MAX_ANSWER => {
                return Err(RelayError::Refused("an over-long answer".into()));
            }
            Ok(_) => answer.push(b[0]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RelayError::Io(e)),
        }
    }
    sock.set_read_timeout(None).map_err(RelayError::Io)?;
    sock.set_write_timeout(None).map_err(RelayError::Io)?;
    match answer.as_slice() {
        b"ok" => Ok(()),
        // The relay's words, escaped like any peer's before anyone sees them.
        other => Err(RelayError::Refused(crate::protocol::peer_text(other))),
    }
}

/// A dialer's connection through `via`: registers under the rendezvous's
/// token and waits to be paired, at most `wait` in all for the relay to
/// answer (each connect bounded by `connect_timeout`) and the listener to
/// be there. Every failure is a connect error (exit 8).
pub(crate) fn dial(
    via: &Via,
    connect_timeout: Duration,
    wait: Duration,
) -> crate::Result<TcpStream> {
    use crate::error::Error;
    let unreachable = |e: io::Error| Error::Connect {
        addr: format!("the relay {}", via.relay),
        source: e,
        listener: "the relay",
    };
    let Some(r) = via.rendezvous else {
        let e = anyhow::anyhow!("--via {via}: a dialer needs the listener's rendezvous");
        return Err(e.into());
    };
    let until = Instant::now() + wait;
    let side = new_side().map_err(|e| Error::Other(e.into()))?;
    let mut sock = loop {
        match connect(&via.relay, connect_timeout) {
            Ok(s) => break s,
            Err(RelayError::Connect(e)) if Instant::now() + Duration::from_millis(500) >= until => {
                return Err(unreachable(e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let left = until.saturating_duration_since(Instant::now());
    let tick = Duration::from_millis(250);
    match register(&mut sock, &r.token(), &side, Some(left), tick, &|| false) {
        Ok(()) => Ok(sock),
        Err(RelayError::Timeout) => Err(unreachable(io::Error::new(
            io::ErrorKind::TimedOut,
            "nobody waits at that rendezvous (is the listener running, with this --via?)",
        ))),
        Err(RelayError::Connect(e) | RelayError::Io(e)) => Err(unreachable(e)),
        Err(e @ RelayError::Refused(_)) => Err(unreachable(io::Error::other(e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_via_parses_with_and_without_rendezvous() {
        let v: Via = "relay.example:4001".parse().unwrap();
        assert_eq!(v.relay, "relay.example:4001");
        assert!(v.rendezvous.is_none());
        let r = Rendezvous::generate().unwrap();
        let v: Via = format!("[::1]:4001/{r}").parse().unwrap();
        assert_eq!(v.relay, "[::1]:4001");
        assert_eq!(v.rendezvous, Some(r));
        assert_eq!(v.to_string(), format!("[::1]:4001/{r}"));
        let bad_host = format!("r#x:4001/{r}");
        for bad in [
            "relay",
            "relay:0",
            "relay:x",
            "relay:4001/abc",
            "relay:4001/",
            &bad_host,
        ] {
            assert!(bad.parse::<Via>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_relay_answer_other_than_ok_is_escaped_and_bounded() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = s.write_all("busy \u{202e}gnp.exe\n".as_bytes());
            let (mut s2, _) = l.accept().unwrap();
            let _ = s2.write_all(&[b'x'; 200]);
        });
        for _ in 0..2 {
            let mut s = connect(&addr, Duration::from_secs(5)).unwrap();
            let tick = Duration::from_millis(50);
            let wait = Some(Duration::from_secs(5));
            let e = register(&mut s, &"0".repeat(64), "00", wait, tick, &|| false).unwrap_err();
            let RelayError::Refused(words) = e else {
                panic!("{e}");
            };
            assert!(
                !words.contains('\u{202e}') && words.len() < 100,
                "{words:?}"
            );
        }
        t.join().unwrap();
    }

    #[test]
    fn the_token_is_64_hex_digits_and_differs_per_rendezvous() {
        let (a, b) = (
            Rendezvous::generate().unwrap(),
            Rendezvous::generate().unwrap(),
        );
        assert_ne!(a, b);
        let t = a.token();
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(t, a.token());
        assert_ne!(t, b.token());
        // Neither the rendezvous nor its hex appears in the token.
        assert!(!t.contains(&a.to_string()));
        assert_eq!(new_side().unwrap().len(), 16);
    }
}
