//! `pincat pipe`: full duplex over one session, dialing or listening, with
//! our stdio or a program's at the end.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pincat::pipe::{Ends, PipeListenOptions, PipeListener};
use pincat::{Events, Mode};

use super::addr::{parse_listen, refuse_stray};
use super::code::CodeArgs;
use super::dial::{DialArgs, dial_options};
use super::duration::parse_duration;
use super::listen::{CapsArgs, ListenArgs, listen_options, on_signal};
use super::output::OutputArgs;
use super::tls::TlsArgs;
use super::via::{ViaArgs, dial_target, dial_via, listen_via};

/// `pincat pipe`.
#[derive(Debug, Args)]
pub struct PipeArgs {
    /// The listening end, as HOST:PORT (with --pin) or the NAME of a known peer (omit with --listen).
    #[arg(
        value_name = "HOST:PORT|NAME",
        value_hint = clap::ValueHint::Hostname,
        required_unless_present_any = ["listen", "via"],
        conflicts_with = "listen"
    )]
    pub addr: Option<String>,
    /// A second argument, refused (a port goes after a ':' in HOST:PORT).
    #[arg(value_name = "PORT", hide = true)]
    pub stray: Option<PathBuf>,
    /// Listen instead of dialing (PORT, HOST:PORT or [IPv6]:PORT; a port alone is all interfaces) and print a paste-ready dial line (with --via and no address: through the relay only).
    #[arg(long, short, value_name = "[HOST:]PORT", num_args = 0..=1, value_parser = parse_listen)]
    pub listen: Option<Option<SocketAddr>>,
    /// A relay: the listener registers there, the dialer goes through it.
    #[command(flatten)]
    pub via: ViaArgs,
    /// The code (the listener's own, or the one its line printed).
    #[command(flatten)]
    pub code: CodeArgs,
    /// End the pipe when nothing moved for DURATION [default: no limit].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Give up (exit 6) if no peer connected within DURATION (with --listen).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Connect this program's stdin/stdout to the session instead of ours (no shell); everything after it is its arguments, so give it last.
    #[arg(long, value_name = "PROG", num_args = 1.., allow_hyphen_values = true)]
    pub exec: Vec<OsString>,
    /// Identity and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Listening options (with --listen).
    #[command(flatten, next_help_heading = "Listening end (--listen)")]
    pub listening: ListenArgs,
    /// Dialing options (without --listen; --pin or --code is required).
    #[command(flatten, next_help_heading = "Dialing end (HOST:PORT|NAME)")]
    pub dial: DialArgs,
}

/// Runs `pincat pipe`.
pub fn run(a: PipeArgs) -> pincat::Result<()> {
    let ends = if a.exec.is_empty() {
        Ends::Stdio
    } else {
        Ends::Exec(a.exec.clone())
    };
    let target = if a.listen.is_some() {
        None
    } else {
        a.addr.as_deref()
    };
    refuse_stray("pipe", target, a.stray.as_deref())?;
    let Some(listen) = a.listen else {
        return dial(a, &ends);
    };
    // One peer; the session's limit outside the relay is the dialing end's.
    let caps = CapsArgs {
        max_conns: 1,
        max_handshakes: pincat::pipe::MAX_HANDSHAKES as u32,
    };
    let idle = a.idle_timeout.unwrap_or(pincat::pipe::SESSION_IDLE);
    let explicit = listen.is_some();
    let addr = listen.unwrap_or_else(super::listen::default_listen);
    let listen = listen_options(addr, &a.listening, &a.code, false, &a.tls, &caps, idle)?;
    let listen = listen_via(listen, explicit, &a.via, false, a.listening.allow_any)?;
    let opts = PipeListenOptions {
        listen,
        relay_idle: a.idle_timeout,
        wait_timeout: a.timeout,
    };
    // The listening line is for the person who starts it, even with stdout busy.
    let l = PipeListener::bind(opts, a.output.events())?;
    let handle = l.shutdown_handle();
    on_signal(move || handle.shutdown())?;
    l.run(ends).map(drop)
}

/// The dialing end of a pipe.
fn dial(a: PipeArgs, ends: &Ends) -> pincat::Result<()> {
    let m = match a.output.mode() {
        // A pipe's stdout is data: people get only errors and warnings.
        Mode::Human => Mode::Quiet,
        m => m,
    };
    let addr = dial_target(a.addr.clone(), &a.via, None)?;
    let idle = a.idle_timeout.unwrap_or(pincat::pipe::SESSION_IDLE);
    let mut opts = dial_options(addr, &a.dial, &a.code, &a.tls, idle)?;
    opts.via = dial_via(&a.via)?.or(opts.via.take());
    let events = Events::stderr(m).verbose(a.output.verbose);
    pincat::pipe::pipe(&opts, ends, a.idle_timeout, &events).map(drop)
}
