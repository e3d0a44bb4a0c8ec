//! Known peers on the command line: `pincat peers add|list|remove`, and a
//! peer NAME in place of `HOST:PORT --pin PIN` on the dialing verbs.

use anyhow::anyhow;
use pincat::net::dialer::DialOptions;
use pincat::pair::Code;
use pincat::peers::{Peer, PeersFile, check_name};
use pincat::protocol::escape_text;
use pincat::{CaRoots, Pin};

use crate::cli::{DialArgs, PeersCommand};
use crate::verbs::usage;

/// Runs `pincat peers ...`.
pub fn peers(cmd: PeersCommand) -> pincat::Result<()> {
    let file = PeersFile::default_location()?;
    match cmd {
        PeersCommand::Add {
            name,
            addr,
            pin,
            replace,
        } => add(
            &file,
            Peer {
                name,
                addr,
                pins: pin,
            },
            replace,
        ),
        PeersCommand::List { json } => list(&file, json),
        PeersCommand::Remove { name } => {
            let shown = file.path().display().to_string();
            file.update(|peers| match peers.remove(&name) {
                true => Ok(()),
                false => Err(anyhow!("no peer named {name} in {shown}").into()),
            })?;
            eprintln!("pincat: removed peer {name} from {shown}");
            Ok(())
        }
    }
}

fn add(file: &PeersFile, peer: Peer, replace: bool) -> pincat::Result<()> {
    let shown = file.path().display().to_string();
    let line = escape_text(&peer.to_string());
    let existed = file.update(|peers| {
        let old = peers.get(&peer.name).map(|p| escape_text(&p.to_string()));
        match old {
            Some(old) if !replace => Err(anyhow!(
                "peer {} is already in {shown} ({old}); give --replace to replace it",
                peer.name
            )
            .into()),
            _ => {
                peers.insert(peer.clone(), replace);
                Ok(old.is_some())
            }
        }
    })?;
    let verb = if existed { "replaced" } else { "added" };
    eprintln!("pincat: {verb} peer in {shown}: {line}");
    if peer.pins.is_empty() {
        eprintln!(
            "pincat: it has no pin yet: the first dial with --tofu (e.g. pincat send {} --tofu FILE) records the key it presents",
            peer.name
        );
    }
    Ok(())
}

fn list(file: &PeersFile, json: bool) -> pincat::Result<()> {
    let peers = file.read()?;
    let rows: Vec<[String; 3]> = peers
        .iter()
        .map(|p| {
            let pins: Vec<String> = p.pins.iter().map(Pin::to_string).collect();
            let pins = match pins.is_empty() {
                true => "(no pin yet: recorded on first use with --tofu)".to_string(),
                false => pins.join(" "),
            };
            [
                escape_text(&p.name),
                escape_text(&p.addr),
                escape_text(&pins),
            ]
        })
        .collect();
    if json {
        let list: Vec<serde_json::Value> = peers
            .iter()
            .map(|p| {
                let pins: Vec<String> = p.pins.iter().map(Pin::to_string).collect();
                serde_json::json!({"name": escape_text(&p.name),
                    "addr": escape_text(&p.addr), "pins": pins})
            })
            .collect();
        let file = escape_text(&file.path().display().to_string());
        println!("{}", serde_json::json!({"file": file, "peers": list}));
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("pincat: no known peers in {}", file.path().display());
    }
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    for [name, addr, pins] in &rows {
        println!("{name:w0$}  {addr:w1$}  {pins}");
    }
    Ok(())
}

/// The dial options for `target`: `HOST:PORT` with `pins` and/or a CA
/// (`ca`, `name`), or a known peer's NAME (its address and pins from the
/// peers file). The mistakes are usage errors (exit 2): NAME with --pin or
/// --ca, an unknown NAME, HOST:PORT without --pin or --ca, or with --tofu,
/// a NAME with no pin yet without --tofu.
pub fn dial_options(target: &str, d: &DialArgs, code: Option<Code>) -> pincat::Result<DialOptions> {
    let mut o = dial_trust(target, d, code.is_some())?;
    o.code = code;
    if let Some(name) = &d.save {
        let file = PeersFile::default_location()?;
        if let Some(p) = file.read()?.get(name) {
            usage(&format!(
                "--save {name}: a peer of that name already exists in {} (at {}); pick another name or remove it first",
                file.path().display(),
                p.addr
            ));
        }
        o.save = Some((name.clone(), file.path().to_path_buf()));
    }
    Ok(o)
}

fn dial_trust(target: &str, d: &DialArgs, code: bool) -> pincat::Result<DialOptions> {
    let (pins, tofu, ca, name) = (&d.pin, d.tofu, d.ca.as_deref(), d.name.as_ref());
    if target.contains(':') {
        if tofu {
            usage(
                "--tofu records a key in a known peer's entry: add it first (pincat peers add NAME HOST:PORT), then dial NAME --tofu",
            );
        }
        let mut o = match ca {
            Some(path) => DialOptions::with_ca(target, CaRoots::load(path)?),
            None if pins.is_empty() && !code => usage(
                "--pin PIN, --code CODE or --ca CA.pem is required to dial HOST:PORT (or dial a known peer by NAME: see pincat peers add)",
            ),
            None => DialOptions::with_pins(target, Vec::new()),
        };
        o.pins = pins.to_vec();
        o.ca_name = name.cloned();
        if o.ca.is_some() {
            o.ca_subject()?;
        }
        return Ok(o);
    }
    let (file, peer) = known_peer(target)?;
    if !pins.is_empty() || ca.is_some() {
        usage(&format!(
            "{target} is a known peer: its pins come from {}; drop --pin/--ca (or dial HOST:PORT)",
            file.path().display()
        ));
    }
    if peer.pins.is_empty() && !tofu && !code {
        usage(&format!(
            "peer {target} has no pin yet: dial it with --tofu to trust (and record) the key it presents, or pin it: pincat peers add {target} {} --pin PIN --replace",
            peer.addr
        ));
    }
    Ok(DialOptions::for_peer(&peer, file.path(), tofu))
}

/// `HOST:PORT` as given, or the address of the known peer `target`.
pub fn resolve_addr(target: &str) -> pincat::Result<String> {
    if target.contains(':') {
        return Ok(target.to_string());
    }
    Ok(known_peer(target)?.1.addr)
}

/// The peer called `name` in the peers file; a usage error if there is none.
fn known_peer(name: &str) -> pincat::Result<(PeersFile, Peer)> {
    if let Err(e) = check_name(name) {
        usage(&format!("{e}; or give HOST:PORT"));
    }
    let file = PeersFile::default_location()?;
    match file.read()?.get(name) {
        Some(p) => Ok((file, p.clone())),
        None => usage(&format!(
            "no known peer named {name} in {} (and no ':' makes it HOST:PORT): add it with pincat peers add {name} HOST:PORT --pin PIN",
            file.path().display()
        )),
    }
}
