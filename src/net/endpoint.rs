//! What every listening verb shares: a bound socket, the identity it
//! presents, and the paste-ready line it prints for the other machine.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::Result;
use crate::events::{Event, Events};
use crate::fingerprint::Fingerprint;
use crate::identity::Identity;
use crate::net::listener::{Listening, ShutdownHandle};
use crate::verify::{self, Allow, Presented};

/// A bound listener with its identity.
pub struct Endpoint {
    listening: Listening,
    bound: SocketAddr,
    /// Where another machine can dial us: interface addresses are read
    /// once, at bind.
    dial_addrs: Vec<String>,
    identity: Identity,
    events: Arc<Events>,
}

impl Endpoint {
    /// Binds `addr` with `identity` (or a fresh ephemeral one).
    pub fn bind(addr: SocketAddr, identity: Option<&Identity>, events: Events) -> Result<Endpoint> {
        let identity = match identity {
            Some(id) => id.clone(),
            None => Identity::generate()?,
        };
        let listening = Listening::bind(addr)?;
        Ok(Endpoint {
            bound: listening.local_addr().unwrap_or(addr),
            dial_addrs: listening.dial_addrs(),
            listening,
            identity,
            events: Arc::new(events),
        })
    }

    /// The accept loop.
    pub fn listening(&self) -> &Listening {
        &self.listening
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.bound
    }

    /// The fingerprint the other side must pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// Where events go.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// A handle that stops the listener from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.listening.shutdown_handle()
    }

    /// `{before} ADDR{after} --pin FP`, with the first address another
    /// machine can dial.
    pub fn command(&self, before: &str, after: &str) -> String {
        let addr = self.dial_addrs.first().map_or("HOST", String::as_str);
        format!("{before} {addr}{after} --pin {}", self.fingerprint())
    }

    /// Emits the `listening` event: address, fingerprint, every dial
    /// address, and `command` for the `hint` machine.
    pub fn announce(&self, command: String, hint: &'static str) {
        self.events.emit(Event::Listening {
            addr: self.local_addr(),
            fingerprint: self.fingerprint(),
            dial_addrs: self.dial_addrs.clone(),
            command,
            hint,
        });
    }

    /// The server TLS config (pinning clients when `allow` is set), and
    /// whether it does.
    pub fn tls(&self, allow: &Option<Allow>) -> Result<(Arc<rustls::ServerConfig>, bool)> {
        let pinned = allow.is_some();
        let tls = verify::server_config(&self.identity, allow.as_ref(), Presented::per_thread())?;
        Ok((tls, pinned))
    }
}
