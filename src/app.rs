//! Turns parsed command lines into library calls, and failures into one
//! message and an exit code. Uses only the public `pincat` API.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::CommandFactory;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pincat::events::human_bytes;
use pincat::{
    Allow, CaAllow, CaRoots, Error, Event, Events, ExitCode, Identity, Mode, Output, Pin,
    SendOptions, ServeOptions, Server, Source,
};

use pincat::pair::{Code, Gate, GatePolicy};

use crate::cli::{
    Cli, CodeArgs, Command, FingerprintArgs, IdentityCommand, ListenArgs, OutputArgs, SendArgs,
    ServeArgs,
};

/// Runs one command and returns the process exit code; every failure is
/// reported exactly once (a JSON `error` event with --json, else one line).
pub fn run(cli: Cli) -> ExitCode {
    let json = match &cli.command {
        Command::Serve(a) => a.output.json,
        Command::Send(a) => a.output.json,
        Command::Offer(a) => a.output.json,
        Command::Get(a) => a.output.json,
        Command::Pipe(a) => a.output.json,
        Command::Forward(a) => a.output.json,
        _ => false,
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::Success,
        Err(e) => {
            if json {
                Events::stderr(Mode::Json).emit(Event::Error {
                    peer: None,
                    code: e.code(),
                    message: format!("{e:#}"),
                });
            } else {
                eprintln!("pincat: error: {e:#}");
            }
            e.exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> pincat::Result<()> {
    pincat::tune_allocator();
    match cli.command {
        Command::Serve(a) => serve(a),
        Command::Send(a) => send(a),
        Command::Offer(a) => crate::verbs::offer(a),
        Command::Get(a) => crate::verbs::get(a),
        Command::Pipe(a) => crate::verbs::pipe(a),
        Command::Forward(a) => crate::verbs::forward(a),
        Command::Identity(cmd) => identity(cmd),
        Command::Fingerprint(a) => fingerprint(a),
        Command::Peers(c) => crate::known::peers(c),
        Command::Completions(a) => {
            let mut cmd = Cli::command();
            clap_complete::generate(a.shell, &mut cmd, "pincat", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("cannot write the man page")?;
            Ok(())
        }
    }
}

pub(crate) fn mode(o: &OutputArgs) -> Mode {
    if o.json {
        Mode::Json
    } else if o.quiet {
        Mode::Quiet
    } else {
        Mode::Human
    }
}

/// The event sink a verb's output flags ask for, on stderr.
pub(crate) fn events(o: &OutputArgs) -> Events {
    Events::stderr(mode(o)).verbose(o.verbose)
}

pub(crate) fn load_identity(path: Option<&Path>) -> pincat::Result<Option<Identity>> {
    Ok(match path {
        Some(p) => Some(Identity::load_spec(p.as_os_str())?),
        None => None,
    })
}

fn serve(a: ServeArgs) -> pincat::Result<()> {
    let (allow, code) = admission(&a.listening, &a.code, a.keep_open)?;
    let default_v6: SocketAddr =
        (std::net::Ipv6Addr::UNSPECIFIED, pincat::serve::DEFAULT_PORT).into();
    let mut opts = ServeOptions::new(a.listen.unwrap_or(default_v6));
    opts.identity = load_identity(a.identity.as_deref())?;
    opts.allow = allow;
    opts.code = code;
    opts.output = match a.out {
        Some(p) => Output::Path(p),
        None => Output::Default,
    };
    opts.keep_open = a.keep_open;
    opts.max_conns = a.max_conns as usize;
    opts.max_handshakes = a.max_handshakes as usize;
    opts.handshake_timeout = a.handshake_timeout;
    opts.idle_timeout = a.idle_timeout;
    opts.wait_timeout = a.timeout;
    opts.raw = a.raw;
    let server = match Server::bind(opts.clone(), events(&a.output)) {
        Ok(s) => s,
        // No IPv6 on this host: all IPv4 interfaces instead.
        Err(_) if a.listen.is_none() => {
            opts.listen = (std::net::Ipv4Addr::UNSPECIFIED, pincat::serve::DEFAULT_PORT).into();
            Server::bind(opts, events(&a.output))?
        }
        Err(e) => return Err(e),
    };
    let handle = server.shutdown_handle();
    ctrlc::set_handler(move || handle.shutdown()).context("cannot install the signal handler")?;
    server.run().map(drop)
}

/// The one place the command line decides who a listener admits, for
/// `serve`, `offer`, `pipe --listen` and `forward --listen`: the allow list
/// (--allow, --allow-file, --allow-ca) if given; else anyone with
/// --allow-any; else the dialer that proves a code (--code, or a fresh
/// one), with the attempt budget of a one-shot or a kept-open listener.
pub(crate) fn admission(
    l: &ListenArgs,
    code: &CodeArgs,
    keep_open: bool,
) -> pincat::Result<(Option<Allow>, Option<Gate>)> {
    let allow = allow_list(l)?;
    if allow.is_some() || l.allow_any {
        if code.code.is_some() {
            crate::verbs::usage(
                "--code is for listeners without an allow list: --allow/--allow-ca admit by certificate, --allow-any admits anyone",
            );
        }
        return Ok((allow, None));
    }
    let policy = GatePolicy::for_listener(keep_open);
    let gate = match &code.code {
        Some(spec) => {
            let c = read_code(spec)?;
            if c.list_bits() < 30.0 && c.as_str().len() < 16 {
                crate::verbs::usage(
                    "--code on a listener must be at least 3 words of the list or 16 characters: a short code is easy to guess",
                );
            }
            Gate::fixed(c, policy, pincat::pair::state_dir()?)?
        }
        None => {
            let words = l
                .code_words
                .map_or(pincat::pair::DEFAULT_WORDS, usize::from);
            Gate::new(Code::generate(words).map_err(|e| anyhow!(e))?, policy)
        }
    };
    Ok((None, Some(gate)))
}

/// A code from `--code`: CODE, env:VAR (removed from the environment once
/// read), or - (a line from the terminal, else from stdin).
pub(crate) fn read_code(spec: &str) -> pincat::Result<Code> {
    let text = if let Some(var) = spec.strip_prefix("env:") {
        pincat::take_env_secret(var)
            .ok_or_else(|| anyhow!("--code env:{var}: the variable is not set"))?
            .into_string()
            .map_err(|_| anyhow!("--code env:{var}: the code is not UTF-8"))?
    } else if spec == "-" {
        read_code_line()?
    } else {
        spec.to_string()
    };
    Ok(Code::parse(&text).map_err(|e| anyhow!("--code: {e}"))?)
}

fn read_code_line() -> pincat::Result<String> {
    use std::io::{BufRead, Write};
    let mut line = String::new();
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    {
        Ok(tty) => {
            let _ = (&tty).write_all(b"pincat: code: ");
            std::io::BufReader::new(tty).read_line(&mut line)
        }
        Err(_) => std::io::stdin().lock().read_line(&mut line),
    }
    .context("--code -: cannot read the code")?;
    Ok(line)
}

/// Reads `--code` of a dialer, if given.
pub(crate) fn dial_code(code: &CodeArgs) -> pincat::Result<Option<Code>> {
    code.code.as_deref().map(read_code).transpose()
}

/// Who may connect, from --allow, --allow-file and --allow-ca/--allow-name
/// (`None`: no allow list).
pub(crate) fn allow_list(l: &ListenArgs) -> pincat::Result<Option<Allow>> {
    if l.allow.is_empty() && l.allow_file.is_empty() && l.allow_ca.is_none() {
        return Ok(None);
    }
    let mut allow = Allow::pins(l.allow.iter().copied());
    for f in &l.allow_file {
        allow.pins.extend(read_allow_file(f)?);
    }
    if let Some(path) = &l.allow_ca {
        allow.ca = Some(CaAllow::new(CaRoots::load(path)?, &l.allow_name)?);
    }
    if allow.is_empty() {
        return Err(anyhow!("the allow list is empty: no peer could ever connect").into());
    }
    Ok(Some(allow))
}

fn identity(cmd: IdentityCommand) -> pincat::Result<()> {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    match cmd {
        IdentityCommand::New {
            file,
            ca,
            issuer,
            name,
            valid,
            json,
        } => {
            let id = match (&issuer, ca) {
                (Some(path), _) => {
                    let issuer = Identity::load_spec(path.as_os_str())?;
                    Identity::issue(&issuer, &name, valid.unwrap_or(DAY))
                        .with_context(|| format!("cannot issue from {}", path.display()))?
                }
                (None, true) => Identity::generate_ca(valid.unwrap_or(DAY * 3650))?,
                (None, false) if valid.is_some() => {
                    return Err(anyhow!("--valid applies to --ca and --issuer identities").into());
                }
                (None, false) => Identity::generate()?,
            };
            id.save(&file)?;
            if json {
                let mut v = serde_json::json!({"file": file.display().to_string(),
                    "fingerprint": id.fingerprint().to_string(),
                    "spki": pincat::identity::spki_pin_of_bytes(id.cert_der())?.to_string(),
                    "ca": ca});
                if issuer.is_some() {
                    v["names"] = name.into();
                    v["valid_seconds"] = valid.unwrap_or(DAY).as_secs().into();
                }
                println!("{v}");
            } else {
                println!("{}", id.fingerprint());
            }
            Ok(())
        }
        IdentityCommand::Cert { file } => {
            let id = Identity::load_spec(file.as_os_str())?;
            print!("{}", id.cert_pem());
            Ok(())
        }
    }
}

/// Reads an allow file: one fingerprint per line, `#` starts a comment.
pub(crate) fn read_allow_file(path: &Path) -> pincat::Result<Vec<Pin>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read allow file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fp: Pin = line
            .parse()
            .with_context(|| format!("{}:{}: bad fingerprint", path.display(), i + 1))?;
        out.push(fp);
    }
    Ok(out)
}

fn send(a: SendArgs) -> pincat::Result<()> {
    let stdin = a.paths.is_empty() || a.paths == [PathBuf::from("-")];
    if !stdin && a.paths.iter().any(|p| p.as_os_str() == "-") {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "\"-\" (stdin) cannot be combined with other paths",
            )
            .exit();
    }
    let opts: SendOptions =
        crate::verbs::dial_options(a.addr, &a.dial, &a.code, &a.tls, a.idle_timeout)?;
    if a.raw && a.paths.len() > 1 {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--raw sends one stream: give at most one file (or stdin)",
            )
            .exit();
    }
    let source = if stdin {
        Source::Stdin
    } else {
        Source::Paths(a.paths)
    };
    let m = mode(&a.output);
    let events = if m == Mode::Human && std::io::stderr().is_terminal() {
        progress_events()
    } else if m == Mode::Human {
        // Not a terminal: no bar, no summary; warnings and errors only.
        Events::stderr(Mode::Quiet)
    } else {
        Events::stderr(m)
    }
    .verbose(a.output.verbose);
    if a.raw {
        let input: Box<dyn std::io::Read + Send> = match source {
            Source::Paths(p) => Box::new(open_raw_input(&p[0])?),
            _ => Box::new(std::io::stdin()),
        };
        return pincat::send_raw(&opts, input, &mut std::io::stdout().lock(), &events).map(drop);
    }
    pincat::send(&opts, source, &events).map(drop)
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

/// Events for a person at a terminal: a progress bar, then a one-line summary.
fn progress_events() -> Events {
    let bar = Mutex::new(None::<ProgressBar>);
    Events::stderr(Mode::Quiet).with_hook(move |e| {
        let mut bar = bar.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Event::TransferStarted { bytes, .. } => {
                let pb = match bytes {
                    Some(n) => {
                        ProgressBar::with_draw_target(Some(*n), ProgressDrawTarget::stderr())
                    }
                    None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                };
                let template = if bytes.is_some() {
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
                } else {
                    "{spinner} {bytes} {binary_bytes_per_sec} {elapsed}"
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    pb.set_style(style);
                }
                *bar = Some(pb);
            }
            Event::Progress { bytes, .. } => {
                if let Some(pb) = bar.as_ref() {
                    pb.set_position(*bytes);
                }
            }
            Event::TransferDone(t) => {
                if let Some(pb) = bar.take() {
                    pb.finish_and_clear();
                }
                let what = if t.files > 0 {
                    format!("{} file(s), ", t.files)
                } else {
                    String::new()
                };
                eprintln!(
                    "pincat: sent {what}{} in {:.2} s ({}/s) to {}, receipt confirmed",
                    human_bytes(t.bytes),
                    t.duration.as_secs_f64(),
                    human_bytes(pincat::events::rate(t.bytes, t.duration)),
                    t.peer
                );
            }
            _ => {}
        }
    })
}

/// `fingerprint --spki FILE|--remote ADDR`: the public-key pin of a
/// certificate file or of what a server presents.
fn spki_pin(a: &FingerprintArgs) -> pincat::Result<()> {
    if let Some(remote) = &a.remote {
        let addr = crate::known::resolve_addr(remote)?;
        let pin = match remote_confirmed(&addr, a)? {
            Some((_, pin)) => pin,
            None => pincat::send::remote_spki(&addr, a.connect_timeout)?,
        };
        if a.json {
            println!(
                "{}",
                serde_json::json!({"spki": pin.to_string(), "remote": remote})
            );
        } else {
            println!("{pin}");
        }
        return Ok(());
    }
    let Some(file) = &a.file else {
        return Err(anyhow!("--spki needs a FILE or --remote HOST:PORT").into());
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let pin = pincat::identity::spki_pin_of_bytes(&bytes)
        .with_context(|| format!("{}", file.display()))?;
    if a.json {
        let v = serde_json::json!({"spki": pin.to_string(), "file": file.display().to_string()});
        println!("{v}");
    } else {
        println!("{pin}");
    }
    Ok(())
}

/// With `--code`: the listener's keys once it confirmed the code.
fn remote_confirmed(
    addr: &str,
    a: &FingerprintArgs,
) -> pincat::Result<Option<(pincat::Fingerprint, Pin)>> {
    let Some(spec) = &a.code else {
        return Ok(None);
    };
    let mut o = pincat::net::dialer::DialOptions::with_pins(addr, Vec::new());
    o.code = Some(read_code(spec)?);
    o.connect_timeout = a.connect_timeout;
    o.handshake_timeout = a.connect_timeout;
    pincat::net::dialer::confirmed_keys(&o, &Events::stderr(Mode::Quiet)).map(Some)
}

fn fingerprint(a: FingerprintArgs) -> pincat::Result<()> {
    if a.spki {
        return spki_pin(&a);
    }
    let (file, remote) = (a.file.clone(), a.remote.clone());
    let fp = match (a.file.clone(), a.remote.clone()) {
        (_, Some(addr)) => {
            let addr = crate::known::resolve_addr(&addr)?;
            match remote_confirmed(&addr, &a)? {
                Some((fp, _)) => fp,
                None => pincat::send::remote_fingerprint(&addr, a.connect_timeout)?,
            }
        }
        (Some(file), None) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            pincat::identity::fingerprint_of_bytes(&bytes)
                .with_context(|| format!("{}", file.display()))?
        }
        (None, None) => return Err(Error::Other(anyhow!("give a FILE or --remote HOST:PORT"))),
    };
    if a.json {
        let mut v = serde_json::json!({"fingerprint": fp.to_string()});
        if let Some(r) = remote {
            v["remote"] = r.into();
        } else if let Some(f) = file {
            v["file"] = f.display().to_string().into();
        }
        println!("{v}");
    } else {
        println!("{fp}");
    }
    Ok(())
}
