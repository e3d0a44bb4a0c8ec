//! The peers file on disk, read and rewritten safely: through a directory
//! handle (never a symlink), owner-only, under a lock, replaced atomically.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use super::{PEERS_ENV, Peers};
use crate::sys;

/// Most bytes of a peers file pincat reads.
const MAX_FILE: u64 = 1 << 20;

/// How long to wait for another pincat that holds the peers file's lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

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
