//! Keys on the command line: `pincat identity new|cert` (our own) and
//! `pincat fingerprint` (a certificate file's, or what a server presents).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use pincat::net::dialer::{DialOptions, confirmed_keys};
use pincat::{Error, Events, Fingerprint, Identity, Mode, Pin};

use super::code::read_code;
use super::duration::parse_duration;
use super::peers::resolve_addr;

/// `pincat identity ...`.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Create a new identity file (key mode 0600 + certificate, PEM) and print its fingerprint.
    New {
        /// Where to write it; never overwritten.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Make a CA identity, to issue identities with --issuer.
        #[arg(long, conflicts_with = "issuer")]
        ca: bool,
        /// Issue the new identity from this CA identity instead of self-signing it (needs --name).
        #[arg(long, value_name = "CA.id", requires = "name")]
        issuer: Option<PathBuf>,
        /// With --issuer: the name(s) the certificate carries (DNS name or IP; repeatable).
        #[arg(long, value_name = "NAME", requires = "issuer")]
        name: Vec<String>,
        /// How long it is valid [default: 24h with --issuer, 3650d with --ca; self-signed: forever].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        valid: Option<Duration>,
        /// Print one JSON object ({"file", "fingerprint", "spki", ...}) instead of the bare fingerprint.
        #[arg(long)]
        json: bool,
    },
    /// Print an identity's certificate (PEM; public): for a CA, the file its peers give to --ca/--allow-ca.
    Cert {
        /// The identity file (or env:VAR).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `pincat fingerprint`.
#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// A certificate or identity file (PEM or DER).
    #[arg(value_name = "FILE", required_unless_present = "remote")]
    pub file: Option<PathBuf>,
    /// Connect to HOST:PORT (or a known peer's NAME), print the fingerprint it presents, and send nothing.
    #[arg(long, value_name = "HOST:PORT|NAME")]
    pub remote: Option<String>,
    /// With --remote: print the key only once the listener confirmed this code (the code exchange counts as one of its attempts).
    #[arg(long, value_name = "CODE", requires = "remote")]
    pub code: Option<String>,
    /// Limit for connecting and the handshake with --remote.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Print one JSON object ({"fingerprint", and "file" or "remote"}; with --spki, {"spki", ...}) instead of the bare pin.
    #[arg(long)]
    pub json: bool,
    /// Print the public-key pin (sha256//BASE64 of the SubjectPublicKeyInfo) instead: it survives a renewed certificate on the same key.
    #[arg(long)]
    pub spki: bool,
}

/// Runs `pincat identity ...`.
pub fn identity(cmd: IdentityCommand) -> pincat::Result<()> {
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

/// A FILE beside `--remote`: the ncat form (`--remote 127.0.0.1 7878`)
/// says to type `HOST:PORT`; anything else is one or the other.
fn both_or_ncat(a: &FingerprintArgs) -> pincat::Result<()> {
    let (Some(remote), Some(file)) = (&a.remote, &a.file) else {
        return Ok(());
    };
    super::addr::ncat_form("fingerprint --remote", remote, Some(file))?;
    Err(super::usage::usage(
        "give a FILE or --remote HOST:PORT, not both",
    ))
}

/// Runs `pincat fingerprint`.
pub fn fingerprint(a: FingerprintArgs) -> pincat::Result<()> {
    both_or_ncat(&a)?;
    if a.spki {
        return spki_pin(&a);
    }
    let (file, remote) = (a.file.clone(), a.remote.clone());
    let fp = match (a.file.clone(), a.remote.clone()) {
        (_, Some(addr)) => {
            let addr = resolve_addr(&addr)?;
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

/// `fingerprint --spki FILE|--remote ADDR`: the public-key pin of a
/// certificate file or of what a server presents.
fn spki_pin(a: &FingerprintArgs) -> pincat::Result<()> {
    if let Some(remote) = &a.remote {
        let addr = resolve_addr(remote)?;
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
fn remote_confirmed(addr: &str, a: &FingerprintArgs) -> pincat::Result<Option<(Fingerprint, Pin)>> {
    let Some(spec) = &a.code else {
        return Ok(None);
    };
    let mut o = DialOptions::with_pins(addr, Vec::new());
    o.code = Some(read_code(spec)?);
    o.connect_timeout = a.connect_timeout;
    o.handshake_timeout = a.connect_timeout;
    confirmed_keys(&o, &Events::stderr(Mode::Quiet)).map(Some)
}
