//! Who a listener admits and how many at once, for `serve`, `offer`,
//! `pipe --listen` and `forward --listen`: the allow list, --allow-any, or
//! a pairing code; the connection caps; the default address; stopping on a
//! signal; and these flags turned into the library's [`Listen`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use pincat::pair::{Code, Gate, GatePolicy};
use pincat::{Allow, CaAllow, CaRoots, Listen, Pin};

use super::code::{CodeArgs, read_code};
use super::tls::{TlsArgs, load_identity};
use super::usage::usage;

/// Who may connect: shared by offer, pipe --listen and forward --listen.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Only accept peers presenting this client certificate: its fingerprint, or its key's pin sha256//BASE64 (repeatable).
    #[arg(long, value_name = "PIN")]
    pub allow: Vec<Pin>,
    /// Only accept peers whose pin is listed in FILE (one per line, # comments).
    #[arg(long, value_name = "FILE")]
    pub allow_file: Vec<PathBuf>,
    /// Also accept peers whose client certificate was issued by this CA (PEM certificate(s)) and is valid now.
    #[arg(long, value_name = "CA.pem")]
    pub allow_ca: Option<PathBuf>,
    /// With --allow-ca: only certificates carrying this name (DNS name or IP; repeatable, any one matches).
    #[arg(long, value_name = "NAME", requires = "allow_ca")]
    pub allow_name: Vec<String>,
    /// Serve anyone who connects first: no code, no allow list (for raw peers such as openssl or ncat).
    #[arg(long, conflicts_with_all = ["allow", "allow_file", "allow_ca", "code_words"])]
    pub allow_any: bool,
    /// Words in the generated code (each about 10.3 bits; the default 3 is about 31 bits).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(2..=16), conflicts_with_all = ["allow", "allow_file", "allow_ca"])]
    pub code_words: Option<u8>,
}

/// How many at once: offer and forward --listen (a pipe takes one peer).
#[derive(Debug, Args)]
pub struct CapsArgs {
    /// Most connections past the TLS handshake at once.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_conns: u32,
    /// Most TLS handshakes in progress at once; past it the oldest is cut.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_handshakes: u32,
}

/// The default listening address of every listening verb: all interfaces
/// on the default port, IPv6 (which takes IPv4 too) where the host has it.
pub fn default_listen() -> SocketAddr {
    super::addr::all_interfaces(pincat::serve::DEFAULT_PORT)
}

/// The one place a listening verb's flags become the library's [`Listen`]:
/// the address, who it admits (see [`admission`]; `keep_open` picks the
/// code's attempt budget), the identity, the caps and the time limits.
pub fn listen_options(
    addr: SocketAddr,
    who: &ListenArgs,
    code: &CodeArgs,
    keep_open: bool,
    tls: &TlsArgs,
    caps: &CapsArgs,
    idle_timeout: Duration,
) -> pincat::Result<Listen> {
    let (allow, code) = admission(who, code, keep_open)?;
    Ok(Listen {
        addr,
        identity: load_identity(tls.identity.as_deref())?,
        allow,
        code,
        max_conns: caps.max_conns as usize,
        max_handshakes: caps.max_handshakes as usize,
        handshake_timeout: tls.handshake_timeout,
        idle_timeout,
        via: None,
        relay_slots: 1,
        bind: true,
    })
}

/// Runs `f` on SIGINT/SIGTERM: how every listening verb shuts down.
pub fn on_signal(f: impl Fn() + Send + 'static) -> pincat::Result<()> {
    ctrlc::set_handler(f).context("cannot install the signal handler")?;
    Ok(())
}

/// The one place the command line decides who a listener admits, for
/// `serve`, `offer`, `pipe --listen` and `forward --listen`: the allow list
/// (--allow, --allow-file, --allow-ca) if given; else anyone with
/// --allow-any; else the dialer that proves a code (--code, or a fresh
/// one), with the attempt budget of a one-shot or a kept-open listener.
fn admission(
    l: &ListenArgs,
    code: &CodeArgs,
    keep_open: bool,
) -> pincat::Result<(Option<Allow>, Option<Gate>)> {
    let allow = allow_list(l)?;
    if allow.is_some() || l.allow_any {
        if code.code.is_some() {
            return Err(usage(
                "--code is for listeners without an allow list: --allow/--allow-ca admit by certificate, --allow-any admits anyone",
            ));
        }
        return Ok((allow, None));
    }
    let policy = GatePolicy::for_listener(keep_open);
    let gate = match &code.code {
        Some(spec) => {
            let c = read_code(spec)?;
            let letters = c
                .as_str()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .count();
            if c.list_bits() < 30.0 && letters < 16 {
                return Err(usage(
                    "--code on a listener must be at least 3 words of the list or 16 letters and digits: a short code is easy to guess",
                ));
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

/// Who may connect, from --allow, --allow-file and --allow-ca/--allow-name
/// (`None`: no allow list).
fn allow_list(l: &ListenArgs) -> pincat::Result<Option<Allow>> {
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

/// Reads an allow file: one fingerprint per line, `#` starts a comment.
fn read_allow_file(path: &Path) -> pincat::Result<Vec<Pin>> {
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
