//! Known peers: the human-editable file that gives names to `HOST:PORT` and
//! their pins, read and rewritten safely (owner-only, never through a
//! symlink, locked, atomic), and the trust-on-first-use record.
//!
//! One peer a line, `NAME HOST:PORT [PIN ...]`; `#` starts a comment; blank
//! lines and comments are kept when pincat rewrites the file.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::fingerprint::Pin;
use crate::sys;

/// The environment variable that names the peers file, overriding the
/// default `$XDG_CONFIG_HOME/pincat/peers` (or `$HOME/.config/pincat/peers`).
pub const PEERS_ENV: &str = "PINCAT_PEERS";

/// Most bytes of a peers file pincat reads.
const MAX_FILE: u64 = 1 << 20;

/// Most characters of a peer name.
const MAX_NAME: usize = 64;

/// How long to wait for another pincat that holds the peers file's lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A known peer: where it is and what it must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its name (see [`check_name`]).
    pub name: String,
    /// `HOST:PORT` to dial.
    pub addr: String,
    /// Its pins (any one matches); empty until recorded on first use.
    pub pins: Vec<Pin>,
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
        write!(f, "{} {}", self.name, self.addr)?;
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

/// One line: blank, comment, or `NAME HOST:PORT [PIN ...] [# comment]`.
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
    check_addr(addr)?;
    let pins = words
        .map(|w| w.parse::<Pin>().map_err(|e| format!("peer {name}: {e}")))
        .collect::<Result<Vec<Pin>, String>>()?;
    Ok(Line::Entry {
        peer: Peer {
            name: name.to_string(),
            addr: addr.to_string(),
            pins,
        },
        comment,
        raw: Some(raw.to_string()),
    })
}

/// A peers file on disk.
#[derive(Debug, Clone)]
pub struct PeersFile {
    path: PathBuf,
}

impl PeersFile {
    /// The file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PeersFile { path: path.into() }
    }

    /// The file named by `PINCAT_PEERS`, else `$XDG_CONFIG_HOME/pincat/peers`,
    /// else `$HOME/.config/pincat/peers`.
    pub fn default_location() -> crate::Result<Self> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(p) = var(PEERS_ENV) {
            return Ok(Self::new(p));
        }
        // The XDG spec ignores a relative XDG_CONFIG_HOME.
        let config = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or_else(|| anyhow!("cannot find the peers file: set {PEERS_ENV} or HOME"))?;
        Ok(Self::new(config.join("pincat").join("peers")))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and parses the file (no file yet: no peers).
    pub fn read(&self) -> crate::Result<Peers> {
        let Some(dir) = self.open_dir(false)? else {
            return Ok(Peers::default());
        };
        Ok(self.read_in(&dir)?)
    }

    /// Changes the file under its lock: reads it again, applies `change`,
    /// and writes the result atomically (mode 0600) if anything changed.
    /// A file that does not parse is never rewritten.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Peers) -> crate::Result<T>,
    ) -> crate::Result<T> {
        let dir = self
            .open_dir(true)?
            .context("cannot create the peers directory")?;
        self.lock(&dir)?;
        let mut peers = self.read_in(&dir)?;
        let out = change(&mut peers)?;
        if peers.is_changed() {
            self.write_in(&dir, &peers.render())
                .with_context(|| format!("cannot write the peers file {}", self.path.display()))?;
        }
        Ok(out)
        // The lock goes with `dir`.
    }

    fn dir_path(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    fn file_name(&self) -> anyhow::Result<&OsStr> {
        self.path
            .file_name()
            .ok_or_else(|| anyhow!("the peers file {} is not a file name", self.path.display()))
    }

    /// Opens (with `create`, first creates, mode 0700) the file's directory
    /// and checks that only its owner can change it; `None` if missing.
    fn open_dir(&self, create: bool) -> anyhow::Result<Option<OwnedFd>> {
        let dir = self.dir_path();
        if create {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let fd = match sys::open_dir(dir) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", dir.display())),
        };
        let st =
            sys::stat_fd(fd.as_fd()).with_context(|| format!("cannot stat {}", dir.display()))?;
        check_private(
            &st,
            &format!("the directory {} of the peers file", dir.display()),
        )?;
        Ok(Some(fd))
    }

    /// Takes the lock on the directory, waiting a bounded time for another pincat.
    fn lock(&self, dir: &OwnedFd) -> anyhow::Result<()> {
        let deadline = Instant::now() + LOCK_WAIT;
        while !sys::try_lock(dir.as_fd()).context("cannot lock the peers file")? {
            if Instant::now() >= deadline {
                bail!(
                    "the peers file {} stayed locked by another process for {LOCK_WAIT:?}",
                    self.path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn read_in(&self, dir: &OwnedFd) -> anyhow::Result<Peers> {
        let shown = self.path.display();
        let file = match sys::open_read_at(dir.as_fd(), self.file_name()?) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(Peers::default()),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
                "the peers file {shown} is a symbolic link; pincat does not follow it (set {PEERS_ENV} to the real file)"
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read the peers file {shown}")),
        };
        let st = sys::stat_fd(file.as_fd()).with_context(|| format!("cannot stat {shown}"))?;
        if st.kind != sys::Kind::File {
            bail!("the peers file {shown} is not a regular file");
        }
        check_private(&st, &format!("the peers file {shown}"))?;
        let text =
            read_capped(file).with_context(|| format!("cannot read the peers file {shown}"))?;
        Peers::parse(&text).map_err(|e| {
            anyhow!(
                "{shown}:{}: {}; fix or remove that line (pincat does not rewrite a file it cannot parse)",
                e.line,
                e.message
            )
        })
    }

    /// Writes `text` to a temporary file beside the peers file, syncs it,
    /// renames it over the peers file and syncs the directory: a reader
    /// sees the old file or the new one, never a part.
    fn write_in(&self, dir: &OwnedFd, text: &str) -> anyhow::Result<()> {
        let name = self.file_name()?;
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(name);
        tmp.push(".new");
        // A leftover from a crash: this process holds the lock, so no other
        // writer owns it (unlinking a symlink there removes only the link).
        let _ = sys::unlink_at(dir.as_fd(), &tmp, false);
        let mut f = sys::create_new_at(dir.as_fd(), &tmp, 0o600)?;
        let written = (|| -> std::io::Result<()> {
            sys::fchmod(f.as_fd(), 0o600)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            sys::rename_at(dir.as_fd(), &tmp, name)
        })();
        if let Err(e) = written {
            let _ = sys::unlink_at(dir.as_fd(), &tmp, false);
            return Err(e.into());
        }
        sys::fsync(dir.as_fd())?;
        Ok(())
    }
}

/// Refuses what another user owns or group and others can write, as
/// OpenSSH's StrictModes: whoever can change the file decides whom pincat
/// trusts.
fn check_private(st: &sys::Stat, what: &str) -> anyhow::Result<()> {
    if st.uid != sys::euid() && st.uid != 0 {
        bail!(
            "{what} belongs to another user (uid {}); pincat trusts only its own",
            st.uid
        );
    }
    if st.perm & 0o022 != 0 {
        bail!(
            "{what} is writable by group or others (mode {:04o}): anyone who can change it decides whom pincat trusts; run chmod go-w on it",
            st.perm
        );
    }
    Ok(())
}

fn read_capped(file: File) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        bail!("it is larger than {MAX_FILE} bytes");
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("it is not UTF-8 text"))
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
pub fn save_confirmed(file: &Path, name: &str, addr: &str, pin: Pin) -> crate::Result<bool> {
    let f = PeersFile::new(file);
    f.update(|peers| match peers.get(name) {
        Some(p) if p.addr == addr && p.pins.contains(&pin) => Ok(false),
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
            };
            peers.insert(peer, false);
            Ok(true)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Fingerprint;

    fn spki(b: &[u8]) -> Pin {
        Pin::Spki(Fingerprint::of_der(b))
    }

    const TEXT: &str = "# my peers\n\nbox 10.0.0.2:7878 sha256//n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg= # the NAS\n  # indented comment\nlaptop [::1]:9000\n";

    #[test]
    fn parses_and_renders_unchanged() {
        let p = Peers::parse(TEXT).unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["box", "laptop"]);
        assert_eq!(p.get("box").unwrap().pins, vec![spki(b"test")]);
        assert!(p.get("laptop").unwrap().pins.is_empty());
        assert_eq!(p.get("laptop").unwrap().addr, "[::1]:9000");
        assert_eq!(p.render(), TEXT);
        assert!(!p.is_changed());
    }

    #[test]
    fn rewriting_keeps_comments_blank_lines_and_order() {
        let mut p = Peers::parse(TEXT).unwrap();
        assert!(p.set_pins("laptop", vec![spki(b"k")]));
        assert!(!p.insert(
            Peer {
                name: "box".into(),
                addr: "h:1".into(),
                pins: vec![],
            },
            false
        ));
        assert!(p.insert(
            Peer {
                name: "box".into(),
                addr: "nas.lan:7000".into(),
                pins: vec![spki(b"k2")],
            },
            true
        ));
        assert!(p.insert(
            Peer {
                name: "new".into(),
                addr: "192.0.2.1:1".into(),
                pins: vec![],
            },
            false
        ));
        assert!(!p.remove("nope") && p.is_changed());
        let want = format!(
            "# my peers\n\nbox nas.lan:7000 {} # the NAS\n  # indented comment\nlaptop [::1]:9000 {}\nnew 192.0.2.1:1\n",
            spki(b"k2"),
            spki(b"k")
        );
        assert_eq!(p.render(), want);
        assert!(p.remove("box"));
        assert!(!p.render().contains("box"));
        assert!(p.render().starts_with("# my peers\n\n  # indented"));
        // What was written parses back to the same peers.
        let again = Peers::parse(&want).unwrap();
        assert_eq!(again.render(), want);
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (text, line, what) in [
            ("ok h:1\nbad:name h:1\n", 2, "bad peer name"),
            ("# c\n\nonly-name\n", 3, "no HOST:PORT"),
            ("a h:1 abcd\n", 1, "not a SHA-256"),
            ("a h:0\n", 1, "bad address"),
            ("a h\n", 1, "bad address"),
            ("a h:1\na h:2\n", 2, "listed twice"),
            ("a \u{1b}[2J:1\n", 1, "bad address"),
            ("-a h:1\n", 1, "bad peer name"),
        ] {
            let e = Peers::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
            assert!(!e.message.contains('\u{1b}'), "{e}");
        }
    }

    #[test]
    fn names_and_addresses_are_restricted() {
        for good in ["a", "nas-1", "Box.lan_2", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a:b",
            "-a",
            ".a",
            "a b",
            "ä",
            &"x".repeat(65),
            "a\u{202e}",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in [
            "h:1",
            "10.0.0.1:65535",
            "[::1]:80",
            "[fe80::1%eth0]:80",
            "a-b.c_d:7",
        ] {
            assert!(check_addr(good).is_ok(), "{good}");
        }
        for bad in [
            "h", ":1", "h:", "h:65536", "h:+1", "a:b:1", "[]:1", "h#:1", "h :1", "[::1:80",
        ] {
            assert!(check_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_use_records_once_and_fails_closed_on_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg").join("peers");
        let file = PeersFile::new(&path);
        file.update(|p| {
            p.insert(
                Peer {
                    name: "box".into(),
                    addr: "h:1".into(),
                    pins: vec![],
                },
                false,
            );
            Ok(())
        })
        .unwrap();
        let known = KnownPeer {
            name: "box".into(),
            file: path.clone(),
            trust_first_use: true,
        };
        let (a, b) = (spki(b"a"), spki(b"b"));
        assert_eq!(
            record_first_use(&known, "h:1", a).unwrap(),
            FirstUse::Recorded
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("box h:1 {a}\n")
        );
        assert_eq!(
            record_first_use(&known, "h:1", a).unwrap(),
            FirstUse::AlreadyRecorded
        );
        assert_eq!(
            record_first_use(&known, "h:1", b).unwrap(),
            FirstUse::Conflict(vec![a])
        );
        // The entry moved or went away meanwhile: nothing is recorded.
        assert!(record_first_use(&known, "h:2", b).is_err());
        let gone = KnownPeer {
            name: "gone".into(),
            ..known
        };
        assert!(record_first_use(&gone, "h:1", b).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("box h:1 {a}\n")
        );
    }
}
