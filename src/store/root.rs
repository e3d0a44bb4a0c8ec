//! The output, opened once when the store starts (sweeping what a crash
//! left there), and the directory a transfer's files go into.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64};

use super::fail::io_fail;
use super::walk::fresh_dir;
use super::{Base, Fail, Output, Registry, Store, Transfer, state};
use crate::protocol::RejectCode;
use crate::sys;

impl Store {
    /// Opens the output once. Missing parent directories of `--out` are
    /// created here, before any peer is involved.
    pub fn open(output: &Output) -> anyhow::Result<Store> {
        use anyhow::Context;
        let (base, display) = match output {
            Output::Default | Output::Stdout => (
                Base::Stdout(sys::open_dir(Path::new("."))?),
                PathBuf::from("."),
            ),
            Output::Path(p) => {
                let base = match std::fs::metadata(p) {
                    Ok(m) if m.is_dir() => Base::Dir(
                        sys::open_dir(p).with_context(|| format!("cannot open {}", p.display()))?,
                    ),
                    Ok(m) if is_device(&m) => Base::Device(std::sync::Arc::new(
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(p)
                            .with_context(|| format!("cannot open {}", p.display()))?,
                    )),
                    Ok(_) => Base::NotDir,
                    Err(_) => {
                        let name = p.file_name().ok_or_else(|| {
                            anyhow::anyhow!("--out {} has no file name", p.display())
                        })?;
                        let parent = match p.parent() {
                            Some(d) if !d.as_os_str().is_empty() => d,
                            _ => Path::new("."),
                        };
                        std::fs::create_dir_all(parent)
                            .with_context(|| format!("cannot create {}", parent.display()))?;
                        let fd = sys::open_dir(parent)
                            .with_context(|| format!("cannot open {}", parent.display()))?;
                        Base::Missing(fd, name.to_owned())
                    }
                };
                (base, p.clone())
            }
        };
        let umask = sys::umask();
        let store = Store {
            base,
            display,
            umask,
            kernel_umask: umask,
            walk: Mutex::new(Registry::default()),
            reserved: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            tmpfile: AtomicU8::new(0),
            renames: AtomicU8::new(0),
            times: true,
            outside_links: false,
            allow_update: false,
            update: false,
            resume: true,
            kept_here: None,
            no_terminal: matches!(output, Output::Default),
        };
        if let Base::Dir(fd) | Base::Stdout(fd) = &store.base {
            state::sweep(fd.as_fd());
            super::kept::sweep(fd.as_fd(), false);
        }
        Ok(store)
    }
}

impl Store {
    /// Partial files kept by this process cannot be resumed once it ends
    /// (its admission dies with it): remember them, for
    /// [`Store::forget_kept_here`].
    pub fn kept_for_this_run(mut self, yes: bool) -> Store {
        self.kept_here = yes.then(|| Mutex::new(std::collections::HashSet::new()));
        self
    }

    /// Whether what this process keeps can be resumed after it ends.
    pub fn kept_outlive_process(&self) -> bool {
        self.kept_here.is_none()
    }

    /// Removes the partial files this process kept (see
    /// [`Store::kept_for_this_run`]).
    pub fn forget_kept_here(&self) {
        let (Some(names), Base::Dir(root) | Base::Stdout(root)) = (&self.kept_here, &self.base)
        else {
            return;
        };
        let names = std::mem::take(&mut *super::lock(names));
        if names.is_empty() {
            return;
        }
        let _g = super::lock(&self.walk);
        if let Some(kept) = super::kept::open(root.as_fd(), false) {
            for n in &names {
                let _ = crate::sys::unlink_at(kept.as_fd(), n, false);
            }
        }
        super::kept::tidy(root.as_fd());
    }

    /// Removes kept files past their time (a long-running receiver calls
    /// it now and then).
    pub fn sweep_kept(&self) {
        if let Base::Dir(fd) | Base::Stdout(fd) = &self.base {
            super::kept::sweep(fd.as_fd(), false);
        }
    }

    /// Removes every partial file kept for resumes in the output; how many.
    pub fn clean_kept(&self) -> usize {
        match &self.base {
            Base::Dir(fd) | Base::Stdout(fd) => super::kept::sweep(fd.as_fd(), true),
            _ => 0,
        }
    }

    /// What the store keeps of the sender's tree beyond its bytes.
    pub fn keeping(mut self, keep: Keep) -> Store {
        self.times = keep.times;
        self.outside_links = keep.outside_links;
        self.allow_update = keep.allow_update;
        self.update = keep.update;
        self.resume = keep.resume;
        self
    }
}

/// What a receiver keeps of the sender's tree beyond its bytes and modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// The sender's modification times (`--no-times` turns them off).
    pub times: bool,
    /// Symbolic links that point outside what is sent (absolute, or out
    /// of their top-level entry): refused unless `--allow-outside-links`.
    pub outside_links: bool,
    /// Files that are there and differ may be replaced (`serve
    /// --allow-update`, `get --update`); without it a sender's `--update`
    /// only adds new files and leaves identical ones.
    pub allow_update: bool,
    /// Every offer is compared with what is there, as a sender's
    /// `--update` asks (`get --update`).
    pub update: bool,
    /// What an interrupted files transfer wrote is kept for a resume by
    /// the same peer (`--no-resume` turns it off).
    pub resume: bool,
}

impl Default for Keep {
    fn default() -> Keep {
        Keep {
            times: true,
            outside_links: false,
            allow_update: false,
            update: false,
            resume: true,
        }
    }
}

impl Transfer {
    /// Opens (or, for a missing `--out`, creates) the directory files go into.
    pub(super) fn files_root(&mut self, store: &Store) -> Result<OwnedFd, Fail> {
        let open_fail = |e| io_fail(format!("cannot open {}", store.display.display()), e);
        match &store.base {
            Base::Stdout(fd) | Base::Dir(fd) => sys::dup(fd.as_fd()).map_err(open_fail),
            Base::NotDir => Err((
                RejectCode::Unsupported,
                format!(
                    "the receiver's output {} is a file, not a directory; send a stream instead",
                    store.display.display()
                ),
            )),
            Base::Device(_) => Err((
                RejectCode::Unsupported,
                format!(
                    "the receiver's output {} is a device: it takes a stream, not files",
                    store.display.display()
                ),
            )),
            Base::Missing(dir, name) => match sys::open_dir_at(dir.as_fd(), name) {
                Ok(fd) => Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::mkdir_at(dir.as_fd(), name, 0o777) {
                        // Another transfer made it first: use it, it is not ours.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            return sys::open_dir_at(dir.as_fd(), name).map_err(open_fail);
                        }
                        r => r.map_err(open_fail)?,
                    }
                    let fd = sys::open_dir_at(dir.as_fd(), name).map_err(open_fail)?;
                    fresh_dir(fd.as_fd()).map_err(open_fail)?;
                    self.made_root = true;
                    Ok(fd)
                }
                Err(e) => Err(open_fail(e)),
            },
        }
    }
}

/// A character device or a pipe: written to as it is, never created,
/// replaced or renamed into.
fn is_device(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    m.file_type().is_char_device() || m.file_type().is_fifo()
}
