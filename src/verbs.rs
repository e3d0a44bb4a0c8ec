//! The pull, duplex and forwarding verbs: `offer`, `get`, `pipe`,
//! `forward`. Flags become library options here; nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;
use pincat::forward::{ExposeOptions, Exposer, Tunnel, TunnelOptions};
use pincat::net::dialer::DialOptions;
use pincat::offer::{OfferOptions, Offering};
use pincat::pipe::{Ends, PipeListenOptions, PipeListener};
use pincat::{Events, Mode, Output, Source};

use crate::app::{admission, dial_code, events, load_identity, mode};
use crate::cli::{Cli, CodeArgs, DialArgs, ForwardArgs, GetArgs, OfferArgs, PipeArgs, TlsArgs};

/// The default listening address of every listening verb: all interfaces
/// on the default port, IPv6 (which takes IPv4 too) where the host has it.
fn default_listen() -> SocketAddr {
    let port = pincat::serve::DEFAULT_PORT;
    if std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_ok() {
        (std::net::Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, port).into()
    }
}

/// Ends the process with a usage error (exit 2) saying `msg`.
pub(crate) fn usage(msg: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, msg)
        .exit()
}

/// Dial options from the flags: HOST:PORT with --pin or --ca, or a known
/// peer's NAME.
pub(crate) fn dial_options(
    addr: String,
    d: &DialArgs,
    code: &CodeArgs,
    tls: &TlsArgs,
    idle: std::time::Duration,
) -> pincat::Result<DialOptions> {
    let mut o = crate::known::dial_options(&addr, d, dial_code(code)?)?;
    o.identity = load_identity(tls.identity.as_deref())?;
    o.connect_timeout = d.connect_timeout;
    o.retry_for = d.retry_for;
    o.handshake_timeout = tls.handshake_timeout;
    o.idle_timeout = idle;
    Ok(o)
}

fn on_signal(f: impl Fn() + Send + 'static) -> pincat::Result<()> {
    ctrlc::set_handler(f).context("cannot install the signal handler")?;
    Ok(())
}

pub fn offer(a: OfferArgs) -> pincat::Result<()> {
    let stdin = a.paths.is_empty() || a.paths == [PathBuf::from("-")];
    if !stdin && a.paths.iter().any(|p| p.as_os_str() == "-") {
        usage("\"-\" (stdin) cannot be combined with other paths");
    }
    if stdin && a.keep_open {
        usage("a stream can be given only once: offer files with --keep-open");
    }
    let mut o = OfferOptions::new(a.listen.unwrap_or_else(default_listen));
    o.identity = load_identity(a.tls.identity.as_deref())?;
    (o.allow, o.code) = admission(&a.common, &a.code, a.keep_open)?;
    o.keep_open = a.keep_open;
    o.max_gets = a.max_gets;
    o.expire = a.expire;
    o.max_conns = a.caps.max_conns as usize;
    o.max_handshakes = a.caps.max_handshakes as usize;
    o.handshake_timeout = a.tls.handshake_timeout;
    o.idle_timeout = a.idle_timeout;
    o.wait_timeout = a.timeout;
    let source = if stdin {
        Source::Stdin
    } else {
        Source::Paths(a.paths)
    };
    let events = events(&a.output);
    let offering = Offering::bind(o, source, events)?;
    let handle = offering.shutdown_handle();
    on_signal(move || handle.shutdown())?;
    offering.run().map(drop)
}

pub fn get(a: GetArgs) -> pincat::Result<()> {
    let opts = dial_options(a.addr, &a.dial, &a.code, &a.tls, a.idle_timeout)?;
    let output = match a.out {
        Some(p) => Output::Path(p),
        None => Output::Default,
    };
    pincat::offer::get(&opts, &output, events(&a.output)).map(drop)
}

pub fn pipe(a: PipeArgs) -> pincat::Result<()> {
    let ends = if a.exec.is_empty() {
        Ends::Stdio
    } else {
        Ends::Exec(a.exec.clone())
    };
    let m = match mode(&a.output) {
        // A pipe's stdout is data: people get only errors and warnings.
        Mode::Human => Mode::Quiet,
        m => m,
    };
    let Some(listen) = a.listen else {
        let addr = a.addr.clone().unwrap_or_default();
        let idle = a
            .idle_timeout
            .unwrap_or(std::time::Duration::from_secs(3600));
        let opts = dial_options(addr, &a.dial, &a.code, &a.tls, idle)?;
        let events = Events::stderr(m).verbose(a.output.verbose);
        return pincat::pipe::pipe(&opts, &ends, a.idle_timeout, &events).map(drop);
    };
    let (allow, code) = admission(&a.listening, &a.code, false)?;
    let opts = PipeListenOptions {
        listen,
        identity: load_identity(a.tls.identity.as_deref())?,
        allow,
        code,
        handshake_timeout: a.tls.handshake_timeout,
        idle_timeout: a.idle_timeout,
        wait_timeout: a.timeout,
    };
    // The listening line is for the person who starts it, even with stdout busy.
    let events = events(&a.output);
    let l = PipeListener::bind(opts, events)?;
    let handle = l.shutdown_handle();
    on_signal(move || handle.shutdown())?;
    l.run(ends).map(drop)
}

pub fn forward(a: ForwardArgs) -> pincat::Result<()> {
    let events = events(&a.output);
    if let Some(listen) = a.listen {
        // The exposing end serves many connections: a kept-open budget.
        let (allow, code) = admission(&a.listening, &a.code, true)?;
        let opts = ExposeOptions {
            listen,
            to: a.to,
            identity: load_identity(a.tls.identity.as_deref())?,
            allow,
            code,
            max_conns: a.caps.max_conns as usize,
            max_handshakes: a.caps.max_handshakes as usize,
            handshake_timeout: a.tls.handshake_timeout,
            idle_timeout: a.idle_timeout,
            connect_timeout: a.dial.connect_timeout,
        };
        let x = Exposer::bind(opts, events)?;
        let handle = x.shutdown_handle();
        on_signal(move || handle.shutdown())?;
        return x.run();
    }
    let Some(local) = a.local else {
        usage("give --listen (exposing end) or --local (using end)");
    };
    let dial = dial_options(a.to, &a.dial, &a.code, &a.tls, a.idle_timeout)?;
    let opts = TunnelOptions {
        local,
        dial,
        max_conns: a.caps.max_conns as usize,
        idle_timeout: a.idle_timeout,
    };
    let t = Tunnel::bind(opts, events)?;
    let stop = t.stop_handle();
    on_signal(move || stop.stop())?;
    t.run()
}
