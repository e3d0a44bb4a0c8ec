//! How each event reads: its JSON object (the stable schema in the README)
//! and its human line, with the size and rate formats both use.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Event, Kind};

impl Event {
    /// The JSON form (one object, `event` first).
    pub fn to_json(&self) -> Value {
        match self {
            Event::Listening {
                addr,
                fingerprint,
                dial_addrs,
                command,
                short_command,
                code,
                open,
                via,
                ..
            } => json!({"event": "listening", "addr": addr.to_string(),
                "fingerprint": fingerprint.to_string(), "dial_addrs": dial_addrs,
                "command": command, "send_command": command, "short_command": short_command,
                "code": code, "open": open, "via": via}),
            Event::Connected {
                peer,
                fingerprint,
                tls,
            } => json!({"event": "connected", "peer": peer.to_string(),
                "fingerprint": fingerprint.map(|f| f.to_string()), "tls_version": tls.version,
                "cipher_suite": tls.suite, "key_exchange": tls.group}),
            Event::FirstUse {
                peer,
                name,
                file,
                pin,
                fingerprint,
            } => json!({"event": "first-use", "peer": peer.to_string(), "name": shown(name),
                "file": shown(file), "pin": pin.to_string(),
                "fingerprint": fingerprint.to_string()}),
            Event::TransferStarted {
                peer,
                kind,
                names,
                files,
                bytes,
                skipped,
                ..
            } => {
                json!({"event": "transfer-started", "peer": peer.to_string(), "kind": kind.as_str(),
                "names": names.iter().map(|n| shown(n)).collect::<Vec<_>>(), "files": files,
                "bytes": bytes, "skipped": skipped.len(),
                "skipped_names": skipped.iter().take(SKIPPED_SHOWN).map(|n| shown(n)).collect::<Vec<_>>()})
            }
            Event::Progress { peer, bytes, total } => json!({"event": "progress",
                "peer": peer.to_string(), "bytes": bytes, "total": total}),
            Event::TransferDone(t) => json!({"event": "transfer-done", "peer": t.peer.to_string(),
                "kind": t.kind.as_str(), "files": t.files, "bytes": t.bytes,
                "resumed_bytes": t.resumed, "unverified": t.unverified,
                "duration_ms": t.duration.as_secs_f64() * 1000.0, "outcome": "ok"}),
            Event::Refused {
                peer,
                reason,
                fingerprint,
                message,
            } => json!({"event": "refused", "peer": peer.to_string(), "reason": reason.as_str(),
                "fingerprint": fingerprint.map(|f| f.to_string()), "message": shown(message)}),
            Event::Error {
                peer,
                code,
                message,
            } => json!({"event": "error", "peer": peer.map(|p| p.to_string()), "code": code,
                "message": shown(message)}),
            Event::Warning { message } => json!({"event": "warning", "message": shown(message)}),
            Event::Handler { .. } | Event::HandlerOutput { .. } => self.handler_json(),
            Event::Opened { .. }
            | Event::Closed { .. }
            | Event::RelayListening { .. }
            | Event::Paired { .. }
            | Event::RelayClosed { .. } => self.carried_json(),
        }
    }

    /// The JSON form of the events about carried connections: `forward`'s
    /// and `pipe`'s, and `pincat relay`'s own.
    fn carried_json(&self) -> Value {
        match self {
            Event::Opened { peer, to } => json!({"event": "opened", "peer": peer.to_string(),
                "to": to}),
            Event::Closed {
                peer,
                sent,
                received,
                duration,
                outcome,
            } => json!({"event": "closed", "peer": peer.to_string(), "sent": sent,
                "received": received, "duration_ms": duration.as_secs_f64() * 1000.0,
                "outcome": outcome}),
            Event::RelayListening { addr } => {
                json!({"event": "relay-listening", "addr": addr.to_string()})
            }
            Event::Paired { peer, partner } => json!({"event": "paired",
                "peer": peer.to_string(), "partner": partner.to_string()}),
            Event::RelayClosed {
                peer,
                partner,
                from_peer,
                from_partner,
                duration,
                outcome,
            } => json!({"event": "closed", "peer": peer.to_string(),
                "partner": partner.to_string(), "from_peer": from_peer,
                "from_partner": from_partner, "duration_ms": duration.as_secs_f64() * 1000.0,
                "outcome": outcome}),
            _ => Value::Null,
        }
    }

    /// The human form, or `None` for events people do not need to see.
    pub fn to_human(&self) -> Option<String> {
        Some(match self {
            Event::Listening { .. } | Event::Connected { .. } | Event::FirstUse { .. } => {
                return self.trust_line();
            }
            Event::Progress { .. } | Event::Opened { .. } => return None,
            Event::Handler { .. } | Event::HandlerOutput { .. } => return self.handler_line(),
            Event::RelayListening { addr } => format!("pincat: relay listening on {addr}"),
            Event::Paired { peer, partner } => format!("pincat: paired {peer} with {partner}"),
            Event::RelayClosed {
                peer,
                partner,
                from_peer,
                from_partner,
                outcome,
                ..
            } => format!(
                "pincat: closed {peer} with {partner} ({outcome}): {} and {}",
                human_bytes(*from_peer),
                human_bytes(*from_partner)
            ),
            Event::Closed {
                peer,
                sent,
                received,
                outcome,
                ..
            } => format!(
                "pincat: closed {peer} ({outcome}): sent {}, received {}",
                human_bytes(*sent),
                human_bytes(*received)
            ),
            Event::TransferStarted {
                peer,
                giving,
                kind,
                files,
                bytes,
                skipped,
                ..
            } => started_line((*peer, *giving), *kind, *files, *bytes, skipped),
            Event::TransferDone(t) => {
                let what = if t.kind == Kind::Files {
                    format!("{} file(s), ", t.files)
                } else {
                    String::new()
                };
                let kept = match (t.resumed, t.unverified) {
                    (0, _) => String::new(),
                    (n, 0) => format!(" ({} already there, not sent)", human_bytes(n)),
                    (n, u) => format!(
                        " ({} already there, not sent; {u} file(s) left as they were by size and time, content not compared)",
                        human_bytes(n)
                    ),
                };
                format!(
                    "pincat: done: {what}{}{kept} in {:.2} s ({}/s) with {}",
                    human_bytes(t.bytes),
                    t.duration.as_secs_f64(),
                    human_bytes(rate(t.bytes, t.duration)),
                    t.peer
                )
            }
            Event::Refused { peer, message, .. } => {
                format!("pincat: refused {peer}: {}", shown(message))
            }
            Event::Error { peer, message, .. } => match peer {
                // Most messages about one peer already name it.
                Some(p) if !message.contains(&p.to_string()) => {
                    format!("pincat: error: {p}: {}", shown(message))
                }
                Some(_) => format!("pincat: error: {}", shown(message)),
                None => format!("pincat: error: {}", shown(message)),
            },
            Event::Warning { message } => format!("pincat: warning: {}", shown(message)),
        })
    }

    /// The human lines of the events about whom we talk to: listening,
    /// connected, and a first use.
    fn trust_line(&self) -> Option<String> {
        Some(match self {
            Event::Listening {
                addr,
                fingerprint,
                dial_addrs,
                command,
                short_command,
                open,
                hint,
                via,
                ..
            } => {
                let on = match via {
                    Some(v) if dial_addrs.is_empty() => format!("relay {v}"),
                    Some(v) => format!("{addr} and relay {v}"),
                    None => addr.to_string(),
                };
                let mut s = format!(
                    "pincat: listening on {on}\npincat: fingerprint sha256:{fingerprint}\n\
                     pincat: on the {hint} machine run:\n  {command}"
                );
                if let Some(short) = short_command {
                    s.push_str(&format!(
                        "\npincat: or, to read aloud (the code alone checks both ends):\n  {short}"
                    ));
                }
                if *open {
                    s.push_str(
                        "\npincat: warning: --allow-any: anyone who connects first is served",
                    );
                }
                if dial_addrs.len() > 1 {
                    s.push_str(&format!(
                        "\npincat: (or with any of: {})",
                        dial_addrs[1..].join(", ")
                    ));
                }
                s
            }
            Event::Connected {
                peer,
                fingerprint,
                tls,
            } => {
                let cert = fingerprint
                    .map(|f| format!(", certificate sha256:{f}"))
                    .unwrap_or_default();
                format!(
                    "pincat: connected to {peer} ({}, {}, {}){cert}",
                    tls.version.replace('_', "."),
                    tls.suite,
                    tls.group
                )
            }
            Event::FirstUse {
                peer,
                name,
                file,
                pin,
                fingerprint,
            } => format!(
                "pincat: warning: FIRST USE of peer {} ({peer}): trusted the key it presented without a pin, and recorded it in {}:\n\
                 pincat:   {pin}  (certificate sha256:{fingerprint})\n\
                 pincat: check it with the peer's owner (`pincat fingerprint --spki` on their identity); from now on, another key is refused",
                shown(name),
                shown(file)
            ),
            _ => return None,
        })
    }
}

/// Free text as it may be shown: messages and names often quote a peer, and
/// whoever built them may have missed an escape. Escaping is idempotent, so
/// text escaped earlier is shown unchanged.
pub(crate) fn shown(text: &str) -> String {
    crate::protocol::escape_text(text)
}

/// Bytes per second.
pub fn rate(bytes: u64, d: Duration) -> u64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        (bytes as f64 / s) as u64
    } else {
        0
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Most skipped names a JSON event lists (`skipped` has the count).
const SKIPPED_SHOWN: usize = 20;

/// "; N skipped: a, b, ..." for what a transfer leaves out, or nothing.
fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    format!(
        "; {} skipped by the sender (special files, or links with --no-links): {}",
        skipped.len(),
        list_names(skipped, shown)
    )
}

/// Names as a person reads them in one line: the first few, each through
/// `escape`, and how many more.
pub(crate) fn list_names(names: &[String], escape: fn(&str) -> String) -> String {
    const SHOWN: usize = 5;
    let first: Vec<String> = names.iter().take(SHOWN).map(|n| escape(n)).collect();
    match names.len().saturating_sub(SHOWN) {
        0 => first.join(", "),
        more => format!("{} and {more} more", first.join(", ")),
    }
}

/// The human line of a transfer that starts, on the side that gives
/// ("sending ... to") or takes ("receiving ... from"); a tree in parts
/// announces no size.
fn started_line(
    (peer, giving): (std::net::SocketAddr, bool),
    kind: Kind,
    files: u32,
    bytes: Option<u64>,
    skipped: &[String],
) -> String {
    let (verb, dir) = match giving {
        true => ("sending", "to"),
        false => ("receiving", "from"),
    };
    let what = match (kind, bytes) {
        (Kind::Files, None) => "a large tree in parts".to_string(),
        (Kind::Files, Some(b)) => format!("{files} file(s), {}", human_bytes(b)),
        (Kind::Stream, _) => "a stream".to_string(),
        (Kind::Raw, _) => "raw data".to_string(),
    };
    let note = match giving {
        true => String::new(),
        false => skipped_note(skipped),
    };
    format!("pincat: {verb} {what} {dir} {peer}{note}")
}
