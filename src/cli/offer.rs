//! The pull verbs: `pincat offer` (listener + giver) and `pincat get`
//! (dialer + taker).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pincat::offer::{OfferOptions, Offering};
use pincat::{Keep, Source};

use super::addr::{parse_listen, refuse_stray};
use super::paths::PathsArgs;

use super::code::CodeArgs;
use super::dial::{DialArgs, dial_options};
use super::duration::parse_duration;
use super::listen::{CapsArgs, ListenArgs, default_listen, listen_options, on_signal};
use super::output::OutputArgs;
use super::serve::output_of;
use super::tls::TlsArgs;
use super::usage::usage;
use super::via::{ViaArgs, dial_target, dial_via, listen_via};

/// `pincat offer`.
#[derive(Debug, Args)]
pub struct OfferArgs {
    /// Files and directories to offer; none, or "-", offers stdin (to one taker).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Symbolic links and skipped entries.
    #[command(flatten)]
    pub planning: PathsArgs,
    /// Address to listen on: PORT, HOST:PORT or [IPv6]:PORT (a port alone is all interfaces; port 0 picks a free one) [default: [::]:7878, or 0.0.0.0:7878 without IPv6].
    #[arg(long, short, value_name = "[HOST:]PORT", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Who may connect.
    #[command(flatten)]
    pub common: ListenArgs,
    /// The code.
    #[command(flatten)]
    pub code: CodeArgs,
    /// A relay that reaches this listener too (or instead, without --listen).
    #[command(flatten)]
    pub via: ViaArgs,
    /// How many at once.
    #[command(flatten)]
    pub caps: CapsArgs,
    /// Give the same files to many takers instead of exiting after the first.
    #[arg(long, short = 'k')]
    pub keep_open: bool,
    /// With --keep-open: exit 0 after N confirmed gets.
    #[arg(long, value_name = "N", requires = "keep_open", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_gets: Option<u64>,
    /// Stop offering (exit 0) DURATION after starting.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expire: Option<Duration>,
    /// Drop a taker that makes no progress this long (the receipt included).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Give up (exit 6) if no taker connected within DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// One-shot: after a get of files was cut short, keep offering this long for the taker to run its get again and resume.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub resume_wait: Duration,
    /// Identity and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pincat get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The offering side, as HOST:PORT (with --pin), or the NAME of a known peer (omit with --via alone).
    #[arg(value_name = "HOST:PORT|NAME", required_unless_present = "via", value_hint = clap::ValueHint::Hostname)]
    pub addr: Option<String>,
    /// A second argument, refused (a port goes after a ':' in HOST:PORT).
    #[arg(value_name = "PORT", hide = true)]
    pub stray: Option<PathBuf>,
    /// A relay to go through (as the offering side's line gives it).
    #[command(flatten)]
    pub via: ViaArgs,
    /// Where to store: a file or device for a stream (default stdout, not a terminal; "-" is stdout even then), a directory for files (default .).
    #[arg(long, short, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Dialing options (--pin or --code is required).
    #[command(flatten)]
    pub dial: DialArgs,
    /// The offering side's code.
    #[command(flatten)]
    pub code: CodeArgs,
    /// Give up when the offering side stays silent this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Give received files, and the directories the transfer makes, the time they are written instead of the sender's modification times.
    #[arg(long)]
    pub no_times: bool,
    /// Take symbolic links that point outside what is sent (an absolute target, or one that climbs out of its top-level directory); refused by default.
    #[arg(long)]
    pub allow_outside_links: bool,
    /// Compare with the files already here: identical ones stay, changed ones are replaced atomically (only their changed chunks travel), new ones are added.
    #[arg(long)]
    pub update: bool,
    /// Identity and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `pincat offer`.
pub fn offer(a: OfferArgs) -> pincat::Result<()> {
    let stdin = a.paths.is_empty() || a.paths == [PathBuf::from("-")];
    if !stdin && a.paths.iter().any(|p| p.as_os_str() == "-") {
        return Err(usage("\"-\" (stdin) cannot be combined with other paths"));
    }
    if stdin && a.keep_open {
        return Err(usage(
            "a stream can be given only once: offer files with --keep-open",
        ));
    }
    let (addr, idle) = (a.listen.unwrap_or_else(default_listen), a.idle_timeout);
    let listen = listen_options(addr, &a.common, &a.code, a.keep_open, &a.tls, &a.caps, idle)?;
    let allow_any = a.common.allow_any;
    let listen = listen_via(listen, a.listen.is_some(), &a.via, a.keep_open, allow_any)?;
    let o = OfferOptions {
        listen,
        keep_open: a.keep_open,
        max_gets: a.max_gets,
        expire: a.expire,
        wait_timeout: a.timeout,
        resume_wait: a.resume_wait,
    };
    let source = if stdin {
        Source::Stdin
    } else {
        Source::Paths(a.planning.paths(a.paths))
    };
    let offering = Offering::bind(o, source, a.output.events())?;
    let handle = offering.shutdown_handle();
    on_signal(move || handle.shutdown())?;
    offering.run().map(drop)
}

/// Runs `pincat get`.
pub fn get(a: GetArgs) -> pincat::Result<()> {
    refuse_stray("get", a.addr.as_deref(), a.stray.as_deref())?;
    let target = dial_target(a.addr, &a.via, None)?;
    let mut opts = dial_options(target, &a.dial, &a.code, &a.tls, a.idle_timeout)?;
    opts.via = dial_via(&a.via)?.or(opts.via.take());
    let output = output_of(a.out);
    let keep = Keep {
        times: !a.no_times,
        outside_links: a.allow_outside_links,
        allow_update: a.update,
        update: a.update,
        resume: true,
    };
    pincat::offer::get(&opts, &output, keep, a.output.events()).map(drop)
}
