//! Every direct OS call pincat makes, behind safe functions. The receiver's
//! disk access goes through the `*at` functions here, always relative to a
//! directory descriptor. The calls go through `rustix`, except these,
//! hand-written with a SAFETY comment each:
//! - `set_notsent_lowat` (and its test-only reader): rustix has no
//!   TCP_NOTSENT_LOWAT socket option, and no raw setsockopt.
//! - `stat_readable_at`: its callers take a `libc::stat`, which has
//!   private padding fields and no safe constructor, so the stat rustix
//!   returns is copied into a zeroed one.
//! - `reset_on_close`: rustix's SO_LINGER wants a borrowed descriptor, the
//!   callers pass `impl AsRawFd`.
//! - `end_fd`: rustix's `dup2` replaces an `OwnedFd`, the caller keeps
//!   ownership and lends a `BorrowedFd`.
//! - `interface_addrs`: rustix has no getifaddrs; the list is copied out
//!   and freed inside one block.
//! - `tune_allocator`: mallopt is glibc's, not a system call.
//! - `take_env`: `std::env::remove_var` is unsafe in edition 2024.
#![allow(unsafe_code)]

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Flags for opening a directory: never through a symlink, never inherited.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory `path` (a path the user gave: symlinks followed).
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(c.as_c_str(), flags, Mode::empty())?)
}

/// Opens the single directory entry `name` in `dir` as a directory, failing
/// (ELOOP / ENOTDIR) if it is a symbolic link or not a directory.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    Ok(rustix::fs::openat(
        dir,
        c.as_c_str(),
        DIR_FLAGS,
        Mode::empty(),
    )?)
}

/// Opens the relative directory path `rel` below `dir` without following
/// any symbolic link and without leaving `dir` (openat2 with
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS). Kernels without openat2 get a
/// walk of single-component `openat(O_NOFOLLOW | O_DIRECTORY)`.
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    if rel.is_empty() {
        return dup(dir);
    }
    let c = cstr(OsStr::new(rel))?;
    let resolve = rustix::fs::ResolveFlags::BENEATH
        | rustix::fs::ResolveFlags::NO_SYMLINKS
        | rustix::fs::ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(dir, c.as_c_str(), DIR_FLAGS, Mode::empty(), resolve) {
        // No openat2 (old kernel), or a seccomp filter that refuses it.
        Err(Errno::NOSYS | Errno::PERM | Errno::TOOBIG) => walk_dir(dir, rel),
        r => Ok(r?),
    }
}

/// The portable fallback of [`open_dir_beneath`]: one component at a time.
pub fn walk_dir(dir: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    let mut cur = dup(dir)?;
    for comp in rel.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        cur = open_dir_at(cur.as_fd(), OsStr::new(comp))?;
    }
    Ok(cur)
}

/// Duplicates a descriptor (close-on-exec).
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Creates directory `name` in `dir` with `mode`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    Ok(rustix::fs::mkdirat(
        dir,
        c.as_c_str(),
        Mode::from_bits_retain(mode),
    )?)
}

/// An unnamed regular file in `dir` (O_TMPFILE): it vanishes if never linked.
pub fn tmpfile_in(dir: BorrowedFd<'_>, mode: u32) -> io::Result<File> {
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, c".", flags, Mode::from_bits_retain(mode))?;
    Ok(File::from(fd))
}

/// Creates the new regular file `name` in `dir`; fails if anything exists
/// there (a symlink included).
pub fn create_new_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
    let c = cstr(name)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, c.as_c_str(), flags, Mode::from_bits_retain(mode))?;
    Ok(File::from(fd))
}

/// Opens the regular file `name` in `dir` for reading, never through a
/// symbolic link (ELOOP); `None` if it does not exist. O_NONBLOCK: a FIFO
/// planted there opens at once (and is then refused as not a regular file)
/// instead of blocking; reads of a regular file ignore it.
pub fn open_read_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<File>> {
    let c = cstr(name)?;
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, c.as_c_str(), flags, Mode::empty()) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `name` in `dir` as `fstatat` sees it without following a symbolic
/// link, once `faccessat` (effective ids, as `open` checks) says this
/// process may read it: two calls where open, fstat and close are three
/// and allocate an open file. The caller checks the kind.
pub fn stat_readable_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    let st = rustix::fs::statat(dir, c.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
        check_readable(dir, &c)?;
    }
    Ok(to_libc_stat(&st))
}

/// faccessat(R_OK, AT_EACCESS | AT_SYMLINK_NOFOLLOW) as glibc does it.
fn check_readable(dir: BorrowedFd<'_>, c: &CStr) -> io::Result<()> {
    use rustix::fs::Access;
    let flags = AtFlags::EACCESS | AtFlags::SYMLINK_NOFOLLOW;
    match rustix::fs::accessat(dir, c, Access::READ_OK, flags) {
        // Before faccessat2 (Linux 5.8) glibc drops AT_SYMLINK_NOFOLLOW
        // too: the entry was a regular file a moment ago, and the open that
        // reads it later never follows a symbolic link.
        Err(Errno::NOSYS) => Ok(rustix::fs::accessat(
            dir,
            c,
            Access::READ_OK,
            AtFlags::EACCESS,
        )?),
        r => Ok(r?),
    }
}

/// The stat rustix returns, as the `libc::stat` callers read.
fn to_libc_stat(st: &rustix::fs::Stat) -> libc::stat {
    // SAFETY: libc::stat is plain old data (integers and padding): all-zero
    // bytes are a valid value. Its padding fields are private, so there is
    // no safe way to build one.
    let mut out: libc::stat = unsafe { std::mem::zeroed() };
    out.st_dev = st.st_dev as _;
    out.st_ino = st.st_ino as _;
    out.st_nlink = st.st_nlink as _;
    out.st_mode = st.st_mode as _;
    out.st_uid = st.st_uid as _;
    out.st_gid = st.st_gid as _;
    out.st_rdev = st.st_rdev as _;
    out.st_size = st.st_size as _;
    out.st_blksize = st.st_blksize as _;
    out.st_blocks = st.st_blocks as _;
    out.st_atime = st.st_atime as _;
    out.st_atime_nsec = st.st_atime_nsec as _;
    out.st_mtime = st.st_mtime as _;
    out.st_mtime_nsec = st.st_mtime_nsec as _;
    out.st_ctime = st.st_ctime as _;
    out.st_ctime_nsec = st.st_ctime_nsec as _;
    out
}

/// Renames `from` to `to` within `dir`, atomically replacing `to`.
pub fn rename_at(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    Ok(rustix::fs::renameat(dir, f.as_c_str(), dir, t.as_c_str())?)
}

/// Gives an unnamed (O_TMPFILE) file the name `name` in `dir`; never
/// replaces anything (EEXIST).
pub fn link_unnamed(file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let to = cstr(name)?;
    let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|_| io::Error::other("bad descriptor path"))?;
    // AT_SYMLINK_FOLLOW resolves the /proc magic link to the open file
    // itself, not to any path.
    let err = match rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_c_str(),
        dir,
        to.as_c_str(),
        AtFlags::SYMLINK_FOLLOW,
    ) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if err != Errno::NOENT || std::path::Path::new("/proc/self").exists() {
        return Err(err.into());
    }
    // No /proc: AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH) is the other way.
    Ok(rustix::fs::linkat(
        file,
        c"",
        dir,
        to.as_c_str(),
        AtFlags::EMPTY_PATH,
    )?)
}

/// Hard-links `from` in `from_dir` to `to` in `to_dir`, following no
/// symlink and never replacing anything (EEXIST).
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // No flags: a symbolic link `from` is linked itself, never followed.
    Ok(rustix::fs::linkat(
        from_dir,
        f.as_c_str(),
        to_dir,
        t.as_c_str(),
        AtFlags::empty(),
    )?)
}

/// Renames `from` to `to` within or across directories, failing (EEXIST)
/// rather than replacing anything: the fallback where hard links are missing.
pub fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    Ok(rustix::fs::renameat_with(
        from_dir,
        f.as_c_str(),
        to_dir,
        t.as_c_str(),
        rustix::fs::RenameFlags::NOREPLACE,
    )?)
}

/// Removes the entry `name` from `dir` (a directory only if empty).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    Ok(rustix::fs::unlinkat(dir, c.as_c_str(), flags)?)
}

/// What kind of thing a directory entry is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, socket, fifo).
    Other,
}

/// Identity and kind of a file system object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// File type.
    pub kind: Kind,
    /// Device and inode: the object's identity.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Owner.
    pub uid: u32,
    /// Permission bits (with setuid, setgid, sticky).
    pub perm: u32,
    /// Hard links (2 for a directory without subdirectories).
    pub nlink: u64,
}

impl Stat {
    /// Whether both describe the same object (device and inode).
    pub fn same(&self, other: &Stat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// The effective user id.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn to_stat(st: &rustix::fs::Stat) -> Stat {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    Stat {
        kind,
        dev: st.st_dev as _,
        ino: st.st_ino as _,
        uid: st.st_uid as _,
        perm: st.st_mode & 0o7777,
        nlink: st.st_nlink as _,
    }
}

/// Stats `name` in `dir` without following it; `None` if it does not exist.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    let c = cstr(name)?;
    match rustix::fs::statat(dir, c.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(to_stat(&st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Stats an open descriptor.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(to_stat(&rustix::fs::fstat(fd)?))
}

/// Sets the permission bits of an open file or directory.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_bits_retain(mode))?)
}

/// Flushes every dirty inode and name of the file system holding `fd`
/// (reports write-back errors since Linux 5.8).
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::syncfs(fd)?)
}

/// fsync of any descriptor (a directory included).
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fsync(fd)?)
}

/// Sets TCP_NOTSENT_LOWAT: a write waits while `bytes` or more already
/// queued on the socket are not yet sent. Unlike a fixed SO_SNDBUF it
/// does not limit the data in flight, so it never caps a long path.
pub fn set_notsent_lowat(fd: BorrowedFd<'_>, bytes: u32) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: valid fd; the option value is a c_int of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// The TCP_NOTSENT_LOWAT of a socket (0: none set).
#[cfg(test)]
pub fn notsent_lowat(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd; out-pointers to a c_int and its length.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw mut v).cast(),
            &raw mut len,
        )
    })?;
    Ok(u32::try_from(v).unwrap_or(0))
}

/// Free bytes for unprivileged users on the file system holding `fd`.
pub fn available_space(fd: BorrowedFd<'_>) -> Option<u64> {
    let st = rustix::fs::fstatvfs(fd).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether `fd` is on a memory-backed file system (tmpfs, ramfs), where
/// a flush has nothing to write.
pub fn in_memory_fs(fd: BorrowedFd<'_>) -> bool {
    const TMPFS_MAGIC: u32 = 0x0102_1994;
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    match rustix::fs::fstatfs(fd) {
        // The magic numbers are 32 bits wide; f_type's width varies.
        Ok(st) => matches!(st.f_type as u32, TMPFS_MAGIC | RAMFS_MAGIC),
        Err(_) => false,
    }
}

/// Takes an exclusive advisory lock on `fd` without waiting; `false` if
/// another process (or descriptor) holds it.
pub fn try_lock(fd: BorrowedFd<'_>) -> io::Result<bool> {
    use rustix::fs::FlockOperation;
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The names in the directory `fd` (without "." and ".."); an error while
/// reading it is returned, never a shortened list.
pub fn list_dir(fd: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    // A duplicate shares the offset with `fd`: rewind in case it was read
    // before.
    let mut d = rustix::fs::Dir::new(dup(fd)?)?;
    d.rewind();
    let mut out = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let name = ent.file_name();
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// The process umask, read without changing it (from /proc, else by the
/// classic set-and-restore, which is only safe before threads start).
pub fn umask() -> u32 {
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        for line in s.lines() {
            if let Some(v) = line.strip_prefix("Umask:")
                && let Ok(m) = u32::from_str_radix(v.trim(), 8)
            {
                return m;
            }
        }
    }
    let old = rustix::process::umask(Mode::from_bits_retain(0o022));
    rustix::process::umask(old);
    old.bits()
}

/// Raises the soft limit on open descriptors to the hard limit, so a busy
/// receiver is bounded by its own caps, not by a low default.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let rl = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY.
    let below = match (rl.current, rl.maximum) {
        (Some(cur), Some(max)) => cur < max,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        // Failure leaves the old limit.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: rl.maximum,
                maximum: rl.maximum,
            },
        );
    }
}

/// SO_LINGER with a zero timeout: the final close sends a TCP reset.
pub fn reset_on_close(s: &impl AsRawFd) {
    // SAFETY: `s` owns the descriptor and outlives this borrow, which
    // ends with this call.
    let fd = unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) };
    let _ = rustix::net::sockopt::set_socket_linger(fd, Some(Duration::ZERO));
}

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

/// What to wait for on one descriptor in [`poll`].
#[derive(Debug, Clone, Copy)]
pub struct Interest<'a> {
    /// The descriptor.
    pub fd: BorrowedFd<'a>,
    /// Wake when it can be read (or hung up).
    pub read: bool,
    /// Wake when it can be written.
    pub write: bool,
}

/// What [`poll`] found on one descriptor.
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
/// would hide data from [`poll`]).
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

/// The machine's non-loopback interface addresses that are up (IPv6
/// link-local ones left out: they need a zone to be dialed).
pub fn interface_addrs() -> Vec<std::net::IpAddr> {
    use std::net::IpAddr;
    let up = libc::IFF_UP as libc::c_uint;
    let loopback = libc::IFF_LOOPBACK as libc::c_uint;
    let mut out = Vec::new();
    for (flags, ip) in if_addrs() {
        if flags & up == 0 || flags & loopback != 0 {
            continue;
        }
        let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if !ip.is_loopback() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The interface flags and IP address of every entry getifaddrs lists
/// with an IPv4 or IPv6 address, copied out of the C list.
fn if_addrs() -> Vec<(libc::c_uint, std::net::IpAddr)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that stays valid until the
    // freeifaddrs at the end of this block (called once, only on success).
    // Each node is read through its own non-null pointer; a non-null
    // ifa_addr starts with a sockaddr whose family says which larger struct
    // it is (sockaddr_in, sockaddr_in6). Only copies leave the block.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while let Some(ifa) = cur.as_ref() {
            cur = ifa.ifa_next;
            let addr = ifa.ifa_addr;
            if addr.is_null() {
                continue;
            }
            let ip = match libc::c_int::from((*addr).sa_family) {
                libc::AF_INET => {
                    let a = &*addr.cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let a = &*addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            out.push((ifa.ifa_flags, ip));
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Points `fd` at /dev/null: whoever reads what it was (a pipe, a
/// terminal) sees its end, while the descriptor number stays valid for its
/// owner (who closes it later as usual).
pub fn end_fd(fd: BorrowedFd<'_>) {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: `fd` is open for the whole call. The OwnedFd is only the
        // target rustix's dup2 asks for: ManuallyDrop never closes it, so
        // the descriptor stays its owner's to close.
        let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd.as_raw_fd()) });
        // dup2 closes the old open file behind `fd` atomically and leaves
        // `null` ours to drop.
        let _ = rustix::io::dup2(&null, &mut target);
    }
}

/// [`end_fd`] on standard output.
pub fn end_stdout() {
    end_fd(stdio().1);
}

/// Standard output without std's line buffer: each write goes to fd 1 as
/// it is (`writev` for a record's slices), where `std::io::stdout()` would
/// scan binary data for newlines and copy it through an 8 KiB buffer.
/// For the receiver's stream, the only writer of stdout.
pub struct RawStdout;

impl std::io::Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::io::write(rustix::stdio::stdout(), buf)?)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Ok(rustix::io::writev(rustix::stdio::stdout(), bufs)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Standard input and output as borrowed descriptors (they stay open for
/// the life of the process; [`end_stdout`] keeps fd 1 valid).
pub fn stdio() -> (BorrowedFd<'static>, BorrowedFd<'static>) {
    (rustix::stdio::stdin(), rustix::stdio::stdout())
}

/// Keeps freed buffers in the process instead of returning them to the OS
/// after every TLS record: with glibc's defaults the sender spent about a
/// third of its system time in mmap/brk churn and page faults (perf).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator thresholds; the binary calls
    // this first thing, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// The host's name, if it has a printable one.
pub fn hostname() -> Option<String> {
    // gethostname(2) is the nodename of uname(2) on Linux.
    let uts = rustix::system::uname();
    let name = uts.nodename().to_str().ok()?.to_string();
    (!name.is_empty()).then_some(name)
}

/// fsync standard output when it is a regular file (`> out.bin`); pipes
/// and terminals cannot be synced.
pub fn sync_stdout() {
    let fd = rustix::stdio::stdout();
    if matches!(
        stat_fd(fd),
        Ok(Stat {
            kind: Kind::File,
            ..
        })
    ) {
        let _ = fsync(fd);
    }
}

/// Reads the environment variable `var` and removes it from this
/// process's environment, so no program started later inherits it (a
/// secret such as a private key or a code).
///
/// Call it before the process starts threads (the command line does, while
/// it turns flags into options).
#[allow(unsafe_code)]
pub fn take_env(var: &std::ffi::OsStr) -> Option<std::ffi::OsString> {
    let value = std::env::var_os(var)?;
    // SAFETY: the environment is only changed here, from the main thread
    // before any other thread exists (see above), so no other thread reads
    // or writes it at the same time.
    unsafe { std::env::remove_var(var) };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beneath_refuses_symlinks_and_escapes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(t.path().join("a"), t.path().join("link")).unwrap();
        let root = open_dir(t.path()).unwrap();
        assert!(open_dir_beneath(root.as_fd(), "a/b").is_ok());
        assert!(walk_dir(root.as_fd(), "a/b").is_ok());
        for bad in ["link", "link/b", "../x"] {
            assert!(open_dir_beneath(root.as_fd(), bad).is_err(), "{bad}");
            assert!(walk_dir(root.as_fd(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfile_links_without_replacing() {
        use std::io::Write;
        let t = tempfile::tempdir().unwrap();
        let root = open_dir(t.path()).unwrap();
        let mut f = tmpfile_in(root.as_fd(), 0o600).unwrap();
        f.write_all(b"x").unwrap();
        std::fs::write(t.path().join("taken"), b"old").unwrap();
        let e = link_unnamed(&f, root.as_fd(), OsStr::new("taken")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        link_unnamed(&f, root.as_fd(), OsStr::new("new")).unwrap();
        assert_eq!(std::fs::read(t.path().join("new")).unwrap(), b"x");
        assert_eq!(std::fs::read(t.path().join("taken")).unwrap(), b"old");
        let names = list_dir(root.as_fd()).unwrap();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn notsent_lowat_is_set_on_a_tcp_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert_eq!(notsent_lowat(c.as_fd()).unwrap(), 0);
        set_notsent_lowat(c.as_fd(), 256 * 1024).unwrap();
        assert_eq!(notsent_lowat(c.as_fd()).unwrap(), 256 * 1024);
        let f = tempfile::tempfile().unwrap();
        assert!(set_notsent_lowat(f.as_fd(), 1).is_err());
    }

    #[test]
    fn stat_readable_at_matches_std_and_never_follows() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"12345").unwrap();
        std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
        let root = open_dir(t.path()).unwrap();
        let st = stat_readable_at(root.as_fd(), OsStr::new("f")).unwrap();
        let m = std::fs::metadata(t.path().join("f")).unwrap();
        assert_eq!(
            (st.st_dev, st.st_ino, st.st_mode),
            (m.dev(), m.ino(), m.mode())
        );
        assert_eq!(st.st_size, 5);
        assert_eq!((st.st_mtime, st.st_mtime_nsec), (m.mtime(), m.mtime_nsec()));
        assert_eq!((st.st_ctime, st.st_ctime_nsec), (m.ctime(), m.ctime_nsec()));
        let l = stat_readable_at(root.as_fd(), OsStr::new("l")).unwrap();
        assert_eq!(l.st_mode & libc::S_IFMT, libc::S_IFLNK);
        let e = stat_readable_at(root.as_fd(), OsStr::new("gone")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = stat_readable_at(root.as_fd(), OsStr::new("a\0b")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn stat_at_sees_kinds_and_absence() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::os::unix::fs::symlink("d", t.path().join("l")).unwrap();
        let root = open_dir(t.path()).unwrap();
        let kind = |n: &str| {
            stat_at(root.as_fd(), OsStr::new(n))
                .unwrap()
                .map(|s| s.kind)
        };
        assert_eq!(kind("f"), Some(Kind::File));
        assert_eq!(kind("d"), Some(Kind::Dir));
        assert_eq!(kind("l"), Some(Kind::Symlink));
        assert_eq!(kind("gone"), None);
        let d = open_dir_at(root.as_fd(), OsStr::new("d")).unwrap();
        let via_fd = stat_fd(d.as_fd()).unwrap();
        assert!(via_fd.same(&stat_at(root.as_fd(), OsStr::new("d")).unwrap().unwrap()));
        fchmod(d.as_fd(), 0o1750).unwrap();
        assert_eq!(stat_fd(d.as_fd()).unwrap().perm, 0o1750);
        assert_eq!(via_fd.uid, euid());
    }

    #[test]
    fn no_replace_link_rename_and_lock() {
        let t = tempfile::tempdir().unwrap();
        let root = open_dir(t.path()).unwrap();
        let r = root.as_fd();
        create_new_at(r, OsStr::new("a"), 0o600).unwrap();
        create_new_at(r, OsStr::new("b"), 0o600).unwrap();
        let exists = |e: io::Error| e.raw_os_error() == Some(libc::EEXIST);
        assert!(exists(
            create_new_at(r, OsStr::new("a"), 0o600).unwrap_err()
        ));
        assert!(exists(
            link_at(r, OsStr::new("a"), r, OsStr::new("b")).unwrap_err()
        ));
        let e = rename_noreplace(r, OsStr::new("a"), r, OsStr::new("b")).unwrap_err();
        assert!(exists(e));
        rename_noreplace(r, OsStr::new("a"), r, OsStr::new("c")).unwrap();
        assert!(open_read_at(r, OsStr::new("a")).unwrap().is_none());
        mkdir_at(r, OsStr::new("d"), 0o700).unwrap();
        assert!(unlink_at(r, OsStr::new("d"), false).is_err());
        unlink_at(r, OsStr::new("d"), true).unwrap();
        let first = open_dir(t.path()).unwrap();
        let second = open_dir(t.path()).unwrap();
        assert!(try_lock(first.as_fd()).unwrap());
        assert!(!try_lock(second.as_fd()).unwrap());
        let mut names = list_dir(r).unwrap();
        names.sort();
        assert_eq!(names, [c"b".to_owned(), c"c".to_owned()]);
        assert_eq!(list_dir(r).unwrap().len(), 2, "a second listing rewinds");
    }

    #[test]
    fn poll_sees_data_and_end_fd_ends_a_pipe() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let want = [Interest {
            fd: r.as_fd(),
            read: true,
            write: false,
        }];
        assert_eq!(poll(&want, Duration::from_millis(10)).unwrap(), None);
        assert_eq!(write_fd(w.as_fd(), b"hi").unwrap(), 2);
        assert_eq!(poll_readable(&[r.as_fd()], Duration::from_secs(5)), [0]);
        set_nonblocking(r.as_fd(), true).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(read_fd(r.as_fd(), &mut buf).unwrap(), 2);
        let e = read_fd(r.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        set_nonblocking(r.as_fd(), false).unwrap();
        end_fd(w.as_fd());
        // The reader sees the end; the writer's descriptor stays valid.
        assert_eq!(read_fd(r.as_fd(), &mut buf).unwrap(), 0);
        let bufs = [io::IoSlice::new(b"a"), io::IoSlice::new(b"bc")];
        assert_eq!(write_fd_vectored(w.as_fd(), &bufs).unwrap(), 3);
    }

    #[test]
    fn process_facts() {
        let want = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(hostname().as_deref(), Some(want.trim()));
        raise_fd_limit();
        let rl = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(rl.current, rl.maximum);
        assert!(!interface_addrs().iter().any(|ip| ip.is_loopback()));
    }

    #[test]
    fn umask_is_read() {
        assert!(umask() <= 0o777);
    }
}
