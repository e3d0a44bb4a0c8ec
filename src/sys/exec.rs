//! What `serve --exec` needs from the OS: signals to the handler's
//! process group, waiting for its end on a pidfd, and the unnamed files a
//! message or a reply is spooled in.

use super::*;
use rustix::process::{Pid, PidfdFlags, Signal};
use std::process::Child;

/// Sends SIGTERM (or SIGKILL with `kill`) to `child`'s process group (it
/// leads one). It is not reaped until its owner waits for it, so the
/// group cannot be another's.
pub fn signal_child(child: &Child, kill: bool) -> io::Result<()> {
    let sig = if kill { Signal::KILL } else { Signal::TERM };
    Ok(rustix::process::kill_process_group(
        Pid::from_child(child),
        sig,
    )?)
}

/// A descriptor that becomes readable when `child` exits (`None` on
/// kernels without pidfds).
pub fn child_pidfd(child: &Child) -> Option<OwnedFd> {
    rustix::process::pidfd_open(Pid::from_child(child), PidfdFlags::empty()).ok()
}

/// An unnamed file for reading and writing in `dir` (O_TMPFILE, or where
/// the file system lacks it a file created under a fresh name and
/// unlinked at once), mode 0600.
pub fn unnamed_rw_in(dir: BorrowedFd<'_>, fresh: &OsStr) -> io::Result<File> {
    let mode = Mode::from_bits_retain(0o600);
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, c".", flags, mode) {
        Ok(fd) => return Ok(File::from(fd)),
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let name = cstr(fresh)?;
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = rustix::fs::openat(dir, name.as_c_str(), flags, mode)?;
    rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty())?;
    Ok(File::from(fd))
}

/// An unnamed in-memory file (memfd), for a message small enough to be
/// held in memory that a program reads as its standard input.
pub fn memory_file() -> io::Result<File> {
    let flags = rustix::fs::MemfdFlags::CLOEXEC;
    Ok(File::from(rustix::fs::memfd_create(
        c"pincat-message",
        flags,
    )?))
}
