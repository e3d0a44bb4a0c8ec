//! The dialing side of every client path: resolve, connect (retrying while
//! the listener starts), pinned TLS 1.3 handshake, and the errors a user can
//! act on when any of it fails.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rustls::AlertDescription;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;

use crate::error::{Error, KeyChanged, Result};
use crate::events::{Event, Events};
use crate::fingerprint::{Fingerprint, Pin};
use crate::identity::Identity;
use crate::net::relay::Via;

mod connect;
use crate::pair::{self, Code, DialFailure, Ends};
use crate::peers::{self, FirstUse, KnownPeer, Peer};
use crate::session::{Session, WireError};
use crate::verify::ca::{self, CaRoots};
use crate::verify::{self, Presented};
use connect::{connect_any, connect_once};

/// How to reach and trust the listening side.
#[derive(Debug, Clone)]
pub struct DialOptions {
    /// `HOST:PORT` as the user gave it.
    pub addr: String,
    /// The pins: the listener's certificate or public key must match one
    /// (several while a key rotates).
    pub pins: Vec<Pin>,
    /// A private CA: a server whose certificate it issued (valid now and
    /// carrying `ca_name`) is accepted too. `pins` may then be empty.
    pub ca: Option<CaRoots>,
    /// The name a CA-issued server certificate must carry; by default the
    /// HOST of `addr`.
    pub ca_name: Option<String>,
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
    /// The known peer this dial is for, if dialed by name: a changed key
    /// is reported against its entry, and with no pins and
    /// [`KnownPeer::trust_first_use`] the key the server proves it holds is
    /// recorded there before anything is sent.
    pub known_peer: Option<KnownPeer>,
    /// The listener's code: both ends prove it inside the session before
    /// anything else moves. With no pins and no CA it alone authenticates
    /// the listener (its confirmation covers the listener's certificate).
    pub code: Option<Code>,
    /// After the code is confirmed, save the listener's key as a known
    /// peer of this name in this peers file.
    pub save: Option<(String, std::path::PathBuf)>,
    /// A relay (with the listener's rendezvous) to go through: after
    /// [`DIRECT_FIRST`] on `addr` when there is one, else at once.
    pub via: Option<Via>,
}

/// How long a dialer that has both a direct address and a relay tries the
/// direct one before going through the relay.
pub const DIRECT_FIRST: Duration = Duration::from_secs(2);

impl DialOptions {
    /// Options with the documented defaults.
    pub fn new(addr: impl Into<String>, pin: impl Into<Pin>) -> Self {
        Self::with_pins(addr, vec![pin.into()])
    }

    /// Options with the documented defaults and any number of pins (none
    /// only for a first use of a [`KnownPeer`]).
    pub fn with_pins(addr: impl Into<String>, pins: Vec<Pin>) -> Self {
        DialOptions {
            addr: addr.into(),
            pins,
            ca: None,
            ca_name: None,
            identity: None,
            connect_timeout: Duration::from_secs(10),
            retry_for: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            known_peer: None,
            code: None,
            save: None,
            via: None,
        }
    }

    /// Options trusting a private CA instead of pins (see [`DialOptions::ca`]).
    pub fn with_ca(addr: impl Into<String>, ca: CaRoots) -> Self {
        let mut o = Self::with_pins(addr, Vec::new());
        o.ca = Some(ca);
        o
    }

    /// The options of a known peer: its address and pins, its entry in
    /// `file`, and whether a first use may record its key.
    pub fn for_peer(peer: &Peer, file: &Path, trust_first_use: bool) -> Self {
        let mut o = Self::with_pins(peer.addr.clone(), peer.pins.clone());
        o.via = peer.via.clone();
        o.known_peer = Some(KnownPeer {
            name: peer.name.clone(),
            file: file.to_path_buf(),
            trust_first_use,
        });
        o
    }

    /// Zero durations are mistakes, as on the command line; so are no pins,
    /// except for a first use.
    pub(crate) fn check(&self) -> Result<()> {
        let zero = [
            ("connect_timeout", self.connect_timeout.is_zero()),
            ("handshake_timeout", self.handshake_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("retry_for", self.retry_for.is_some_and(|d| d.is_zero())),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(anyhow!(
                "SendOptions::{name} must not be zero (leave it at its default instead)"
            )
            .into());
        }
        if self.addr.is_empty() && self.via.is_none() {
            return Err(anyhow!("SendOptions::addr is empty and there is no relay (via)").into());
        }
        if self.pins.is_empty() && self.ca.is_none() && !self.first_use() && self.code.is_none() {
            return Err(anyhow!(
                "SendOptions::pins is empty: give a pin, a CA, a code, or a KnownPeer with trust_first_use"
            )
            .into());
        }
        Ok(())
    }

    /// Whether the server's key is taken on the code's word alone.
    fn code_only(&self) -> bool {
        self.pins.is_empty() && self.ca.is_none() && self.code.is_some()
    }

    /// Whether this dial records the key of a known peer that has no pin yet.
    fn first_use(&self) -> bool {
        self.pins.is_empty()
            && self.ca.is_none()
            && self.known_peer.as_ref().is_some_and(|k| k.trust_first_use)
    }

    /// The name a CA-issued server certificate must carry.
    pub fn ca_subject(&self) -> Result<ServerName<'static>> {
        Ok(ca::subject_name(self.ca_name_shown())?)
    }

    fn ca_name_shown(&self) -> &str {
        self.ca_name
            .as_deref()
            .unwrap_or_else(|| ca::host_of(&self.addr))
    }

    /// The pins as a person reads them.
    pub fn pins_shown(&self) -> String {
        pins_shown(&self.pins)
    }

    /// Maps a session failure to the error a user can act on.
    pub(crate) fn classify(&self, e: WireError, peer: SocketAddr, when: &str) -> Error {
        classify(e, self, peer, when)
    }
}

/// Pins as a person reads them: `sha256:HEX` or `sha256//BASE64`, comma-separated.
fn pins_shown(pins: &[Pin]) -> String {
    let shown: Vec<String> = pins
        .iter()
        .map(|p| match p {
            Pin::Cert(f) => format!("sha256:{f}"),
            spki => spki.to_string(),
        })
        .collect();
    shown.join(", ")
}

/// Connects (retrying within `retry_for`) and completes the pinned handshake
/// (for a first use, records the key first: see [`DialOptions::known_peer`]).
pub fn dial(opts: &DialOptions, events: &Events) -> Result<Session> {
    dial_seen(opts, events).map(|(s, _)| s)
}

/// Dials as [`dial`] with a code, confirms it, says goodbye, and returns
/// the listener's certificate fingerprint and public-key pin, which the
/// code confirmed.
pub fn confirmed_keys(opts: &DialOptions, events: &Events) -> Result<(Fingerprint, Pin)> {
    let (mut s, seen) = dial_seen(opts, events)?;
    s.close();
    match (seen.get(), seen.spki()) {
        (Some(fp), Some(pin)) => Ok((fp, pin)),
        _ => Err(anyhow!("the server presented no certificate with a readable key").into()),
    }
}

/// How long a dialer with a code waits, in all, for a listener that is
/// busy with another dialer's attempt (or slowing down after failed ones)
/// before giving up: no PAKE ran, so trying again costs no attempt.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

/// As [`dial`], also returning what the listener presented (its key,
/// which a code confirmed when one was given).
pub(crate) fn dial_seen(opts: &DialOptions, events: &Events) -> Result<(Session, Presented)> {
    opts.check()?;
    let patience = opts.retry_for.unwrap_or_default().max(BUSY_PATIENCE);
    let until = Instant::now() + patience;
    loop {
        let (secs, peer, crossed) = match dial_once(opts, events, false)? {
            Ok(done) => return Ok(done),
            Err(busy) => busy,
        };
        let wait = Duration::from_secs(secs.into());
        if Instant::now() + wait > until && crossed {
            return Err(Error::Connect {
                addr: format!("the relay {peer}"),
                source: io::Error::other(
                    "it kept pairing this dialer with other dialers, not with the listener",
                ),
                listener: "the listener",
            });
        }
        if Instant::now() + wait > until {
            return Err(code_error(DialFailure::Wait(secs), peer));
        }
        events.emit(Event::Warning {
            message: match crossed {
                true => format!(
                    "the relay at {peer} paired this dialer with another dialer (both spoke first; nothing was sent); trying again in {secs} s"
                ),
                false => format!(
                    "the listener at {peer} is busy with another attempt or slowing down after failed ones; trying again in {secs} s"
                ),
            },
        });
        std::thread::sleep(wait);
    }
}

/// One dial: the session, or how many seconds a busy listener asked us to
/// wait before trying again (and whether it was a relay pairing us with
/// another dialer instead).
type Busy = (u8, SocketAddr, bool);

/// One dial, directly first unless `relay_only` (a direct address that
/// answered but failed its handshake for a reason other than the keys).
fn dial_once(
    opts: &DialOptions,
    events: &Events,
    relay_only: bool,
) -> Result<std::result::Result<(Session, Presented), Busy>> {
    let (sock, relayed) = connect_any(opts, relay_only)?;
    if relayed && opts.first_use() && opts.code.is_none() {
        return Err(first_use_through_relay(opts));
    }
    let peer = sock
        .peer_addr()
        .context("cannot read the peer address")
        .map_err(Error::Other)?;
    let presented = Presented::default();
    let config = client_config(opts, &presented)?;
    let mut s = match Session::handshake(client(config)?, sock, opts.handshake_timeout) {
        Ok(s) => s,
        // The relay paired us with another dialer (both spoke first):
        // nothing was sent; try again.
        // (Or the relay closed right after saying ok.)
        Err(WireError::Tls(_) | WireError::Closed) if relayed && presented.get().is_none() => {
            return Ok(Err((1, peer, true)));
        }
        // The direct address answered, but not as a pincat (another host
        // on this network has that address?): the relay next. A key that
        // is not the pinned one stays fatal: that is not a wrong host.
        Err(e) if !relayed && opts.via.is_some() => {
            let why = handshake_error(e, opts, peer, &presented);
            if presented.get().is_some() {
                return Err(why);
            }
            events.emit(Event::Warning {
                message: format!("the direct address failed ({why}); trying the relay"),
            });
            return dial_once(opts, events, true);
        }
        Err(e) => return Err(handshake_error(e, opts, peer, &presented)),
    };
    if relayed {
        s.through_relay(true);
    }
    s.set_idle_timeout(opts.idle_timeout)
        .context("cannot set socket timeouts")?;
    if let Some(code) = &opts.code {
        let ends = Ends {
            listener: presented
                .get()
                .ok_or_else(|| anyhow!("the server at {peer} presented no certificate"))?,
            dialer: opts.identity.as_ref().map(Identity::fingerprint),
        };
        match pair::prove(&mut s, code, &ends, opts.handshake_timeout) {
            Ok(()) => {}
            Err(DialFailure::Wait(secs)) => return Ok(Err((secs, peer, false))),
            Err(f) => return Err(code_error(f, peer)),
        }
    }
    if opts.first_use() {
        // The session is dropped unsent if this fails.
        record_first_use(opts, peer, &presented, events)?;
    }
    if let (Some((name, file)), Some(pin)) = (&opts.save, presented.spki())
        && peers::save_confirmed(file, name, &opts.addr, opts.via.as_ref(), pin)?
    {
        {
            events.emit(Event::FirstUse {
                peer,
                name: name.clone(),
                file: file.display().to_string(),
                pin,
                fingerprint: presented.get().unwrap_or(Fingerprint::from_bytes([0; 32])),
            });
        }
    }
    events.emit(Event::Connected {
        peer,
        fingerprint: presented.get(),
        tls: s.tls_info().clone(),
    });
    Ok(Ok((s, presented)))
}

/// Whoever answers through a relay could be the relay itself: a first use
/// there takes a code as well.
fn first_use_through_relay(opts: &DialOptions) -> Error {
    let name = opts.known_peer.as_ref().map_or("", |k| k.name.as_str());
    anyhow!(
        "peer {name}: a first use (--tofu) through a relay is refused: the relay itself could pose as the peer; add the listener's --code as well (the code confirms the key before it is recorded), or the peer's --pin; nothing was sent"
    )
    .into()
}

/// The TLS client configuration that decides the pin: any key (a first
/// use, or a code that will confirm it), the CA and pins, or pins alone.
fn client_config(
    opts: &DialOptions,
    presented: &Presented,
) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    let identity = opts.identity.as_ref();
    Ok(match &opts.ca {
        _ if opts.first_use() || opts.code_only() => {
            verify::client_config_first_use(identity, presented.clone())?
        }
        Some(roots) => {
            let ca = Some((roots, opts.ca_subject()?));
            verify::client_config_trust(opts.pins.clone(), ca, identity, presented.clone())?
        }
        None => verify::client_config_pins(opts.pins.clone(), identity, presented.clone())?,
    })
}

/// A failed code exchange, as the dialer's error (exit 9 unless the
/// network failed).
fn code_error(f: DialFailure, peer: SocketAddr) -> Error {
    let nothing = "nothing was sent";
    Error::CodeNotConfirmed(match f {
        DialFailure::NotConfirmed => format!(
            "the code was not confirmed by {peer}: a wrong code, or someone in the middle; {nothing}"
        ),
        DialFailure::NoCodeExchange => format!(
            "the code was not confirmed: the listener at {peer} did not run the code exchange (it may admit by certificate, --allow, or anyone, --allow-any; then dial without --code); {nothing}"
        ),
        DialFailure::Closed => format!(
            "the code was not confirmed: the listener at {peer} accepts no more codes (its failed attempts are used up, or it already paired); {nothing}"
        ),
        DialFailure::Wait(n) => format!(
            "the code was not tried: the listener at {peer} is busy with another attempt or slowing down after failed ones; try again in {n} s; {nothing}"
        ),
        DialFailure::Wire(WireError::Timeout) => format!(
            "the code was not confirmed: the listener at {peer} did not answer the code exchange in time; {nothing}"
        ),
        DialFailure::Wire(e) => format!(
            "the code was not confirmed: the listener at {peer} ended the code exchange ({e}); is this its code? {nothing}"
        ),
    })
}

/// What a failed handshake means: another certificate than the pinned
/// ones (or one the CA did not vouch for), the trusted one without its
/// key, or no pincat at all.
fn handshake_error(e: WireError, opts: &DialOptions, peer: SocketAddr, seen: &Presented) -> Error {
    let trusted = seen.accepted() || seen.matches(&opts.pins);
    match (&e, seen.get()) {
        (WireError::Tls(tls), Some(fp)) if opts.ca.is_some() && !trusted => Error::Untrusted {
            addr: peer,
            presented: fp,
            why: ca::explain(tls).unwrap_or_else(|| tls.to_string()),
            name: opts.ca_name_shown().to_string(),
        },
        (WireError::Tls(_), Some(_)) if !opts.first_use() && !trusted => {
            mismatch(opts, peer, seen, &opts.pins)
        }
        (WireError::Tls(tls), Some(_)) => Error::Impostor {
            addr: peer,
            detail: match opts.first_use() {
                true => format!("{tls}; this first use recorded nothing"),
                false => tls.to_string(),
            },
        },
        _ => handshake_failure(e, opts, peer, "--handshake-timeout"),
    }
}

/// The pin-mismatch error: against the known peer's entry when dialed by
/// name (with the command that updates it), else against the given pins.
fn mismatch(opts: &DialOptions, peer: SocketAddr, seen: &Presented, recorded: &[Pin]) -> Error {
    let cert = seen.get().unwrap_or(Fingerprint::from_bytes([0; 32]));
    match (&opts.known_peer, seen.spki()) {
        (Some(k), Some(presented)) => Error::PeerKeyChanged(Box::new(KeyChanged {
            name: k.name.clone(),
            file: k.file.display().to_string(),
            addr: peer,
            dial: opts.addr.clone(),
            recorded: pins_shown(recorded),
            presented,
            cert,
        })),
        _ => Error::PinMismatch {
            addr: peer,
            expected: pins_shown(recorded),
            presented: cert,
        },
    }
}

/// Records the key the server just proved it holds in the known peer's
/// entry, and says so loudly; fails closed if another pincat recorded
/// another key meanwhile.
fn record_first_use(
    opts: &DialOptions,
    peer: SocketAddr,
    seen: &Presented,
    events: &Events,
) -> Result<()> {
    let (Some(k), Some(pin), Some(cert)) = (&opts.known_peer, seen.spki(), seen.get()) else {
        return Err(
            anyhow!("the server at {peer} presented no certificate with a readable key").into(),
        );
    };
    match peers::record_first_use(k, &opts.addr, pin)? {
        FirstUse::Recorded => events.emit(Event::FirstUse {
            peer,
            name: k.name.clone(),
            file: k.file.display().to_string(),
            pin,
            fingerprint: cert,
        }),
        // Another pincat recorded this very key a moment ago: as if it
        // had been read from the file.
        FirstUse::AlreadyRecorded => {}
        FirstUse::Conflict(recorded) => return Err(mismatch(opts, peer, seen, &recorded)),
    }
    Ok(())
}

/// A client connection with pincat's fixed, meaningless server name.
fn client(config: std::sync::Arc<rustls::ClientConfig>) -> Result<UnbufferedClientConnection> {
    let name =
        ServerName::try_from(verify::SERVER_NAME).map_err(|e| anyhow!("bad server name: {e}"))?;
    Ok(UnbufferedClientConnection::new(config, name).context("cannot start TLS")?)
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
    let (seen, peer) = remote_presented(addr, timeout)?;
    seen.get()
        .ok_or_else(|| anyhow!("the server at {peer} presented no certificate").into())
}

/// As [`remote_fingerprint`], returning the public-key pin (`sha256//BASE64`)
/// of the certificate the server presents.
pub fn remote_spki(addr: &str, timeout: Duration) -> Result<Pin> {
    let (seen, peer) = remote_presented(addr, timeout)?;
    seen.spki().ok_or_else(|| {
        anyhow!("the server at {peer} presented no certificate with a readable public key").into()
    })
}

/// What the server at `addr` presents, seen by a verifier that refuses it.
fn remote_presented(addr: &str, timeout: Duration) -> Result<(Presented, SocketAddr)> {
    let mut opts = DialOptions::new(addr, Fingerprint::from_bytes([0; 32]));
    opts.connect_timeout = timeout;
    opts.handshake_timeout = timeout;
    let sock = connect_once(&opts)?;
    let peer = sock.peer_addr().context("cannot read the peer address")?;
    let presented = Presented::default();
    let config = verify::client_config(None, None, presented.clone())?;
    let outcome = Session::handshake(client(config)?, sock, timeout);
    match (presented.get(), outcome) {
        (Some(_), _) => Ok((presented, peer)),
        (None, Err(e)) => Err(handshake_failure(e, &opts, peer, "--connect-timeout")),
        (None, Ok(_)) => Err(anyhow!("the server at {peer} presented no certificate").into()),
    }
}
