//! What every listening verb shares: a bound socket, the identity it
//! presents, and the paste-ready line it prints for the other machine.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::Error;
use crate::error::Result;
use crate::events::{Event, Events};
use crate::fingerprint::Fingerprint;
use crate::identity::Identity;
use crate::net::listener::{AcceptSpec, Listening, ShutdownHandle};
use crate::pair::{Gate, GatePolicy};
use crate::protocol::Role;
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
    /// Whether dialers must present an allowed certificate.
    allow: bool,
    /// The code dialers must prove, if any.
    gate: Option<Gate>,
}

/// How a listener's connections are admitted and bounded.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The data role of a framed listener; `None` for raw bytes.
    pub framed: Option<Role>,
    /// Limit for the TLS handshake and for the code exchange.
    pub handshake_timeout: std::time::Duration,
    /// Idle limit once admitted.
    pub idle_timeout: std::time::Duration,
    /// Connections past the handshake at once.
    pub max_conns: usize,
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
            allow: false,
            gate: None,
        })
    }

    /// Who this listener admits: dialers with an allowed certificate
    /// (`allow`), the dialer that proves `code`, or (neither) anyone.
    pub fn admitting(mut self, allow: &Option<Allow>, code: Option<Gate>) -> Self {
        self.allow = allow.is_some();
        self.gate = code;
        self
    }

    /// The one place that decides who gets in, for every listening verb:
    /// the TLS config (pinning client certificates when `allow` is set)
    /// and the code gate. A one-shot listener whose code attempts are used
    /// up ends (exit 10); a kept-open one says so and accepts no more codes.
    pub fn accept_spec(&self, allow: &Option<Allow>, b: Bounds) -> crate::Result<AcceptSpec> {
        let seen = Presented::per_thread();
        let tls = match (allow, &self.gate) {
            (None, Some(_)) => verify::server_config_any_client(&self.identity, seen)?,
            _ => verify::server_config(&self.identity, allow.as_ref(), seen)?,
        };
        if let Some(g) = &self.gate {
            let (handle, events) = (self.shutdown_handle(), self.events.clone());
            let one_shot = matches!(g.policy(), GatePolicy::OneShot(_));
            g.on_exhausted(Box::new(move |n| {
                let message = format!(
                    "{n} code attempts failed (wrong, broken off or timed out): {}",
                    match one_shot {
                        true => "the listener ended; nothing was given or stored",
                        false => "no more codes are accepted; restart with a new code",
                    }
                );
                match one_shot {
                    true => handle.end_with(Error::CodeAttempts(message)),
                    false => events.emit(Event::Error {
                        peer: None,
                        code: "code-attempts",
                        message,
                    }),
                }
            }));
        }
        Ok(AcceptSpec {
            tls,
            allow: allow.is_some(),
            framed: b.framed,
            handshake_timeout: b.handshake_timeout,
            idle_timeout: b.idle_timeout,
            max_conns: b.max_conns,
            events: self.events.clone(),
            gate: self.gate.clone(),
            fingerprint: self.fingerprint(),
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

    /// The paste-ready line for the other machine: `{before} ADDR{after}
    /// --pin FP`, with the first address another machine can dial, then
    /// `--code CODE` or `--identity YOUR.id` (a placeholder: the dialer's
    /// identity, which the allow list names) as this listener requires.
    pub fn command(&self, before: &str, after: &str) -> String {
        let mut c = format!(
            "{before} {}{after} --pin {}",
            self.dial_addr(),
            self.fingerprint()
        );
        if let Some(g) = &self.gate {
            c.push_str(&format!(" --code {}", g.code()));
        }
        if self.allow {
            c.push_str(" --identity YOUR.id");
        }
        c
    }

    /// The short form to read aloud: the code alone authenticates both
    /// ends. `None` without a code.
    pub fn short_command(&self, before: &str, after: &str) -> Option<String> {
        let g = self.gate.as_ref()?;
        Some(format!(
            "{before} {}{after} --code {}",
            self.dial_addr(),
            g.code()
        ))
    }

    fn dial_addr(&self) -> &str {
        self.dial_addrs.first().map_or("HOST", String::as_str)
    }

    /// Emits the `listening` event: address, fingerprint, every dial
    /// address, the code, and the commands for the `hint` machine (built
    /// from `before` and `after` as in [`Endpoint::command`]).
    pub fn announce(&self, before: &str, after: &str, hint: &'static str) {
        self.events.emit(Event::Listening {
            addr: self.local_addr(),
            fingerprint: self.fingerprint(),
            dial_addrs: self.dial_addrs.clone(),
            command: self.command(before, after),
            short_command: self.short_command(before, after),
            code: self.gate.as_ref().map(|g| g.code().to_string()),
            open: !self.allow && self.gate.is_none(),
            hint,
        });
    }
}
