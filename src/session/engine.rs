//! Which record layer a session runs after its handshake: pincat's own
//! ([`crate::record`], sealing and opening in place) or rustls's
//! unbuffered connection, chosen once per process by `PINCAT_RECORD=rustls`
//! (for measuring one against the other).

use std::sync::OnceLock;

use rustls::{AlertDescription, Error};

use super::unbuffered::Traffic;
use crate::record::{self, MAX_PLAIN, TAIL, Tls};

/// Headers and tails of the records sealed in place.
pub(crate) type Meta = Vec<([u8; record::HEADER], [u8; TAIL])>;

/// True when this process runs its sessions on rustls's record layer.
pub(crate) fn rustls_selected() -> bool {
    static SELECTED: OnceLock<bool> = OnceLock::new();
    *SELECTED.get_or_init(|| std::env::var_os("PINCAT_RECORD").is_some_and(|v| v == "rustls"))
}

/// A session's record layer.
pub(crate) enum Engine {
    /// pincat's own.
    Own(Tls),
    /// rustls's unbuffered connection.
    Rustls {
        conn: Box<dyn Traffic>,
        peer_closed: bool,
    },
}

impl Engine {
    /// True once the peer's close_notify arrived.
    pub(crate) fn peer_closed(&self) -> bool {
        match self {
            Engine::Own(tls) => tls.peer_closed(),
            Engine::Rustls { peer_closed, .. } => *peer_closed,
        }
    }

    /// Appends our close_notify to `out`.
    pub(crate) fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Engine::Own(tls) => tls.alert(AlertDescription::CloseNotify, out),
            Engine::Rustls { conn, .. } => conn.close_notify(out),
        }
    }

    /// After a failure: appends the fatal alert the peer must hear (ours
    /// names it; rustls queued its own).
    pub(crate) fn fatal_alert(&mut self, alert: Option<AlertDescription>, out: &mut Vec<u8>) {
        match self {
            Engine::Own(tls) => {
                if let Some(a) = alert {
                    let _ = tls.alert(a, out);
                }
            }
            Engine::Rustls { conn, .. } => conn.queued_alert(out),
        }
    }

    /// Seals `batch` as records: in place, noting each header and tail in
    /// `meta` (ours), or into `wire` (rustls). A KeyUpdate they need goes
    /// to the end of `pre` first (ours). Returns the wire bytes.
    pub(crate) fn seal_batch(
        &mut self,
        batch: &mut [u8],
        pre: &mut Vec<u8>,
        meta: &mut Meta,
        wire: &mut Vec<u8>,
    ) -> Result<usize, Error> {
        meta.clear();
        wire.clear();
        match self {
            Engine::Own(tls) => {
                tls.prepare(batch.len().div_ceil(MAX_PLAIN), pre)?;
                for chunk in batch.chunks_mut(MAX_PLAIN) {
                    meta.push(tls.seal(chunk)?);
                }
                Ok(pre.len() + batch.len() + meta.len() * (record::HEADER + TAIL))
            }
            Engine::Rustls { conn, .. } => {
                if !batch.is_empty() {
                    conn.encrypt(batch, wire)?;
                }
                Ok(pre.len() + wire.len())
            }
        }
    }
}
