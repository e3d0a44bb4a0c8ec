//! `--via RELAY[/RENDEZVOUS]`, on every verb: a listener registers at the
//! relay (as well as binding, with --listen) and its paste-ready line
//! carries the relay and its rendezvous; a dialer goes through the relay
//! (after trying a direct address first, when it has one).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use pincat::Listen;
use pincat::net::endpoint::RELAY_SLOTS_KEEP_OPEN;
use pincat::net::relay::Via;

use super::usage::usage;

/// The relay flag.
#[derive(Debug, Args)]
pub struct ViaArgs {
    /// Through a relay that only splices (magic-wormhole transit relay protocol; `pincat relay` is one): a listener registers at RELAY (HOST:PORT; add /RENDEZVOUS to keep a fixed one) and prints the dial line; a dialer gives RELAY/RENDEZVOUS from that line. Only with a code or an allow list.
    #[arg(long, value_name = "RELAY[/RENDEZVOUS]")]
    pub via: Option<Via>,
}

/// A listener's relay: `listen` registers at it (with several waiting
/// registrations when `keep_open`), and binds its port only when
/// `explicit` (--listen was given) or there is no relay.
pub fn listen_via(
    mut listen: Listen,
    explicit: bool,
    v: &ViaArgs,
    keep_open: bool,
    allow_any: bool,
) -> pincat::Result<Listen> {
    let Some(via) = &v.via else {
        return Ok(listen);
    };
    if allow_any {
        return Err(usage(
            "--via cannot be used with --allow-any: anyone on the relay could take the transfer; admit by code (the default) or --allow",
        ));
    }
    listen.via = Some(via.clone());
    listen.bind = explicit;
    listen.relay_slots = if keep_open { RELAY_SLOTS_KEEP_OPEN } else { 1 };
    Ok(listen)
}

/// A dialer's target with a relay: `addr` as given when it reads as
/// HOST:PORT or names a known peer (whose relay --via then takes the place
/// of), or when the verb takes no paths; otherwise (with --via) it was
/// the first path, and goes back in front of `paths` (`None` for verbs
/// without paths). Empty: the relay alone.
pub fn dial_target(
    addr: Option<String>,
    v: &ViaArgs,
    paths: Option<&mut Vec<PathBuf>>,
) -> pincat::Result<String> {
    match (addr, &v.via, paths) {
        (Some(a), _, _) if is_host_port(&a) || known(&a) => Ok(a),
        (Some(a), None, _) | (Some(a), Some(_), None) => Ok(a),
        (Some(a), Some(_), Some(paths)) => {
            paths.insert(0, PathBuf::from(a));
            Ok(String::new())
        }
        (None, Some(_), _) => Ok(String::new()),
        (None, None, _) => Err(usage(
            "give the listener's HOST:PORT (or a known peer's NAME, or --via)",
        )),
    }
}

/// Whether `name` is a known peer's (an unreadable peers file: no).
pub fn known(name: &str) -> bool {
    pincat::peers::PeersFile::default_location()
        .ok()
        .and_then(|f| f.read().ok())
        .is_some_and(|p| p.get(name).is_some())
}

/// A dialer's relay, and that it names its rendezvous.
pub fn dial_via(v: &ViaArgs) -> pincat::Result<Option<Via>> {
    match &v.via {
        Some(via) if via.rendezvous.is_none() => Err(usage(format!(
            "--via {via}: a dialer needs the rendezvous too, as the listener printed it (--via {}/RENDEZVOUS)",
            via.relay
        ))),
        via => Ok(via.clone()),
    }
}

/// `HOST:PORT` with a port number (a path rarely reads so; write ./NAME
/// for one that does).
pub fn is_host_port(s: &str) -> bool {
    s.parse::<SocketAddr>().is_ok()
        || s.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok())
}
