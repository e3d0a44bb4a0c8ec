//! Known peers: the human-editable file that gives names to `HOST:PORT` and
//! their pins, read and rewritten safely (`file`: owner-only, never through a
//! symlink, locked, atomic), and the trust-on-first-use record.
//!
//! One peer a line, `NAME HOST:PORT [PIN ...]`; `#` starts a comment; blank
//! lines and comments are kept when pincat rewrites the file.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use crate::fingerprint::Pin;
use crate::net::relay::Via;

mod file;

pub use file::PeersFile;

/// The environment variable that names the peers file, overriding the
/// default `$XDG_CONFIG_HOME/pincat/peers` (or `$HOME/.config/pincat/peers`).
pub const PEERS_ENV: &str = "PINCAT_PEERS";

/// Most characters of a peer name.
const MAX_NAME: usize = 64;

/// A known peer: where it is and what it must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its name (see [`check_name`]).
    pub name: String,
    /// `HOST:PORT` to dial; empty when it is reached only through `via`
    /// (written `-` in the file).
    pub addr: String,
    /// Its pins (any one matches); empty until recorded on first use.
    pub pins: Vec<Pin>,
    /// The relay and rendezvous it waits at, if any (`via=RELAY/RENDEZVOUS`
    /// in the file): dialed after `addr` (or alone).
    pub via: Option<Via>,
}

/// The known-peers entry a dial is for: where to record a key on first use
/// and what to name in a changed-key error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    /// The peer's name.
    pub name: String,
    /// The peers file it comes from.
    pub file: PathBuf,
    /// With no pin recorded yet, accept the key the server proves it holds
    /// and record its public-key pin (opt-in: `--tofu`).
    pub trust_first_use: bool,
}

/// Whether `name` can name a peer: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting
/// with a letter or digit. It never contains `:`, so a name is never taken
/// for `HOST:PORT`, nor starts with `-`, so it is never taken for a flag.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && name.len() <= MAX_NAME && name.chars().all(ok_char) {
        return Ok(());
    }
    Err(format!(
        "bad peer name {:?}: use 1 to {MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit",
        crate::protocol::escape_text(name)
    ))
}

/// Whether `addr` is a `HOST:PORT` pincat can keep in the file: a host of
/// letters, digits, `.`, `-`, `_` (or a bracketed IPv6 address), and a
/// port from 1 to 65535.
pub fn check_addr(addr: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "bad address {:?}: expected HOST:PORT (a host name, an IPv4 address or a bracketed IPv6 address, and a port)",
            crate::protocol::escape_text(addr)
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if !port.parse::<u16>().is_ok_and(|p| p != 0) || port.starts_with('+') {
        return Err(bad());
    }
    let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    let ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            !v6.is_empty()
                && v6
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '%'))
        }
        None => !host.is_empty() && host.chars().all(host_char),
    };
    if ok { Ok(()) } else { Err(bad()) }
}

impl fmt::Display for Peer {
    /// The file's line for this peer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = if self.addr.is_empty() {
            "-"
        } else {
            &self.addr
        };
        write!(f, "{} {addr}", self.name)?;
        if let Some(v) = &self.via {
            write!(f, " via={v}")?;
        }
        for p in &self.pins {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// One line of the file.
#[derive(Debug, Clone)]
enum Line {
    /// A blank or comment line, kept as it was.
    Kept(String),
    /// A peer; `raw` is the line as read, until the peer is changed.
    Entry {
        peer: Peer,
        comment: Option<String>,
        raw: Option<String>,
    },
}

/// Why a peers file cannot be used: its line number (from 1) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The contents of a peers file: the peers, and every comment and blank
/// line in its place.
///
/// ```
/// use pincat::net::dialer::DialOptions;
/// use pincat::peers::Peers;
/// let text = "# mine\nnas 10.0.0.2:7878 sha256//n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\n";
/// let peers = Peers::parse(text).unwrap();
/// let nas = peers.get("nas").unwrap();
/// let opts = DialOptions::for_peer(nas, "peers".as_ref(), false);
/// assert_eq!((opts.addr.as_str(), &opts.pins), ("10.0.0.2:7878", &nas.pins));
/// assert_eq!(peers.render(), text); // comments kept
/// assert_eq!(Peers::parse("nas 10.0.0.2\n").unwrap_err().line, 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Peers {
    lines: Vec<Line>,
    changed: bool,
}

impl Peers {
    /// Parses the text of a peers file; the first bad line is an error.
    pub fn parse(text: &str) -> Result<Peers, ParseError> {
        let mut peers = Peers::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| ParseError {
                line: i + 1,
                message,
            };
            let line = parse_line(raw).map_err(err)?;
            if let Line::Entry { peer, .. } = &line
                && peers.get(&peer.name).is_some()
            {
                return Err(err(format!("peer {} is listed twice", peer.name)));
            }
            peers.lines.push(line);
        }
        Ok(peers)
    }

    /// The text to write: unchanged lines as they were, then the rest.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Kept(s) | Line::Entry { raw: Some(s), .. } => out.push_str(s),
                Line::Entry {
                    peer,
                    comment,
                    raw: None,
                } => {
                    out.push_str(&peer.to_string());
                    if let Some(c) = comment {
                        out.push_str(" #");
                        out.push_str(c);
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// Every peer, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry { peer, .. } => Some(peer),
            Line::Kept(_) => None,
        })
    }

    /// The peer called `name`.
    pub fn get(&self, name: &str) -> Option<&Peer> {
        self.iter().find(|p| p.name == name)
    }

    /// Whether anything was added, removed or changed since parsing.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// Adds `peer` at the end, or in place of the peer of the same name
    /// when `replace` (keeping its line's comment); `false` if that name is
    /// taken and `replace` is not set.
    pub fn insert(&mut self, peer: Peer, replace: bool) -> bool {
        match self.entry_mut(&peer.name) {
            Some(_) if !replace => return false,
            Some((old, raw)) => {
                *old = peer;
                *raw = None;
            }
            None => self.lines.push(Line::Entry {
                peer,
                comment: None,
                raw: None,
            }),
        }
        self.changed = true;
        true
    }

    /// Sets the pins of the peer called `name`; `false` if there is none.
    pub fn set_pins(&mut self, name: &str, pins: Vec<Pin>) -> bool {
        let Some((peer, raw)) = self.entry_mut(name) else {
            return false;
        };
        peer.pins = pins;
        *raw = None;
        self.changed = true;
        true
    }

    /// Removes the peer called `name` (its line only); `false` if there is none.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Entry { peer, .. } if peer.name == name));
        self.changed |= self.lines.len() != before;
        self.lines.len() != before
    }

    fn entry_mut(&mut self, name: &str) -> Option<(&mut Peer, &mut Option<String>)> {
        self.lines.iter_mut().find_map(|l| match l {
            Line::Entry { peer, raw, .. } if peer.name == name => Some((peer, raw)),
            _ => None,
        })
    }
}

/// A relay with its rendezvous, as a known peer records it.
pub fn parse_via(v: &str) -> Result<Via, String> {
    let via: Via = v.parse()?;
    match via.rendezvous {
        Some(_) => Ok(via),
        None => Err(format!(
            "via={v}: a known peer's relay needs the listener's rendezvous (RELAY/RENDEZVOUS)"
        )),
    }
}

/// One line: blank, comment, or `NAME HOST:PORT|- [via=RELAY/RENDEZVOUS] [PIN ...] [# comment]`.
fn parse_line(raw: &str) -> Result<Line, String> {
    let (body, comment) = match raw.split_once('#') {
        Some((b, c)) => (b, Some(c.to_string())),
        None => (raw, None),
    };
    let mut words = body.split_whitespace();
    let Some(name) = words.next() else {
        return Ok(Line::Kept(raw.to_string()));
    };
    check_name(name)?;
    let addr = words.next().ok_or_else(|| {
        format!("peer {name} has no HOST:PORT (expected NAME HOST:PORT [PIN ...])")
    })?;
    let addr = match addr {
        "-" => "",
        a => {
            check_addr(a)?;
            a
        }
    };
    let (mut pins, mut via) = (Vec::new(), None);
    for w in words {
        match w.strip_prefix("via=") {
            Some(v) => via = Some(parse_via(v).map_err(|e| format!("peer {name}: {e}"))?),
            None => pins.push(w.parse::<Pin>().map_err(|e| format!("peer {name}: {e}"))?),
        }
    }
    if addr.is_empty() && via.is_none() {
        return Err(format!(
            "peer {name} has neither HOST:PORT nor via=RELAY/RENDEZVOUS"
        ));
    }
    Ok(Line::Entry {
        peer: Peer {
            name: name.to_string(),
            addr: addr.to_string(),
            pins,
            via,
        },
        comment,
        raw: Some(raw.to_string()),
    })
}

/// What recording a first-use key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstUse {
    /// The key was recorded: the entry had no pin.
    Recorded,
    /// Another pincat recorded this same key meanwhile.
    AlreadyRecorded,
    /// Another pincat recorded other pins meanwhile: they are not this key.
    Conflict(Vec<Pin>),
}

/// Records `pin` for the peer `known.name`, dialed at `addr`, under the
/// file's lock: only if the entry still exists, still has that address
/// and still has no pin (two first uses at once: the first one wins, and
/// the other one fails unless it saw the same key).
pub fn record_first_use(known: &KnownPeer, addr: &str, pin: Pin) -> crate::Result<FirstUse> {
    let file = PeersFile::new(&known.file);
    let shown = known.file.display();
    file.update(|peers| {
        let Some(peer) = peers.get(&known.name) else {
            return Err(anyhow!(
                "peer {} was removed from {shown} while connecting; nothing was sent",
                known.name
            )
            .into());
        };
        if peer.addr != addr {
            return Err(anyhow!(
                "peer {} changed address in {shown} while connecting; nothing was sent (try again)",
                known.name
            )
            .into());
        }
        if peer.pins.is_empty() {
            peers.set_pins(&known.name, vec![pin]);
            Ok(FirstUse::Recorded)
        } else if peer.pins.contains(&pin) {
            Ok(FirstUse::AlreadyRecorded)
        } else {
            Ok(FirstUse::Conflict(peer.pins.clone()))
        }
    })
}

/// Saves `name` at `addr` with `pin` (a key the code just confirmed) as a
/// new entry of `file`; an entry of that name is kept as it is unless it
/// already records the same address and key.
pub fn save_confirmed(
    file: &Path,
    name: &str,
    addr: &str,
    via: Option<&Via>,
    pin: Pin,
) -> crate::Result<bool> {
    let f = PeersFile::new(file);
    f.update(|peers| match peers.get(name) {
        Some(p) if p.addr == addr && p.via.as_ref() == via && p.pins.contains(&pin) => Ok(false),
        Some(_) => Err(anyhow!(
            "peer {name} already exists in {} with another address or key; the transfer went ahead, but nothing was saved (remove it first: pincat peers remove {name})",
            file.display()
        )
        .into()),
        None => {
            let peer = Peer {
                name: name.to_string(),
                addr: addr.to_string(),
                pins: vec![pin],
                via: via.cloned(),
            };
            peers.insert(peer, false);
            Ok(true)
        }
    })
}

#[cfg(test)]
mod tests;
