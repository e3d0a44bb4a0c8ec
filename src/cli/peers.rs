//! Known peers on the command line: `pincat peers add|list|remove`, and
//! looking up a peer NAME given in place of `HOST:PORT`.

use anyhow::anyhow;
use clap::Subcommand;
use pincat::Pin;
use pincat::peers::{Peer, PeersFile, check_name};
use pincat::protocol::escape_text;

use super::usage::usage;

/// `pincat peers ...`: the known-peers file (PINCAT_PEERS, else
/// $XDG_CONFIG_HOME/pincat/peers, else ~/.config/pincat/peers).
#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// Remember a peer by NAME; without --pin, a first `--tofu` dial records its key.
    Add {
        /// Its name: letters, digits, '.', '_', '-' (no ':', so never taken for HOST:PORT).
        #[arg(value_name = "NAME", value_parser = parse_peer_name)]
        name: String,
        /// Where it listens (omit for a peer reached only through --via).
        #[arg(value_name = "HOST:PORT", value_parser = parse_peer_addr, required_unless_present = "via")]
        addr: Option<String>,
        /// The relay and rendezvous it waits at (RELAY/RENDEZVOUS, from its listening line): dialed after HOST:PORT, or alone.
        #[arg(long, value_name = "RELAY/RENDEZVOUS", value_parser = parse_peer_via)]
        via: Option<pincat::net::relay::Via>,
        /// Its certificate fingerprint or public-key pin sha256//BASE64; repeat for several.
        #[arg(long, short, value_name = "PIN")]
        pin: Vec<Pin>,
        /// Replace an existing peer of that name (else that is an error).
        #[arg(long)]
        replace: bool,
    },
    /// List the known peers (aligned lines, or one JSON object with --json).
    List {
        /// Print one JSON object {"file", "peers": [{"name", "addr", "via", "pins"}]}.
        #[arg(long)]
        json: bool,
        /// Print only the names, one a line (what shell completion offers).
        #[arg(long, conflicts_with = "json")]
        names: bool,
    },
    /// Forget a peer.
    Remove {
        /// Its name.
        #[arg(value_name = "NAME", value_parser = parse_peer_name)]
        name: String,
    },
}

/// A peer NAME flag or argument, checked at the edge.
pub fn parse_peer_name(s: &str) -> Result<String, String> {
    pincat::peers::check_name(s).map(|()| s.to_string())
}

fn parse_peer_via(s: &str) -> Result<pincat::net::relay::Via, String> {
    pincat::peers::parse_via(s)
}

fn parse_peer_addr(s: &str) -> Result<String, String> {
    pincat::peers::check_addr(s).map(|()| s.to_string())
}

/// Runs `pincat peers ...`.
pub fn run(cmd: PeersCommand) -> pincat::Result<()> {
    let file = PeersFile::default_location()?;
    match cmd {
        PeersCommand::Add {
            name,
            addr,
            via,
            pin,
            replace,
        } => add(
            &file,
            Peer {
                name,
                addr: addr.unwrap_or_default(),
                pins: pin,
                via,
            },
            replace,
        ),
        PeersCommand::List { names: true, .. } => list_names(&file),
        PeersCommand::List { json, .. } => list(&file, json),
        PeersCommand::Remove { name } => remove(&file, &name),
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
    if peer.pins.is_empty() && peer.addr.is_empty() {
        eprintln!(
            "pincat: it has no pin yet: reached only through a relay, its key is recorded by a first dial with --tofu and the listener's code (pincat send {} --tofu --code CODE FILE); --tofu alone is refused through a relay, which could pose as it",
            peer.name
        );
    } else if peer.pins.is_empty() {
        eprintln!(
            "pincat: it has no pin yet: the first dial with --tofu (e.g. pincat send {} --tofu FILE) records the key it presents",
            peer.name
        );
    }
    Ok(())
}

fn remove(file: &PeersFile, name: &str) -> pincat::Result<()> {
    let shown = file.path().display().to_string();
    file.update(|peers| match peers.remove(name) {
        true => Ok(()),
        false => Err(anyhow!("no peer named {name} in {shown}").into()),
    })?;
    eprintln!("pincat: removed peer {name} from {shown}");
    Ok(())
}

/// The known peers' names, one a line (escaped as everywhere else).
fn list_names(file: &PeersFile) -> pincat::Result<()> {
    for p in file.read()?.iter() {
        println!("{}", escape_text(&p.name));
    }
    Ok(())
}

fn list(file: &PeersFile, json: bool) -> pincat::Result<()> {
    let peers = file.read()?;
    if json {
        let list: Vec<serde_json::Value> = peers
            .iter()
            .map(|p| {
                let pins: Vec<String> = p.pins.iter().map(Pin::to_string).collect();
                let via = p.via.as_ref().map(|v| escape_text(&v.to_string()));
                serde_json::json!({"name": escape_text(&p.name),
                    "addr": escape_text(&p.addr), "via": via, "pins": pins})
            })
            .collect();
        let file = escape_text(&file.path().display().to_string());
        println!("{}", serde_json::json!({"file": file, "peers": list}));
        return Ok(());
    }
    let rows: Vec<[String; 3]> = peers
        .iter()
        .map(|p| {
            let pins: Vec<String> = p.pins.iter().map(Pin::to_string).collect();
            let pins = match pins.is_empty() {
                true => "(no pin yet: recorded on first use with --tofu)".to_string(),
                false => pins.join(" "),
            };
            let addr = match (&p.addr, &p.via) {
                (a, Some(v)) if a.is_empty() => format!("via {v}"),
                (a, Some(v)) => format!("{a} via {v}"),
                (a, None) => a.clone(),
            };
            [escape_text(&p.name), escape_text(&addr), escape_text(&pins)]
        })
        .collect();
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

/// `HOST:PORT` as given, or the address of the known peer `target`.
pub fn resolve_addr(target: &str) -> pincat::Result<String> {
    if target.contains(':') {
        return Ok(target.to_string());
    }
    Ok(known_peer(target)?.1.addr)
}

/// The peer called `name` in the peers file; a usage error if there is none.
pub fn known_peer(name: &str) -> pincat::Result<(PeersFile, Peer)> {
    if let Err(e) = check_name(name) {
        return Err(usage(format!("{e}; or give HOST:PORT")));
    }
    let file = PeersFile::default_location()?;
    match file.read()?.get(name) {
        Some(p) => Ok((file, p.clone())),
        None => Err(usage(format!(
            "no known peer named {name} in {} (and no ':' makes it HOST:PORT): add it with pincat peers add {name} HOST:PORT --pin PIN",
            file.path().display()
        ))),
    }
}
