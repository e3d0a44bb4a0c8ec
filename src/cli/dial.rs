//! How a dialing verb (`send`, `get`, `pipe`, `forward --local`) reaches and
//! trusts its peer: the flags, and the one place they become `DialOptions`
//! (HOST:PORT with --pin, --code or --ca, or a known peer's NAME).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pincat::net::dialer::DialOptions;
use pincat::peers::PeersFile;
use pincat::{CaRoots, Pin};

use super::code::{CodeArgs, dial_code};
use super::duration::parse_duration;
use super::peers::{known_peer, parse_peer_name};
use super::tls::{TlsArgs, load_identity};
use super::usage::usage;

/// Dialing options shared by send, get, pipe and forward --local.
#[derive(Debug, Args)]
pub struct DialArgs {
    /// The listening side's certificate fingerprint (SHA-256 hex; any case, colons optional) or public-key pin sha256//BASE64; repeat for several (any one matches). Required with HOST:PORT unless --ca or --code is given.
    #[arg(long, short, value_name = "PIN")]
    pub pin: Vec<Pin>,
    /// Trust on first use: a known peer NAME with no pin yet is trusted with the key it proves it holds, which is recorded (loudly) for next time.
    #[arg(long, conflicts_with = "pin")]
    pub tofu: bool,
    /// Trust a server whose certificate this private CA issued (PEM certificate(s)), valid now and carrying --name.
    #[arg(long, value_name = "CA.pem", conflicts_with = "tofu")]
    pub ca: Option<PathBuf>,
    /// With --ca: the name the server's certificate must carry [default: the HOST dialed].
    #[arg(long, value_name = "NAME", requires = "ca")]
    pub name: Option<String>,
    /// Limit for each TCP connection attempt.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Keep retrying the connection this long while the listener is not up yet; omit to try once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_for: Option<Duration>,
    /// With --code: save the listener's key, once the code confirmed it, as a known peer NAME (then dial NAME).
    #[arg(long, value_name = "NAME", requires = "code", value_parser = parse_peer_name)]
    pub save: Option<String>,
}

/// The dial options for `target` from the flags: its trust (see [`trust`]),
/// the code, where --save records the confirmed key, the identity and the
/// time limits (`idle` is the verb's own idle timeout).
pub fn dial_options(
    target: String,
    d: &DialArgs,
    code: &CodeArgs,
    tls: &TlsArgs,
    idle: Duration,
) -> pincat::Result<DialOptions> {
    let code = dial_code(code)?;
    let mut o = trust(&target, d, code.is_some())?;
    o.code = code;
    if let Some(name) = &d.save {
        o.save = Some((name.clone(), save_file(name)?));
    }
    o.identity = load_identity(tls.identity.as_deref())?;
    o.connect_timeout = d.connect_timeout;
    o.retry_for = d.retry_for;
    o.handshake_timeout = tls.handshake_timeout;
    o.idle_timeout = idle;
    Ok(o)
}

/// Whom `target` trusts: `HOST:PORT` with --pin and/or --ca (`--name`), or
/// a known peer's NAME (its address and pins from the peers file). The
/// mistakes are usage errors (exit 2): NAME with --pin or --ca, an unknown
/// NAME, HOST:PORT without --pin, --code or --ca, or with --tofu, a NAME
/// with no pin yet without --tofu or --code.
fn trust(target: &str, d: &DialArgs, code: bool) -> pincat::Result<DialOptions> {
    let (pins, tofu, ca, name) = (&d.pin, d.tofu, d.ca.as_deref(), d.name.as_ref());
    // Empty: through the relay alone (--via), trusted as HOST:PORT is.
    if target.contains(':') || target.is_empty() {
        if tofu {
            return Err(usage(
                "--tofu records a key in a known peer's entry: add it first (pincat peers add NAME HOST:PORT), then dial NAME --tofu",
            ));
        }
        let mut o = match ca {
            Some(path) => DialOptions::with_ca(target, CaRoots::load(path)?),
            None if pins.is_empty() && !code => {
                return Err(usage(
                    "--pin PIN, --code CODE or --ca CA.pem is required to dial HOST:PORT (or dial a known peer by NAME: see pincat peers add)",
                ));
            }
            None => DialOptions::with_pins(target, Vec::new()),
        };
        o.pins = pins.to_vec();
        o.ca_name = name.cloned();
        if o.ca.is_some() {
            o.ca_subject()?;
        }
        return Ok(o);
    }
    if target.parse::<std::net::IpAddr>().is_ok() && !super::via::known(target) {
        return Err(usage(format!(
            "{target} has no port: type HOST:PORT as one argument ({}:{})",
            super::addr::bracketed(target),
            pincat::serve::DEFAULT_PORT
        )));
    }
    let (file, peer) = known_peer(target)?;
    if !pins.is_empty() || ca.is_some() {
        return Err(usage(format!(
            "{target} is a known peer: its pins come from {}; drop --pin/--ca (or dial HOST:PORT)",
            file.path().display()
        )));
    }
    if peer.pins.is_empty() && !tofu && !code {
        return Err(usage(format!(
            "peer {target} has no pin yet: dial it with --tofu to trust (and record) the key it presents, or pin it: pincat peers add {target} {} --pin PIN --replace",
            peer.addr
        )));
    }
    Ok(DialOptions::for_peer(&peer, file.path(), tofu))
}

/// The peers file `--save NAME` records into; a usage error if NAME is
/// taken there already.
fn save_file(name: &str) -> pincat::Result<PathBuf> {
    let file = PeersFile::default_location()?;
    if let Some(p) = file.read()?.get(name) {
        return Err(usage(format!(
            "--save {name}: a peer of that name already exists in {} (at {}); pick another name or remove it first",
            file.path().display(),
            p.addr
        )));
    }
    Ok(file.path().to_path_buf())
}
