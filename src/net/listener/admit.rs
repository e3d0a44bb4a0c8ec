//! From an accepted socket to an admitted, pinned session: the TLS
//! handshake, the code exchange when the listener has a code, the
//! `max_conns` cap, and every refusal on the way reported as an event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::UnbufferedServerConnection;

use super::Job;
use crate::events::{Event, Events, Reason};
use crate::fingerprint::Fingerprint;
use crate::pair::{self, AdmitFailure, Ends, Gate, Serving, Verdict};
use crate::protocol::{Message, Refusal, RejectCode, Role};
use crate::session::{Session, WireError};
use crate::verify::Presented;

/// How accepted connections become pinned sessions.
pub struct AcceptSpec {
    /// One TLS config for every connection (the verifier records per thread).
    pub tls: Arc<rustls::ServerConfig>,
    /// Whether clients must present an allowed certificate.
    pub allow: bool,
    /// The data role this listener plays when it speaks the pincat framing
    /// (a busy refusal is then its preamble and a REJECT); `None` for raw.
    pub framed: Option<Role>,
    /// Limit for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Idle limit once connected.
    pub idle_timeout: Duration,
    /// Connections past the handshake at once.
    pub max_conns: usize,
    /// Where refusals are reported.
    pub events: Arc<Events>,
    /// The listener's code, when dialers must prove it.
    pub gate: Option<Gate>,
    /// The listener's certificate (the code's confirmation covers it).
    pub fingerprint: Fingerprint,
}

/// A connection that got in: its pinned session, the dialer's certificate
/// (when it presented one), and, for a one-shot listener with a code, the
/// mark that it is being served (no other code is taken until it drops).
pub struct Admitted {
    /// The session.
    pub session: Session,
    /// The dialer's certificate fingerprint.
    pub client: Option<Fingerprint>,
    /// What its partial files are kept under for a resume: the code it
    /// proved, else its key.
    pub secret: Option<crate::digest::Hash>,
    _serving: Serving,
}

/// A TLS server connection for `peer` (reported when it cannot start).
fn tls_server(spec: &AcceptSpec, peer: SocketAddr) -> Option<UnbufferedServerConnection> {
    UnbufferedServerConnection::new(spec.tls.clone())
        .map_err(|e| {
            spec.events.emit(Event::Error {
                peer: Some(peer),
                code: "failure",
                message: format!("cannot start TLS: {e}"),
            });
        })
        .ok()
}

/// Runs the TLS handshake of an accepted connection and admits it under
/// `max_conns`. Refusals (not allowed, no handshake in time, busy) are
/// reported as events; `None` then.
pub fn accept_session(spec: &AcceptSpec, job: Job) -> Option<Admitted> {
    let presented = Presented::per_thread();
    presented.clear();
    let Job {
        sock,
        peer,
        ticket,
        relayed,
    } = job;
    let conn = tls_server(spec, peer)?;
    let mut s = match Session::handshake(conn, sock, spec.handshake_timeout) {
        Ok(s) => s,
        Err(_) if ticket.evicted() => return None,
        Err(e) => {
            let (reason, message) = refusal_of(&e, spec.allow, &presented);
            spec.events.emit(Event::Refused {
                peer,
                reason,
                fingerprint: presented.get(),
                message,
            });
            return None;
        }
    };
    if relayed {
        s.through_relay(false);
    }
    let _ = s.set_idle_timeout(spec.idle_timeout);
    let client = presented.get();
    // The code exchange is part of getting in: until it is done the
    // connection counts as a handshake (the oldest is cut when too many
    // are in progress), never against --max-conns, so silent strangers
    // cannot lock out the dialer with the code.
    let serving = match &spec.gate {
        Some(gate) => {
            let ends = Ends {
                listener: spec.fingerprint,
                dialer: client,
            };
            match pair::admit(&mut s, gate, &ends, spec.handshake_timeout) {
                Ok(serving) => serving,
                Err(f) => {
                    if !ticket.evicted() {
                        refuse_code(spec, &mut s, peer, client, gate, f);
                    }
                    return None;
                }
            }
        }
        None => Serving::default(),
    };
    if !ticket.establish() {
        refuse_busy(spec, &mut s, peer, client);
        return None;
    }
    spec.events.emit(Event::Connected {
        peer,
        fingerprint: client,
        tls: s.tls_info().clone(),
    });
    let secret = match &spec.gate {
        Some(g) => Some(crate::store::secret_of_code(
            &spec.fingerprint,
            g.code().as_str(),
        )),
        None => client.as_ref().map(crate::store::secret_of_key),
    };
    Some(Admitted {
        session: s,
        client,
        secret,
        _serving: serving,
    })
}

/// Refuses a connection past `max_conns`: a pincat dialer is told it is
/// busy (so it can wait and try again), then it is closed and reported.
fn refuse_busy(spec: &AcceptSpec, s: &mut Session, peer: SocketAddr, client: Option<Fingerprint>) {
    let message = format!(
        "already {} connections open (--max-conns); try again later",
        spec.max_conns
    );
    reject_framed(spec, s, Refusal::new(RejectCode::Busy, message.clone()));
    s.close();
    spec.events.emit(Event::Refused {
        peer,
        reason: Reason::MaxConns,
        fingerprint: client,
        message,
    });
}

/// Tells a dialer that did not prove the code why (a pincat dialer without
/// `--code` gets a REJECT it can explain), closes, and reports it.
fn refuse_code(
    spec: &AcceptSpec,
    s: &mut Session,
    peer: SocketAddr,
    client: Option<Fingerprint>,
    gate: &Gate,
    f: AdmitFailure,
) {
    if matches!(f, AdmitFailure::NoCode) {
        let r = Refusal::new(
            RejectCode::CodeRequired,
            "this listener admits only the dialer with its code: add --code CODE from its paste-ready line",
        );
        reject_framed(spec, s, r);
    }
    let (reason, message) = code_refusal(&f, gate);
    s.close();
    spec.events.emit(Event::Refused {
        peer,
        reason,
        fingerprint: client,
        message,
    });
}

/// Sends the listener's preamble and a REJECT when it speaks the pincat
/// framing; a raw listener has no way to say why.
fn reject_framed(spec: &AcceptSpec, s: &mut Session, r: Refusal) {
    if let Some(role) = spec.framed {
        let _ = s
            .write_preamble(role)
            .and_then(|()| s.write_message(&Message::Reject(r)));
    }
}

/// Why a dialer was not admitted by the code, for the refusal event.
fn code_refusal(f: &AdmitFailure, gate: &Gate) -> (Reason, String) {
    let counted = || {
        format!(
            "failed code attempt {} of {}",
            gate.failures(),
            gate.policy().budget()
        )
    };
    match f {
        AdmitFailure::NoCode => (Reason::Code, "the dialer gave no code".to_string()),
        AdmitFailure::NotPake => (
            Reason::Code,
            "the dialer sent something other than the code exchange".to_string(),
        ),
        AdmitFailure::Held(Verdict::Wait(_)) => (
            Reason::Code,
            "a code attempt came too soon after another (it was not answered)".to_string(),
        ),
        AdmitFailure::Held(_) => (
            Reason::Code,
            "no more codes are accepted here (it was not answered)".to_string(),
        ),
        AdmitFailure::WrongCode => (
            Reason::Code,
            format!(
                "the code was not confirmed: a wrong code, or someone in the middle ({})",
                counted()
            ),
        ),
        AdmitFailure::Broken(WireError::Timeout) => (
            Reason::Code,
            format!(
                "the dialer did not finish the code exchange in time ({})",
                counted()
            ),
        ),
        AdmitFailure::Broken(e) => (
            Reason::Code,
            format!(
                "the code was not confirmed: the dialer broke off the exchange, after a wrong code or an abort ({e}; {})",
                counted()
            ),
        ),
        AdmitFailure::Early(WireError::Timeout) => {
            (Reason::Timeout, "no code exchange in time".to_string())
        }
        AdmitFailure::Early(e) => (
            Reason::Closed,
            format!("the connection ended before the code exchange: {e}"),
        ),
    }
}

fn refusal_of(e: &WireError, allow: bool, presented: &Presented) -> (Reason, String) {
    match (e, allow) {
        (WireError::Tls(t), true) if presented.accepted() => (
            Reason::NotAllowed,
            format!("the sender could not prove it holds the key of its certificate ({t})"),
        ),
        (WireError::Tls(rustls::Error::NoCertificatesPresented), true) => (
            Reason::NotAllowed,
            "the sender presented no client certificate".to_string(),
        ),
        (WireError::Tls(t @ rustls::Error::InvalidCertificate(c)), true) => {
            // With --allow-ca, say why the CA check refused it too.
            let why = match c {
                rustls::CertificateError::ApplicationVerificationFailure => String::new(),
                _ => crate::verify::ca::explain(t)
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default(),
            };
            (
                Reason::NotAllowed,
                match presented.get() {
                    Some(fp) => format!("client certificate sha256:{fp} is not allowed{why}"),
                    None => format!("the client certificate was refused{why}"),
                },
            )
        }
        (WireError::Tls(t), _) if is_signature_failure(t) => (
            Reason::NotAllowed,
            format!("the sender could not prove it holds the key of its certificate ({t})"),
        ),
        (WireError::Timeout, _) => (Reason::Timeout, "no TLS handshake in time".to_string()),
        (e, _) => (Reason::Handshake, format!("TLS handshake failed: {e}")),
    }
}

fn is_signature_failure(t: &rustls::Error) -> bool {
    matches!(
        t,
        rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
            | rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            | rustls::Error::PeerMisbehaved(_)
    )
}
