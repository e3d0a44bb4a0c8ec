//! Waiting on descriptors and reading or writing them directly (the
//! relay of `pipe` and `forward`).

use super::*;

/// Waits until any of `fds` is readable (or hung up) or `timeout` passes;
/// returns the indices that are ready.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> Vec<usize> {
    let want: Vec<Interest<'_>> = fds
        .iter()
        .map(|&fd| Interest {
            fd,
            read: true,
            write: false,
        })
        .collect();
    match poll(&want, timeout.min(Duration::from_secs(60))) {
        Ok(Some(ready)) => (0..ready.len()).filter(|&i| ready[i].read).collect(),
        _ => Vec::new(),
    }
}

/// What to wait for on one descriptor in [`poll()`].
#[derive(Debug, Clone, Copy)]
pub struct Interest<'a> {
    /// The descriptor.
    pub fd: BorrowedFd<'a>,
    /// Wake when it can be read (or hung up).
    pub read: bool,
    /// Wake when it can be written.
    pub write: bool,
}

/// What [`poll()`] found on one descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// Readable, hung up, or in error (a read will not block).
    pub read: bool,
    /// Writable, or in error (a write will not block).
    pub write: bool,
}

/// Waits until one of `fds` is ready as asked, or `timeout` passes (`None`
/// when it passed with nothing ready).
pub fn poll(fds: &[Interest<'_>], timeout: Duration) -> io::Result<Option<Vec<Ready>>> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut p: Vec<PollFd<'_>> = fds
        .iter()
        .map(|i| {
            let mut events = PollFlags::empty();
            events.set(PollFlags::IN, i.read);
            events.set(PollFlags::OUT, i.write);
            PollFd::from_borrowed_fd(i.fd, events)
        })
        .collect();
    // Whole milliseconds, as poll(2) takes them.
    let ms = timeout.as_millis().min(i32::MAX as u128) as i64;
    let ts = Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    let n = match rustix::event::poll(&mut p, Some(&ts)) {
        Ok(n) => n,
        Err(Errno::INTR) => return Ok(Some(vec![Ready::default(); fds.len()])),
        Err(e) => return Err(e.into()),
    };
    if n == 0 {
        return Ok(None);
    }
    let bad = PollFlags::ERR | PollFlags::NVAL;
    Ok(Some(
        p.iter()
            .map(|x| Ready {
                read: x.revents().intersects(PollFlags::IN | PollFlags::HUP | bad),
                write: x.revents().intersects(PollFlags::OUT | bad),
            })
            .collect(),
    ))
}

/// One `read(2)` on a descriptor, unbuffered (standard input's own buffer
/// would hide data from [`poll()`]).
pub fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::io::read(fd, buf)?)
}

/// One `write(2)` on a descriptor, unbuffered.
pub fn write_fd(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::io::write(fd, buf)?)
}

/// One `writev` of `bufs` (at most `IOV_MAX` of them are passed).
pub fn write_fd_vectored(fd: BorrowedFd<'_>, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    Ok(rustix::io::writev(fd, &bufs[..bufs.len().min(1024)])?)
}

/// Sets or clears `O_NONBLOCK` (only on descriptors pincat owns: the flag
/// is shared with every process holding the same open file).
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let mut flags = rustix::fs::fcntl_getfl(fd)?;
    flags.set(OFlags::NONBLOCK, on);
    Ok(rustix::fs::fcntl_setfl(fd, flags)?)
}
