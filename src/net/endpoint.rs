//! What every listening verb shares: the options it is given ([`Listen`]),
//! a bound socket, the identity it presents, and the paste-ready line it
//! prints for the other machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;

use crate::error::Error;
use crate::error::Result;
use crate::events::{Event, Events};
use crate::fingerprint::Fingerprint;
use crate::identity::Identity;
use crate::net::listener::{AcceptSpec, Flow, Handler, Limits, Listening, ShutdownHandle};
use crate::net::relay::Via;
use crate::pair::{Gate, GatePolicy};
use crate::protocol::Role;
use crate::verify::{self, Allow, Presented};

/// What every listening verb (`serve`, `offer`, `pipe --listen`,
/// `forward --listen`) is given: where to bind, who it is, who it admits,
/// and how many at once for how long. Each verb's options embed it as
/// `listen`.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Address to bind; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Persistent identity; `None` generates an ephemeral one.
    pub identity: Option<Identity>,
    /// When set, only dialers presenting one of these certificates get in.
    pub allow: Option<Allow>,
    /// When set, only the dialer that proves this code gets in (with
    /// neither, anyone who connects).
    pub code: Option<Gate>,
    /// Most connections past the TLS handshake at once.
    pub max_conns: usize,
    /// Most TLS handshakes in progress at once; past it the oldest is cut.
    pub max_handshakes: usize,
    /// Limit for a dialer's TLS handshake (and its code exchange).
    pub handshake_timeout: Duration,
    /// Limit for any single read or write once connected.
    pub idle_timeout: Duration,
    /// A relay that also reaches this listener (its rendezvous is made
    /// fresh unless given): dialers then need a code or an allowed
    /// certificate, never nothing.
    pub via: Option<Via>,
    /// Registrations kept waiting at the relay at once (see
    /// [`RELAY_SLOTS_KEEP_OPEN`]).
    pub relay_slots: usize,
    /// Whether `addr` is bound; false only with `via` (reached only
    /// through the relay).
    pub bind: bool,
}

/// Registrations a kept-open listener keeps waiting at its relay, so that
/// concurrent dialers are paired without waiting for each other (a
/// one-shot listener keeps one).
pub const RELAY_SLOTS_KEEP_OPEN: usize = 4;

impl Listen {
    /// The documented defaults, listening on `addr`: an ephemeral
    /// identity, anyone admitted, 256 connections and 64 handshakes at
    /// once, 10 s for a handshake and 60 s of silence.
    pub fn new(addr: SocketAddr) -> Self {
        Listen {
            addr,
            identity: None,
            allow: None,
            code: None,
            max_conns: 256,
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            via: None,
            relay_slots: 1,
            bind: true,
        }
    }

    /// Zero caps and durations are mistakes, as on the command line. The
    /// message names the field in `owner`, the options struct that embeds
    /// this as `listen`; `more` are `owner`'s own fields (name, is zero).
    pub(crate) fn check(&self, owner: &str, more: &[(&str, bool)]) -> Result<()> {
        let own = [
            ("listen.handshake_timeout", self.handshake_timeout.is_zero()),
            ("listen.idle_timeout", self.idle_timeout.is_zero()),
            ("listen.max_conns", self.max_conns == 0),
            ("listen.max_handshakes", self.max_handshakes == 0),
        ];
        match own.iter().chain(more).find(|(_, z)| *z) {
            Some((name, _)) => Err(Error::Other(anyhow!(
                "{owner}::{name} must not be zero (leave it at its default instead)"
            ))),
            None => Ok(()),
        }
    }

    /// Binds `addr` with the identity (or a fresh ephemeral one) and the
    /// admission: the allow list, the code, or (neither) anyone.
    pub fn bind(&self, events: Events) -> Result<Endpoint> {
        let via = match &self.via {
            None if !self.bind => {
                return Err(anyhow!("a listener that binds no port needs a relay (via)").into());
            }
            None => None,
            Some(_) if self.allow.is_none() && self.code.is_none() => {
                return Err(anyhow!(
                    "a listener behind a relay admits by code or allow list: with anyone admitted, anyone on the relay could take the transfer"
                )
                .into());
            }
            Some(v) => Some(v.with_rendezvous().map_err(|e| anyhow!(e))?),
        };
        let addr = self.bind.then_some(self.addr);
        let mut e = Endpoint::bind_maybe(addr, self.identity.as_ref(), events)?
            .admitting(&self.allow, self.code.clone());
        if let Some(v) = via {
            let token = v.rendezvous.map(|r| r.token()).unwrap_or_default();
            let events = e.events.clone();
            e.listening
                .register_at(&v.relay, token, self.relay_slots, events)?;
            e.bound = e.listening.local_addr().unwrap_or(self.addr);
            e.via = Some(v);
        }
        Ok(e)
    }

    /// How admitted connections are bounded, for [`Endpoint::accept_spec`]:
    /// `framed` is the verb's data role, `None` for raw bytes.
    pub fn bounds(&self, framed: Option<Role>) -> Bounds {
        Bounds {
            framed,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            max_conns: self.max_conns,
        }
    }

    /// The caps and deadline of the accept loop.
    pub fn limits(&self) -> Limits {
        Limits {
            max_conns: self.max_conns,
            max_handshakes: self.max_handshakes,
            handshake_timeout: self.handshake_timeout,
        }
    }
}

/// The accessors every bound listening verb forwards to the [`Endpoint`]
/// in its `endpoint` field: the bound address, the fingerprint `$who` must
/// pin, and a handle that stops its `run`.
macro_rules! endpoint_accessors {
    ($verb:ident, $who:literal) => {
        impl $verb {
            /// The bound address (with the real port when 0 was asked for).
            pub fn local_addr(&self) -> std::net::SocketAddr {
                self.endpoint.local_addr()
            }

            #[doc = concat!("The fingerprint ", $who, " must pin.")]
            pub fn fingerprint(&self) -> crate::fingerprint::Fingerprint {
                self.endpoint.fingerprint()
            }

            #[doc = concat!("A handle that stops [`", stringify!($verb), "::run`] from another thread.")]
            pub fn shutdown_handle(&self) -> crate::net::listener::ShutdownHandle {
                self.endpoint.shutdown_handle()
            }
        }
    };
}
pub(crate) use endpoint_accessors;

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
    /// The relay (with its rendezvous) that also reaches this listener.
    via: Option<Via>,
}

/// How a listener's connections are admitted and bounded.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The data role of a framed listener; `None` for raw bytes.
    pub framed: Option<Role>,
    /// Limit for the TLS handshake and for the code exchange.
    pub handshake_timeout: Duration,
    /// Idle limit once admitted.
    pub idle_timeout: Duration,
    /// Connections past the handshake at once.
    pub max_conns: usize,
}

impl Endpoint {
    /// Binds `addr` with `identity` (or a fresh ephemeral one).
    pub fn bind(addr: SocketAddr, identity: Option<&Identity>, events: Events) -> Result<Endpoint> {
        Self::bind_maybe(Some(addr), identity, events)
    }

    fn bind_maybe(
        addr: Option<SocketAddr>,
        identity: Option<&Identity>,
        events: Events,
    ) -> Result<Endpoint> {
        let identity = match identity {
            Some(id) => id.clone(),
            None => Identity::generate()?,
        };
        let listening = Listening::bind_maybe(addr)?;
        let addr = addr.unwrap_or_else(|| (std::net::Ipv4Addr::UNSPECIFIED, 0).into());
        Ok(Endpoint {
            bound: listening.local_addr().unwrap_or(addr),
            dial_addrs: listening.dial_addrs(),
            listening,
            identity,
            events: Arc::new(events),
            allow: false,
            gate: None,
            via: None,
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

    /// Runs the accept loop ([`Listening::run`]) with this endpoint's
    /// events.
    pub fn run<O: Send + 'static>(
        &self,
        limits: Limits,
        handler: Handler<O>,
        one_shot: bool,
        on: impl FnMut(O) -> Result<Flow>,
        idle_limit: impl FnMut() -> Result<Option<Duration>>,
    ) -> Result<()> {
        let events = self.events.clone();
        self.listening
            .run(limits, events, handler, one_shot, on, idle_limit)
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
        let before = self.before(before);
        let mut c = format!(
            "{before}{}{after} --pin {}",
            self.target(),
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
        let before = self.before(before);
        Some(format!(
            "{before}{}{after} --code {}",
            self.target(),
            g.code()
        ))
    }

    /// What a dialer names: ` ADDR` (the first address another machine
    /// can dial), ` ADDR --via RELAY/RENDEZVOUS` (direct first, then the
    /// relay), or ` --via RELAY/RENDEZVOUS` for a listener that binds nothing.
    fn target(&self) -> String {
        let via = self.via.as_ref().map(|v| format!(" --via {v}"));
        match (self.listening.bound(), via) {
            (false, Some(via)) => via,
            (_, via) => format!(
                " {}{}",
                self.dial_addrs.first().map_or("HOST", String::as_str),
                via.unwrap_or_default()
            ),
        }
    }

    /// `before` without a trailing ` --to` (the flag that names the
    /// address) when there is no address to name, only a relay.
    fn before<'a>(&self, before: &'a str) -> &'a str {
        match (self.listening.bound(), &self.via) {
            (false, Some(_)) => before.strip_suffix(" --to").unwrap_or(before),
            _ => before,
        }
    }

    /// The relay and rendezvous that also reach this listener, if any.
    pub fn via(&self) -> Option<&Via> {
        self.via.as_ref()
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
            via: self.via.as_ref().map(Via::to_string),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_cap_or_duration_is_named_as_a_field_of_its_owner() {
        let l = Listen::new("127.0.0.1:0".parse().unwrap());
        assert!(l.check("XOptions", &[("wait", false)]).is_ok());
        let e = l.check("XOptions", &[("wait", true)]).unwrap_err();
        assert!(
            e.to_string().contains("XOptions::wait must not be zero"),
            "{e}"
        );
        let mut z = l.clone();
        z.max_handshakes = 0;
        let e = z.check("XOptions", &[]).unwrap_err();
        let want = "XOptions::listen.max_handshakes must not be zero";
        assert!(e.to_string().contains(want), "{e}");
    }
}
