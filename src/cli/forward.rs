//! `pincat forward`: a TCP service over pinned TLS; the exposing end
//! (--listen, listener + relay to --to) and the using end (--local, a
//! plaintext listener whose connections dial --to).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pincat::forward::{ExposeOptions, Exposer, Tunnel, TunnelOptions};

use super::addr::{parse_listen, parse_local, refuse_stray};
use super::code::CodeArgs;
use super::dial::{DialArgs, dial_options};
use super::duration::parse_duration;
use super::listen::{CapsArgs, ListenArgs, listen_options, on_signal};
use super::output::OutputArgs;
use super::tls::TlsArgs;
use super::usage::usage;
use super::via::{ViaArgs, dial_target, dial_via, listen_via};

/// The help heading of the exposing end's own flags.
const EXPOSING: &str = "Exposing end (--listen)";
/// The help heading of the using end's own flags.
const USING: &str = "Using end (--local)";

/// `pincat forward`.
#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// Where connections go: the plaintext service (with --listen) or the exposing end (with --local: HOST:PORT with --pin, or a known peer's NAME).
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "via", value_hint = clap::ValueHint::Hostname)]
    pub to: Option<String>,
    /// A second argument, refused (a port goes after a ':' in HOST:PORT).
    #[arg(value_name = "PORT", hide = true)]
    pub stray: Option<PathBuf>,
    /// A relay: the exposing end registers there (as well as listening on an ADDR:PORT given to --listen), the using end goes through it.
    #[command(flatten)]
    pub via: ViaArgs,
    /// The code (the exposing end's own, or the one its line printed).
    #[command(flatten)]
    pub code: CodeArgs,
    /// End a connection where nothing moved this long.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Identity and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// How many at once (--max-conns: both ends).
    #[command(flatten)]
    pub caps: CapsArgs,
    /// Exposing end: accept pinned TLS here (PORT, HOST:PORT or [IPv6]:PORT; a port alone is all interfaces) and relay each connection to --to.
    #[arg(
        long,
        short,
        help_heading = EXPOSING,
        value_name = "[HOST:]PORT",
        value_parser = parse_listen,
        required_unless_present = "local",
        conflicts_with = "local",
        num_args = 0..=1
    )]
    pub listen: Option<Option<SocketAddr>>,
    /// Who may connect (exposing end).
    #[command(flatten, next_help_heading = EXPOSING)]
    pub listening: ListenArgs,
    /// Using end: listen in plaintext here (PORT alone is loopback only) and carry each connection to --to over pinned TLS.
    #[arg(long, value_name = "[HOST:]PORT", value_parser = parse_local, help_heading = USING)]
    pub local: Option<SocketAddr>,
    /// Dialing options (using end; --pin or --code is required).
    #[command(flatten, next_help_heading = USING)]
    pub dial: DialArgs,
}

/// Runs `pincat forward`.
pub fn run(a: ForwardArgs) -> pincat::Result<()> {
    refuse_stray("forward --to", a.to.as_deref(), a.stray.as_deref())?;
    if let Some(listen) = a.listen {
        return expose(listen, a);
    }
    let target = dial_target(a.to.clone(), &a.via, None)?;
    let Some(local) = a.local else {
        return Err(usage("give --listen (exposing end) or --local (using end)"));
    };
    let mut dial = dial_options(target, &a.dial, &a.code, &a.tls, a.idle_timeout)?;
    dial.via = dial_via(&a.via)?.or(dial.via.take());
    let opts = TunnelOptions {
        local,
        dial,
        max_conns: a.caps.max_conns as usize,
        idle_timeout: a.idle_timeout,
    };
    let t = Tunnel::bind(opts, a.output.events())?;
    let stop = t.stop_handle();
    on_signal(move || stop.stop())?;
    t.run()
}

/// The exposing end: accept pinned TLS on `listen`, relay to --to.
fn expose(listen: Option<SocketAddr>, a: ForwardArgs) -> pincat::Result<()> {
    // The exposing end serves many connections: a kept-open budget.
    let idle = a.idle_timeout;
    let explicit = listen.is_some();
    let addr = listen.unwrap_or_else(super::listen::default_listen);
    let listen = listen_options(addr, &a.listening, &a.code, true, &a.tls, &a.caps, idle)?;
    let listen = listen_via(listen, explicit, &a.via, true, a.listening.allow_any)?;
    let Some(to) = a.to.clone() else {
        return Err(usage(
            "the exposing end needs --to HOST:PORT: the service it carries connections to",
        ));
    };
    let opts = ExposeOptions {
        listen,
        to,
        connect_timeout: a.dial.connect_timeout,
    };
    let x = Exposer::bind(opts, a.output.events())?;
    let handle = x.shutdown_handle();
    on_signal(move || handle.shutdown())?;
    x.run()
}
