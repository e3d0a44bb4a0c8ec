//! How the events of a receiver's handler (`serve --exec`) read: its end
//! (JSON `handler`, or `error` with code `handler` when it failed) and the
//! lines it writes on its stderr, prefixed with the peer it handles.

use serde_json::{Value, json};

use super::Event;
use super::render::shown;

impl Event {
    /// The JSON form of a handler event.
    pub(super) fn handler_json(&self) -> Value {
        match self {
            Event::Handler {
                peer,
                status,
                ok: true,
                reply_bytes,
                ..
            } => json!({"event": "handler", "peer": peer.map(|p| p.to_string()),
                "handler_status": status, "reply_bytes": reply_bytes}),
            Event::Handler {
                peer,
                status,
                message,
                ..
            } => json!({"event": "error", "peer": peer.map(|p| p.to_string()),
                "code": "handler", "handler_status": status, "message": shown(message)}),
            Event::HandlerOutput {
                peer,
                fingerprint,
                line,
            } => json!({"event": "handler-output", "peer": peer.to_string(),
                "fingerprint": fingerprint.map(|f| f.to_string()), "line": shown(line)}),
            _ => Value::Null,
        }
    }

    /// The human line of a handler event.
    pub(super) fn handler_line(&self) -> Option<String> {
        Some(match self {
            Event::Handler {
                peer,
                ok: true,
                reply_bytes,
                ..
            } => format!(
                "pincat: handler for {} exited 0 ({reply_bytes} bytes of reply)",
                peer.map_or_else(|| "the peer".to_string(), |p| p.to_string())
            ),
            Event::Handler { peer, message, .. } => match peer {
                Some(p) => format!("pincat: error: {p}: {}", shown(message)),
                None => format!("pincat: error: {}", shown(message)),
            },
            Event::HandlerOutput {
                peer,
                fingerprint,
                line,
            } => format!("{} {}", prefix(*peer, *fingerprint), shown(line)),
            _ => return None,
        })
    }
}

/// `[handler ADDR SHA256:ab12cd34…]`: which peer's handler wrote a line.
pub fn prefix(
    peer: std::net::SocketAddr,
    fingerprint: Option<crate::fingerprint::Fingerprint>,
) -> String {
    match fingerprint {
        Some(f) => {
            let hex = f.to_string();
            let short = hex.get(..16).unwrap_or(&hex);
            format!("[handler {peer} SHA256:{short}…]")
        }
        None => format!("[handler {peer}]"),
    }
}
