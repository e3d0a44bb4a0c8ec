//! Partial files kept for resume: what an interrupted transfer had written
//! waits in `<out>/.pincat-state/kept/`, one file per offered file, named
//! by a keyed hash of the admitted peer's resume secret, the file's name
//! and its size. Another peer computes other names, so it can neither
//! resume onto nor learn anything about someone else's partial file. Both
//! directories are private (this user's, mode 1700, checked on every
//! open, never adopted otherwise), reached only through descriptors; a
//! kept file is taken by renaming it to a name of this process's own
//! first, so two transfers never share one. Kept files are removed after
//! [`KEPT_FOR`] or by `serve --clean`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::state::{STATE_DIR, make_private, private_dir};
use crate::digest::Hash;
use crate::sys::{self, Kind};

/// The subdirectory of the state directory partial files wait in.
pub(super) const KEPT_DIR: &str = "kept";
/// How long a kept partial file waits for its resume.
pub(super) const KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The kept directory under `root`, opened (and with `create`, made with
/// the state directory when missing); `None` when there is none, or what
/// has the name is not this user's private directory.
pub(super) fn open(root: BorrowedFd<'_>, create: bool) -> Option<OwnedFd> {
    // A release of the state directory (rmdir when empty) may race the
    // mkdir of `kept` inside it: try again.
    for _ in 0..4 {
        let state = match private_at(root, OsStr::new(STATE_DIR)) {
            Some(fd) => fd,
            None if create => match make_private(root, OsStr::new(STATE_DIR)) {
                Ok(Some(fd)) => fd,
                Ok(None) => continue,
                Err(_) => return None,
            },
            None => return None,
        };
        if let Some(kept) = private_at(state.as_fd(), OsStr::new(KEPT_DIR)) {
            return Some(kept);
        }
        if !create {
            return None;
        }
        match make_private(state.as_fd(), OsStr::new(KEPT_DIR)) {
            Ok(Some(fd)) => return Some(fd),
            Ok(None) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// `name` in `dir` when it is this user's private directory.
fn private_at(dir: BorrowedFd<'_>, name: &OsStr) -> Option<OwnedFd> {
    let fd = sys::open_dir_at(dir, name).ok()?;
    private_dir(fd.as_fd()).then_some(fd)
}

/// The resume secret of a peer admitted by its key (an allow list, a CA,
/// or a pinned listener): kept files are named by it.
pub fn secret_of_key(fp: &crate::fingerprint::Fingerprint) -> Hash {
    let mut h = Sha256::new();
    h.update(b"pincat resume key v1\0");
    h.update(fp.as_bytes());
    h.finalize().into()
}

/// The resume secret of a peer admitted by the code of the listener with
/// certificate `listener`: whoever proves that code is that peer.
pub fn secret_of_code(listener: &crate::fingerprint::Fingerprint, code: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(b"pincat resume code v1\0");
    h.update(listener.as_bytes());
    h.update(code.as_bytes());
    h.finalize().into()
}

/// The kept name of an offered file for a peer's resume secret.
pub(super) fn name(secret: &Hash, file: &str, size: u64) -> OsString {
    let mut h = Sha256::new();
    h.update(b"pincat kept v1\0");
    h.update(secret);
    h.update(size.to_be_bytes());
    h.update(file.as_bytes());
    OsString::from(hex::encode(h.finalize()))
}

/// A name of this process's own in the kept directory, for a file taken
/// or about to be kept.
pub(super) fn own_name() -> OsString {
    unique_name("c")
}

/// A name for a file an undone `--update` could not put back: kept for
/// 7 days like a partial file, never taken for one.
pub(super) fn rescue_name() -> OsString {
    unique_name("old")
}

/// `PREFIX-<pid>-<n>`: no other name this or any live process makes.
fn unique_name(prefix: &str) -> OsString {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!("{prefix}-{}-{n}", std::process::id()))
}

/// Takes the kept file `name`: renamed to a name of this process's own
/// (so no other transfer gets it), then opened to read and write. Only a
/// regular file of this user's with one link is taken.
pub(super) fn take(kept: BorrowedFd<'_>, name: &OsStr) -> Option<(OsString, File)> {
    let own = own_name();
    sys::rename_noreplace(kept, name, kept, &own).ok()?;
    let file = match sys::open_rw_at(kept, &own) {
        Ok(Some(f)) => f,
        _ => {
            let _ = sys::unlink_at(kept, &own, false);
            return None;
        }
    };
    match sys::stat_fd(file.as_fd()) {
        Ok(st) if st.kind == Kind::File && st.uid == sys::euid() && st.nlink == 1 => {
            Some((own, file))
        }
        _ => {
            let _ = sys::unlink_at(kept, &own, false);
            None
        }
    }
}

/// Keeps the open file `f` (unnamed, or named elsewhere) as `name`,
/// replacing an older partial file of that name.
pub(super) fn keep_open(kept: BorrowedFd<'_>, f: &File, name: &OsStr) -> io::Result<()> {
    let own = own_name();
    sys::link_unnamed(f, kept, &own)?;
    sys::rename_between(kept, &own, kept, name).inspect_err(|_| {
        let _ = sys::unlink_at(kept, &own, false);
    })
}

/// Removes the kept directory if empty, then the state directory if
/// empty (each only when it is this user's private directory).
pub(super) fn tidy(root: BorrowedFd<'_>) {
    let Some(state) = private_at(root, OsStr::new(STATE_DIR)) else {
        return;
    };
    if private_at(state.as_fd(), OsStr::new(KEPT_DIR)).is_some()
        && sys::unlink_at(state.as_fd(), OsStr::new(KEPT_DIR), true).is_ok()
    {
        let same = matches!(
            (sys::stat_at(root, OsStr::new(STATE_DIR)), sys::stat_fd(state.as_fd())),
            (Ok(Some(a)), Ok(b)) if a.same(&b)
        );
        if same {
            let _ = sys::unlink_at(root, OsStr::new(STATE_DIR), true);
        }
    }
}

/// Removes kept files older than [`KEPT_FOR`] (all of them with
/// `everything`) and names taken by processes that are gone; how many.
pub(super) fn sweep(root: BorrowedFd<'_>, everything: bool) -> usize {
    let Some(kept) = open(root, false) else {
        return 0;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let me = sys::euid();
    let mut removed = 0;
    for n in sys::list_dir(kept.as_fd()).unwrap_or_default() {
        let n = OsStr::from_bytes(n.as_bytes());
        let Ok(Some(st)) = sys::stat_at(kept.as_fd(), n) else {
            continue;
        };
        if st.uid != me || st.kind == Kind::Dir {
            continue;
        }
        let old = now.saturating_sub(st.ctime) > KEPT_FOR.as_secs() as i64;
        let orphan = taken_by_gone(n.as_bytes());
        if (everything || old || orphan) && sys::unlink_at(kept.as_fd(), n, false).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether `n` is a name a process took (`c-<pid>-<n>`) that is gone.
fn taken_by_gone(n: &[u8]) -> bool {
    let Some(rest) = n.strip_prefix(b"c-") else {
        return false;
    };
    let pid = rest.split(|&b| b == b'-').next().unwrap_or_default();
    let Ok(pid) = std::str::from_utf8(pid).unwrap_or("").parse::<u32>() else {
        return false;
    };
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}
