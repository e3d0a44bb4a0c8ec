//! The receiver's private state directory under the output, where staged
//! transfers wait: made by the store and then used only through the
//! descriptor of the very directory it made, never adopted by name. A
//! foreign entry of the well-known name (a local user's directory, link or
//! file, or another receiver's state) makes the store use a fresh,
//! unpredictable name beside it instead. Also the start-up sweep of what a
//! crash left in state directories.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::commit::staged::{STAGED_DEPTH, remove_staged};
use super::walk::fresh_dir;
use crate::sys::{self, Kind};

/// The well-known name of the state directory under the output; when it is
/// taken, a state directory is named `.pincat-state-` and 16 random
/// lowercase hex digits.
pub const STATE_DIR: &str = ".pincat-state";

/// The mode a state or staging directory is made with: private, and
/// sticky, which no received directory ever is (received modes keep only
/// the 0o777 bits). A received directory renamed to a state name, with
/// staging-shaped directories inside, is so never taken for one.
const STATE_MODE: u32 = 0o1700;

/// The bits that tell a directory made with [`STATE_MODE`]: sticky, no
/// group or other permission, nor setuid. The owner's own bits are as the
/// umask left them, and a setgid parent passes its setgid bit on.
fn is_state_mode(perm: u32) -> bool {
    perm & !(0o2000 | 0o700) == 0o1000
}

/// How many names one store tries for a new state directory: the
/// well-known one, then random ones.
const NAME_TRIES: usize = 8;

/// A state directory the store made, held open while staged transfers
/// use it.
pub(super) struct StateDir {
    /// Identity (device, inode) of the output directory it is in.
    pub(super) root: (u64, u64),
    /// Its own identity.
    id: (u64, u64),
    name: OsString,
    fd: OwnedFd,
    /// Live staged transfers with a staging directory in it.
    users: u32,
}

/// Whether a received top-level name is one a state directory may have:
/// the well-known name, or it and a dash and anything.
pub(super) fn reserved_top(top: &str) -> bool {
    top.strip_prefix(STATE_DIR)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

/// Whether `n` has the shape of a fallback state directory's name.
fn fallback_name(n: &[u8]) -> bool {
    let hex = |h: &[u8]| h.len() == 16 && h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    n.strip_prefix(STATE_DIR.as_bytes())
        .and_then(|r| r.strip_prefix(b"-"))
        .is_some_and(hex)
}

/// A fresh fallback name: a local user cannot plant it ahead of time.
fn random_name() -> io::Result<OsString> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| io::Error::other("the system has no random numbers to give"))?;
    Ok(format!("{STATE_DIR}-{}", hex::encode(b)).into())
}

/// A directory this user owns, made with the state mode.
pub(super) fn private_dir(fd: BorrowedFd<'_>) -> bool {
    matches!(sys::stat_fd(fd), Ok(st) if st.kind == Kind::Dir && st.uid == sys::euid() && is_state_mode(st.perm))
}

/// Makes `name` in `dir` a new private directory and returns it open; None
/// if `name` exists. What the name opens is taken only if it is exactly
/// what this mkdir made: this user's, empty, without subdirectories, with
/// the state mode as created (never set afterwards). A local user who
/// swapped the name between the mkdir and the open gets ELOOP (ENOTDIR for
/// a file), and nothing of theirs, nor the directory made, is touched.
pub(super) fn make_private(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<OwnedFd>> {
    match sys::mkdir_at(dir, name, STATE_MODE) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
        r => r?,
    }
    after_mkdir(dir, name);
    let fd = sys::open_dir_at(dir, name)?;
    if let Err(e) = fresh_dir(fd.as_fd()) {
        // Removed meanwhile (another receiver's start-up sweep takes an
        // unlocked staging directory): start over, like ENOENT.
        return match sys::stat_fd(fd.as_fd()) {
            Ok(st) if st.nlink == 0 => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            _ => Err(e),
        };
    }
    if !private_dir(fd.as_fd()) {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(Some(fd))
}

/// Where a local user's rename lands, between a mkdir of the store and the
/// open of its name: tests put their attacker here.
#[cfg(test)]
fn after_mkdir(dir: BorrowedFd<'_>, name: &OsStr) {
    super::tests::AFTER_MKDIR.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f(dir, name);
        }
    });
}

#[cfg(not(test))]
fn after_mkdir(_: BorrowedFd<'_>, _: &OsStr) {}

impl StateDir {
    /// Makes a new state directory in `root`: the well-known name if it is
    /// free, else a fresh random one beside it (same file system, so commits
    /// stay links and renames). Whatever holds a name already, or was
    /// swapped in for one, is left as it is.
    pub(super) fn make(root: BorrowedFd<'_>) -> io::Result<StateDir> {
        let here = sys::stat_fd(root)?;
        let mut last = io::Error::from_raw_os_error(libc::EEXIST);
        for i in 0..NAME_TRIES {
            let name = match i {
                0 => OsString::from(STATE_DIR),
                _ => random_name()?,
            };
            let fd = match make_private(root, &name) {
                Ok(Some(fd)) => fd,
                Ok(None) => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT)
                    ) =>
                {
                    last = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let st = sys::stat_fd(fd.as_fd())?;
            return Ok(StateDir {
                root: (here.dev, here.ino),
                id: (st.dev, st.ino),
                name,
                fd,
                users: 0,
            });
        }
        Err(last)
    }

    /// Makes a staging directory in this state directory, locked, and
    /// counts it; the state's descriptor (a copy) with the staging one.
    /// Fails with ENOENT or EEXIST when another try may work.
    pub(super) fn stage(&mut self, seq: &AtomicU64) -> io::Result<(OwnedFd, OwnedFd, OsString)> {
        let state = sys::dup(self.fd.as_fd())?;
        let (sub, name) = make_staging(state.as_fd(), seq)?;
        self.users += 1;
        Ok((state, sub, name))
    }

    /// Whether it is no longer in the file system (another receiver's
    /// start-up sweep removed it while it was empty).
    pub(super) fn gone(&self) -> bool {
        matches!(sys::stat_fd(self.fd.as_fd()), Ok(st) if st.nlink == 0)
    }

    /// Whether no staged transfer uses it.
    pub(super) fn idle(&self) -> bool {
        self.users == 0
    }

    /// One staged transfer fewer; true when none is left.
    fn left(&mut self) -> bool {
        self.users = self.users.saturating_sub(1);
        self.users == 0
    }

    /// Removes it from `root` if empty and its name there still is this
    /// very directory.
    pub(super) fn remove(self, root: BorrowedFd<'_>) {
        let ours =
            matches!(sys::stat_at(root, &self.name), Ok(Some(s)) if (s.dev, s.ino) == self.id);
        if ours {
            let _ = sys::unlink_at(root, &self.name, true);
        }
    }
}

/// One staged transfer of the state directory `state` ended; the last one
/// removes it from `root`.
pub(super) fn release(states: &mut Vec<StateDir>, state: BorrowedFd<'_>, root: BorrowedFd<'_>) {
    let Ok(st) = sys::stat_fd(state) else {
        return;
    };
    let Some(i) = states.iter().position(|s| s.id == (st.dev, st.ino)) else {
        return;
    };
    if states[i].left() {
        states.swap_remove(i).remove(root);
    }
}

/// `<pid>-<n>`, the only names a receiver gives its staging directories.
fn staging_name(n: &[u8]) -> bool {
    let mut parts = n.split(|&b| b == b'-');
    let digits =
        |p: Option<&[u8]>| p.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// Creates `<pid>-<n>/` in the state directory and locks it; fails with
/// ENOENT if a sweep removed it (or the state directory) on the way.
fn make_staging(state: BorrowedFd<'_>, seq: &AtomicU64) -> io::Result<(OwnedFd, OsString)> {
    let name = OsString::from(format!(
        "{}-{}",
        std::process::id(),
        seq.fetch_add(1, Ordering::Relaxed)
    ));
    let Some(sub) = make_private(state, &name)? else {
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    };
    // Held for the transfer's life: a sweep skips locked directories. If a
    // sweep got it first, or removed it before we locked it, start over.
    let mine = sys::try_lock(sub.as_fd())?
        && matches!(
            (sys::stat_at(state, &name), sys::stat_fd(sub.as_fd())),
            (Ok(Some(a)), Ok(b)) if a.same(&b)
        );
    if !mine {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    Ok((sub, name))
}

/// Removes staged transfers that no live process holds (left by a crash)
/// from the state directories in `root`: the well-known one and any with a
/// fallback name.
pub(super) fn sweep(root: BorrowedFd<'_>) {
    sweep_one(root, OsStr::new(STATE_DIR));
    for name in sys::list_dir(root).unwrap_or_default() {
        if fallback_name(name.as_bytes()) {
            sweep_one(root, OsStr::from_bytes(name.as_bytes()));
        }
    }
}

fn sweep_one(root: BorrowedFd<'_>, state_name: &OsStr) {
    let Ok(state) = sys::open_dir_at(root, state_name) else {
        return;
    };
    // Only what a receiver made: a local user could rename any directory
    // to a state name to have its files deleted.
    if !private_dir(state.as_fd()) {
        return;
    }
    let mut swept = false;
    for name in sys::list_dir(state.as_fd()).unwrap_or_default() {
        let name = OsStr::from_bytes(name.as_bytes());
        if !staging_name(name.as_bytes()) {
            continue;
        }
        let Ok(sub) = sys::open_dir_at(state.as_fd(), name) else {
            continue;
        };
        if !private_dir(sub.as_fd()) || !matches!(sys::try_lock(sub.as_fd()), Ok(true)) {
            continue;
        }
        remove_staged(sub.as_fd(), STAGED_DEPTH);
        swept |= sys::unlink_at(state.as_fd(), name, true).is_ok();
    }
    // Only after clearing a crash's leftovers: an empty state directory may
    // be one a live receiver just made and is about to use.
    let same = matches!(
        (sys::stat_at(root, state_name), sys::stat_fd(state.as_fd())),
        (Ok(Some(a)), Ok(b)) if a.same(&b)
    );
    if swept && same {
        let _ = sys::unlink_at(root, state_name, true);
    }
}
