//! `pincat serve`: listen and store what senders push (listener + taker).

use std::io::IsTerminal;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pincat::{Keep, Output, ServeOptions, Server};

use super::addr::parse_listen;
use super::code::CodeArgs;
use super::duration::parse_duration;
use super::exec::{ExecArgs, exec_options};
use super::listen::{CapsArgs, ListenArgs, listen_options, on_signal};
use super::output::OutputArgs;
use super::tls::TlsArgs;
use super::usage::usage;
use super::via::{ViaArgs, listen_via};

/// `pincat serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: PORT, HOST:PORT or [IPv6]:PORT (a port alone is all interfaces; port 0 picks a free one) [default: [::]:7878, or 0.0.0.0:7878 without IPv6].
    #[arg(long, short, value_name = "[HOST:]PORT", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Where to store: a file or device for a stream (default stdout, not a terminal; "-" is stdout even then), a directory for files (default .).
    #[arg(long, short, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Use this persistent identity instead of an ephemeral one (a file, mode 0600, or env:VAR holding its PEM).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Who may send (without these: the sender with the code).
    #[command(flatten)]
    pub listening: ListenArgs,
    /// The code.
    #[command(flatten)]
    pub code: CodeArgs,
    /// A relay that reaches this listener too (or instead, without --listen).
    #[command(flatten)]
    pub via: ViaArgs,
    /// Keep serving after the first transfer, with many senders at once.
    #[arg(long, short = 'k')]
    pub keep_open: bool,
    /// Most connections handled at once; more are refused.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_conns: u32,
    /// Most TLS handshakes in progress at once; past it the oldest is cut, so a flood cannot lock out real senders.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_handshakes: u32,
    /// Limit for a sender's TLS handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Drop a connection that stays silent this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Give up (exit 6) if no transfer has started within DURATION; omit to wait forever.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// No pincat framing: the TLS plaintext is the data, until close_notify (for openssl, ncat, socat).
    #[arg(long)]
    pub raw: bool,
    /// Give received files, and the directories the transfer makes, the time they are written instead of the sender's modification times.
    #[arg(long)]
    pub no_times: bool,
    /// Take symbolic links that point outside what is sent (an absolute target, or one that climbs out of its top-level directory); refused by default.
    #[arg(long)]
    pub allow_outside_links: bool,
    /// Let a sender's `send --update` replace files that are here and differ (atomically, sending only the changed chunks); without it they are refused.
    #[arg(long)]
    pub allow_update: bool,
    /// One-shot: after an interrupted files transfer, keep listening this long for the sender to run its command again and resume.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub resume_wait: Duration,
    /// Keep nothing of an interrupted transfer, and (one-shot) exit at once as it fails.
    #[arg(long, conflicts_with = "resume_wait")]
    pub no_resume: bool,
    /// First remove the partial files kept for resumes in --out (the count is reported).
    #[arg(long)]
    pub clean: bool,
    /// A program to hand each transfer to.
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `--out`: "-" is stdout explicitly (even a terminal), a path is a path.
pub fn output_of(out: Option<PathBuf>) -> Output {
    match out {
        Some(p) if p.as_os_str() == "-" => Output::Stdout,
        Some(p) => Output::Path(p),
        None => Output::Default,
    }
}

/// Runs `pincat serve`.
pub fn run(a: ServeArgs) -> pincat::Result<()> {
    let default_v6: SocketAddr = (Ipv6Addr::UNSPECIFIED, pincat::serve::DEFAULT_PORT).into();
    // serve's own flags (with their own help) in the groups the other
    // listening verbs flatten.
    let tls = TlsArgs {
        identity: a.identity,
        handshake_timeout: a.handshake_timeout,
    };
    let caps = CapsArgs {
        max_conns: a.max_conns,
        max_handshakes: a.max_handshakes,
    };
    let (addr, who, idle) = (a.listen.unwrap_or(default_v6), &a.listening, a.idle_timeout);
    let listen = listen_options(addr, who, &a.code, a.keep_open, &tls, &caps, idle)?;
    let listen = listen_via(
        listen,
        a.listen.is_some(),
        &a.via,
        a.keep_open,
        who.allow_any,
    )?;
    let exec = exec_options(&a.exec, a.out.as_deref())?;
    // A raw stream is all binary, and it is known now where it goes.
    if a.raw && a.out.is_none() && exec.is_none() && std::io::stdout().is_terminal() {
        return Err(usage(
            "binary output to a terminal: add --out FILE, or --out - to write it here anyway",
        ));
    }
    let mut opts = ServeOptions {
        listen,
        output: output_of(a.out),
        keep_open: a.keep_open,
        wait_timeout: a.timeout,
        raw: a.raw,
        keep: Keep {
            times: !a.no_times,
            outside_links: a.allow_outside_links,
            allow_update: a.allow_update,
            update: false,
            resume: !a.no_resume,
        },
        resume_wait: if a.no_resume {
            Duration::ZERO
        } else {
            a.resume_wait
        },
        clean: a.clean,
        exec,
    };
    let server = match Server::bind(opts.clone(), a.output.events()) {
        Ok(s) => s,
        // No IPv6 on this host: all IPv4 interfaces instead.
        Err(_) if a.listen.is_none() => {
            opts.listen.addr = (Ipv4Addr::UNSPECIFIED, pincat::serve::DEFAULT_PORT).into();
            Server::bind(opts, a.output.events())?
        }
        Err(e) => return Err(e),
    };
    let handle = server.shutdown_handle();
    on_signal(move || handle.shutdown())?;
    server.run().map(drop)
}
