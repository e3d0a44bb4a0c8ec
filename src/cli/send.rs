//! `pincat send`: dial a receiver and push stdin or files to it (dialer +
//! giver), or one raw stream with --raw.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use pincat::{Events, Source};

use super::addr::ncat_form;
use super::paths::PathsArgs;

use super::code::CodeArgs;
use super::dial::{DialArgs, dial_options};
use super::duration::parse_duration;
use super::output::OutputArgs;
use super::progress::{Seat, watched};
use super::tls::TlsArgs;
use super::usage::usage;
use super::via::{ViaArgs, dial_target, dial_via};

/// `pincat send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The receiver, as HOST:PORT (with --pin or --ca), or the NAME of a known peer (see `pincat peers`); with --via alone, omit it.
    #[arg(value_name = "HOST:PORT|NAME", required_unless_present = "via", value_hint = clap::ValueHint::Hostname)]
    pub addr: Option<String>,
    /// Files and directories to send; none, or "-", sends stdin.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Symbolic links and skipped entries.
    #[command(flatten)]
    pub planning: PathsArgs,
    /// How to reach and trust the receiver.
    #[command(flatten)]
    pub dial: DialArgs,
    /// The receiver's code.
    #[command(flatten)]
    pub code: CodeArgs,
    /// A relay to go through (as the receiver's line gives it).
    #[command(flatten)]
    pub via: ViaArgs,
    /// The identity (as client certificate, for receivers that use --allow) and handshake limit.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Give up when the receiver stays silent this long (the receipt included).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Name the stream from stdin: a receiver that writes into a directory (serve --out DIR) stores it as the file NAME there (never over an existing one).
    #[arg(long = "as", id = "stream_as", value_name = "NAME", value_parser = parse_stream_name, conflicts_with = "raw")]
    pub stream_as: Option<String>,
    /// No pincat framing: send stdin (or one file) as plain bytes over the pinned session,
    /// print what the peer answers; for openssl s_server, ncat --ssl, socat.
    #[arg(long)]
    pub raw: bool,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A stream's name: one plain file name (no '/', not '.' or '..').
fn parse_stream_name(s: &str) -> Result<String, String> {
    pincat::protocol::validate_name(s).map_err(|e| e.to_string())?;
    if s.contains('/') {
        return Err("a stream's name is one file name, without '/'".into());
    }
    Ok(s.to_string())
}

/// Runs `pincat send`.
pub fn run(mut a: SendArgs) -> pincat::Result<()> {
    if let Some(addr) = &a.addr {
        ncat_form("send", addr, a.paths.first().map(PathBuf::as_path))?;
    }
    let target = dial_target(a.addr.take(), &a.via, Some(&mut a.paths))?;
    let stdin = a.paths.is_empty() || a.paths == [PathBuf::from("-")];
    if !stdin && a.paths.iter().any(|p| p.as_os_str() == "-") {
        return Err(usage("\"-\" (stdin) cannot be combined with other paths"));
    }
    let mut opts = dial_options(target, &a.dial, &a.code, &a.tls, a.idle_timeout)?;
    opts.via = dial_via(&a.via)?.or(opts.via.take());
    if a.raw && a.paths.len() > 1 {
        return Err(usage(
            "--raw sends one stream: give at most one file (or stdin)",
        ));
    }
    if a.stream_as.is_some() && !stdin {
        return Err(usage(
            "--as names the stream from stdin; files keep their own names",
        ));
    }
    let source = if let Some(name) = a.stream_as.clone() {
        Source::Named(name, Box::new(std::io::stdin()))
    } else if stdin {
        Source::Stdin
    } else {
        Source::Paths(a.planning.paths(a.paths))
    };
    let events = send_events(&a.output);
    if a.raw {
        let input: Box<dyn std::io::Read + Send> = match source {
            Source::Paths(p) => Box::new(open_raw_input(&p.paths[0])?),
            _ => Box::new(std::io::stdin()),
        };
        return pincat::send_raw(&opts, input, &mut std::io::stdout().lock(), &events).map(drop);
    }
    pincat::send(&opts, source, &events).map(drop)
}

/// A sender's events: progress and a summary for a person (a bar on a
/// terminal, lines in a log), warnings and errors only with --quiet, or
/// JSON.
fn send_events(o: &OutputArgs) -> Events {
    watched(o.mode(), Seat::Sender).verbose(o.verbose)
}

/// Opens the one file `send --raw` streams. A directory opens fine but
/// fails on the first read, after the receiver was reached: refuse it here.
fn open_raw_input(path: &Path) -> pincat::Result<std::fs::File> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot open {}", path.display()))?;
    if meta.is_dir() {
        return Err(anyhow!(
            "cannot send {} with --raw: it is a directory (--raw sends one file or stdin)",
            path.display()
        )
        .into());
    }
    Ok(file)
}
