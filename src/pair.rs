//! Pairing: a short code proves that both ends are the peers who saw the
//! listener's paste-ready line. SPAKE2 (RustCrypto `spake2`, Ed25519 group)
//! runs inside the established TLS 1.3 session, bound to its exporter (RFC
//! 9266 `tls-exporter`), with key confirmation both ways over a transcript
//! that also covers both certificates. A man in the middle runs two TLS
//! sessions with different exporters and fails after one online guess; the
//! code itself is never sent.
//!
//! Wire format (before any preamble or data, fixed sizes):
//! ```text
//! dialer   -> listener  MAGIC(8) | A(33)
//! listener -> dialer    MAGIC(8) | status(1) | B(33) | confirm_L(32)
//! dialer   -> listener  confirm_D(32)
//! ```
//! A status other than 0 (no more codes accepted, or wait) carries no
//! SPAKE2 share: it costs the dialer no guess. The listener counts every
//! session in which it sent B as an attempt until `confirm_D` checks out.

mod code;
mod failures;
mod gate;

use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity as SpakeId, Password, Spake2};

pub use code::{Code, DEFAULT_WORDS, WORDS, words};
pub use gate::{Gate, GatePolicy, Serving, Verdict, state_dir};

use crate::fingerprint::Fingerprint;
use crate::session::{Session, WireError};

/// What a pairing message starts with (a pincat preamble starts with
/// `PINCAT` and a version, so either side can tell the two apart).
pub const MAGIC: &[u8; 8] = b"PINPAKE1";
const ELEMENT: usize = 33;
const MAC: usize = 32;
const HELLO: usize = MAGIC.len() + ELEMENT;
const REPLY: usize = MAGIC.len() + 1 + ELEMENT + MAC;

/// Reply status: B and the listener's confirmation follow.
const GO: u8 = 0;
/// Reply status: this listener accepts no more codes.
const CLOSED: u8 = 1;
/// Reply status: too many failures lately; the next byte is seconds to wait.
const WAIT: u8 = 2;

/// The certificates of the two ends, as both sides see them.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    /// The listener's certificate.
    pub listener: Fingerprint,
    /// The dialer's certificate, when it presented one.
    pub dialer: Option<Fingerprint>,
}

/// Why a dialer's proof failed.
#[derive(Debug)]
pub enum DialFailure {
    /// The listener's confirmation did not check out: a wrong code, or a
    /// man in the middle.
    NotConfirmed,
    /// The listener answered with something other than the code exchange.
    NoCodeExchange,
    /// The listener accepts no more codes.
    Closed,
    /// The listener asks to wait this long before the next attempt.
    Wait(u8),
    /// The session failed.
    Wire(WireError),
}

/// Why a listener refused a dialer.
#[derive(Debug)]
pub enum AdmitFailure {
    /// The dialer sent a pincat preamble instead of the code exchange.
    NoCode,
    /// The dialer sent something that is neither.
    NotPake,
    /// Refused before any share was sent (no more codes, or wait).
    Held(Verdict),
    /// The dialer's confirmation did not check out (a counted attempt).
    WrongCode,
    /// The session failed or timed out after the share was sent (counted).
    Broken(WireError),
    /// The session failed before the share was sent (not counted).
    Early(WireError),
}

/// The two calls the code exchange needs of a connection.
trait Channel {
    fn send(&mut self, buf: &[u8]) -> Result<(), WireError>;
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), WireError>;
}

impl Channel for Session {
    fn send(&mut self, buf: &[u8]) -> Result<(), WireError> {
        self.write_all(buf)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), WireError> {
        self.read_exact(buf)
    }
}

/// Any reader and writer of plaintext (a test peer on rustls's buffered API).
struct Io<'a, S>(&'a mut S);

impl<S: std::io::Read + std::io::Write> Channel for Io<'_, S> {
    fn send(&mut self, buf: &[u8]) -> Result<(), WireError> {
        self.0
            .write_all(buf)
            .and_then(|()| self.0.flush())
            .map_err(WireError::Io)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), WireError> {
        self.0.read_exact(buf).map_err(WireError::Io)
    }
}

/// Proves `code` to the listener on `s` and checks the listener's proof;
/// nothing else is read or written first. `limit` bounds the exchange.
pub fn prove(
    s: &mut Session,
    code: &Code,
    ends: &Ends,
    limit: Duration,
) -> Result<(), DialFailure> {
    let binding = s.channel_binding().ok_or(DialFailure::NotConfirmed)?;
    s.set_deadline(Some(Instant::now() + limit));
    let r = prove_on(s, &binding, code, ends);
    s.set_deadline(None);
    r
}

/// [`prove`] over any plaintext stream whose TLS `tls-exporter` value is
/// `binding` (for peers built on rustls's buffered API, such as tests').
pub fn prove_io<S: std::io::Read + std::io::Write>(
    s: &mut S,
    binding: &[u8; 32],
    code: &Code,
    ends: &Ends,
) -> Result<(), DialFailure> {
    prove_on(&mut Io(s), binding, code, ends)
}

fn prove_on(
    s: &mut impl Channel,
    binding: &[u8; 32],
    code: &Code,
    ends: &Ends,
) -> Result<(), DialFailure> {
    let (id_a, id_b) = ids(binding);
    let (state, a) = Spake2::<Ed25519Group>::start_a(&password(code), &id_a, &id_b);
    s.send(&[MAGIC.as_slice(), &a].concat())
        .map_err(DialFailure::Wire)?;
    let mut reply = [0u8; REPLY];
    s.recv(&mut reply[..MAGIC.len() + 1])
        .map_err(DialFailure::Wire)?;
    if &reply[..MAGIC.len()] != MAGIC {
        return Err(DialFailure::NoCodeExchange);
    }
    match reply[MAGIC.len()] {
        GO => {}
        CLOSED => return Err(DialFailure::Closed),
        WAIT => {
            let mut secs = [0u8; 1];
            s.recv(&mut secs).map_err(DialFailure::Wire)?;
            return Err(DialFailure::Wait(secs[0]));
        }
        _ => return Err(DialFailure::NoCodeExchange),
    }
    s.recv(&mut reply[MAGIC.len() + 1..])
        .map_err(DialFailure::Wire)?;
    let b = &reply[MAGIC.len() + 1..MAGIC.len() + 1 + ELEMENT];
    let theirs = &reply[MAGIC.len() + 1 + ELEMENT..];
    let key = state.finish(b).map_err(|_| DialFailure::NotConfirmed)?;
    let t = transcript(binding, ends, &a, b);
    let (listener_mac, dialer_mac) = confirmations(&key);
    hmac::verify(&listener_mac, &t, theirs).map_err(|_| DialFailure::NotConfirmed)?;
    let ours = hmac::sign(&dialer_mac, &t);
    s.send(ours.as_ref()).map_err(DialFailure::Wire)?;
    Ok(())
}

/// Admits the dialer on `s` only if it proves the gate's code; nothing else
/// is read or written first. `limit` bounds the exchange. Keep the
/// returned guard while serving the dialer (a one-shot listener takes no
/// other code meanwhile).
pub fn admit(
    s: &mut Session,
    gate: &Gate,
    ends: &Ends,
    limit: Duration,
) -> Result<Serving, AdmitFailure> {
    let binding = s.channel_binding().ok_or(AdmitFailure::NotPake)?;
    s.set_deadline(Some(Instant::now() + limit));
    let r = admit_within(s, gate, ends, &binding);
    s.set_deadline(None);
    r
}

fn admit_within(
    s: &mut Session,
    gate: &Gate,
    ends: &Ends,
    binding: &[u8; 32],
) -> Result<Serving, AdmitFailure> {
    let mut hello = [0u8; HELLO];
    read_exact(s, &mut hello[..MAGIC.len()]).map_err(AdmitFailure::Early)?;
    if &hello[..MAGIC.len()] != MAGIC {
        return Err(match hello.starts_with(crate::protocol::MAGIC) {
            true => AdmitFailure::NoCode,
            false => AdmitFailure::NotPake,
        });
    }
    read_exact(s, &mut hello[MAGIC.len()..]).map_err(AdmitFailure::Early)?;
    let a = &hello[MAGIC.len()..];
    let attempt = match gate.reserve() {
        Verdict::Go(attempt) => attempt,
        held => {
            let mut reply = MAGIC.to_vec();
            match held {
                Verdict::Wait(d) => reply.extend([WAIT, d.as_secs().clamp(1, 255) as u8]),
                _ => reply.push(CLOSED),
            }
            let _ = s.write_all(&reply);
            return Err(AdmitFailure::Held(held));
        }
    };
    // From here on this session is a counted attempt unless it succeeds:
    // `attempt` counts a failure when dropped unconfirmed.
    let (id_a, id_b) = ids(binding);
    let (state, b) = Spake2::<Ed25519Group>::start_b(&password(gate.code()), &id_a, &id_b);
    let key = state.finish(a).map_err(|_| AdmitFailure::WrongCode)?;
    let t = transcript(binding, ends, a, &b);
    let (listener_mac, dialer_mac) = confirmations(&key);
    let mut reply = Vec::with_capacity(REPLY);
    reply.extend_from_slice(MAGIC);
    reply.push(GO);
    reply.extend_from_slice(&b);
    reply.extend_from_slice(hmac::sign(&listener_mac, &t).as_ref());
    s.write_all(&reply).map_err(AdmitFailure::Broken)?;
    let mut theirs = [0u8; MAC];
    read_exact(s, &mut theirs).map_err(AdmitFailure::Broken)?;
    hmac::verify(&dialer_mac, &t, &theirs).map_err(|_| AdmitFailure::WrongCode)?;
    Ok(attempt.confirmed())
}

fn read_exact(s: &mut Session, buf: &mut [u8]) -> Result<(), WireError> {
    s.recv(buf)
}

fn password(code: &Code) -> Password {
    Password::new(code.as_str().as_bytes())
}

/// The SPAKE2 identities carry the TLS exporter: the PAKE's session id.
fn ids(binding: &[u8; 32]) -> (SpakeId, SpakeId) {
    let id = |side: &[u8]| {
        let mut v = b"pincat pair v1 ".to_vec();
        v.extend_from_slice(side);
        v.extend_from_slice(binding);
        SpakeId::new(&v)
    };
    (id(b"dialer "), id(b"listener "))
}

/// What both confirmations cover: the exporter, both certificates and
/// both shares.
fn transcript(binding: &[u8; 32], ends: &Ends, a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"pincat pair v1 transcript");
    h.update(binding);
    h.update(ends.listener.as_bytes());
    match &ends.dialer {
        Some(fp) => {
            h.update([1u8]);
            h.update(fp.as_bytes());
        }
        None => h.update([0u8]),
    }
    h.update(a);
    h.update(b);
    h.finalize().into()
}

/// One confirmation key per direction, derived from the SPAKE2 key.
fn confirmations(key: &[u8]) -> (hmac::Key, hmac::Key) {
    let derive = |label: &[u8]| {
        let k = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), label);
        hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
    };
    (
        derive(b"pincat pair v1 listener confirms"),
        derive(b"pincat pair v1 dialer confirms"),
    )
}

#[cfg(test)]
mod tests;
