//! Every direct OS call pincat makes, each behind a safe function with a
//! SAFETY comment. The receiver's disk access goes through the `*at`
//! functions here, always relative to a directory descriptor.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
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
const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Opens the directory `path` (a path the user gave: symlinks followed).
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: `c` is a valid NUL-terminated string; the returned fd is owned.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the single directory entry `name` in `dir` as a directory, failing
/// (ELOOP / ENOTDIR) if it is a symbolic link or not a directory.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid dirfd and C string; the returned fd is owned.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), DIR_FLAGS) })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the relative directory path `rel` below `dir` without following
/// any symbolic link and without leaving `dir` (openat2 with
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS). Kernels without openat2 get a
/// walk of single-component `openat(O_NOFOLLOW | O_DIRECTORY)`.
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    if rel.is_empty() {
        return dup(dir);
    }
    match openat2_dir(dir, rel) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EPERM | libc::E2BIG)
            ) =>
        {
            walk_dir(dir, rel)
        }
        r => r,
    }
}

fn openat2_dir(dir: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    let c = cstr(OsStr::new(rel))?;
    // SAFETY: open_how is plain old data; zeroed is valid (and required for
    // fields this code does not set).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = DIR_FLAGS as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid dirfd, C string and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
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
    // SAFETY: valid dirfd and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// An unnamed regular file in `dir` (O_TMPFILE): it vanishes if never linked.
pub fn tmpfile_in(dir: BorrowedFd<'_>, mode: u32) -> io::Result<File> {
    let flags = libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC;
    // SAFETY: valid dirfd and a static C string.
    let fd = check(unsafe {
        libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags, mode as libc::c_uint)
    })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Creates the new regular file `name` in `dir`; fails if anything exists
/// there (a symlink included).
pub fn create_new_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
    let c = cstr(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid dirfd and C string.
    let fd =
        check(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens the regular file `name` in `dir` for reading, never through a
/// symbolic link (ELOOP); `None` if it does not exist. O_NONBLOCK: a FIFO
/// planted there opens at once (and is then refused as not a regular file)
/// instead of blocking; reads of a regular file ignore it.
pub fn open_read_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<File>> {
    let c = cstr(name)?;
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: valid dirfd and C string.
    let r = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: `r` was just opened and is owned by nobody else.
    Ok(Some(unsafe { File::from_raw_fd(r) }))
}

/// `name` in `dir` as `fstatat` sees it without following a symbolic
/// link, once `faccessat` (effective ids, as `open` checks) says this
/// process may read it: two calls where open, fstat and close are three
/// and allocate an open file. The caller checks the kind.
pub fn stat_readable_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    // SAFETY: stat is plain old data; zeroed is a valid initial value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid dirfd, C string and out-pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        let flags = libc::AT_EACCESS | libc::AT_SYMLINK_NOFOLLOW;
        // SAFETY: valid dirfd and C string.
        check(unsafe { libc::faccessat(dir.as_raw_fd(), c.as_ptr(), libc::R_OK, flags) })?;
    }
    Ok(st)
}

/// Renames `from` to `to` within `dir`, atomically replacing `to`.
pub fn rename_at(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: valid dirfd and C strings.
    check(unsafe { libc::renameat(dir.as_raw_fd(), f.as_ptr(), dir.as_raw_fd(), t.as_ptr()) })?;
    Ok(())
}

/// Gives an unnamed (O_TMPFILE) file the name `name` in `dir`; never
/// replaces anything (EEXIST).
pub fn link_unnamed(file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let to = cstr(name)?;
    let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|_| io::Error::other("bad descriptor path"))?;
    // SAFETY: valid C strings and dirfd; AT_SYMLINK_FOLLOW resolves the
    // /proc magic link to the open file itself, not to any path.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOENT) || std::path::Path::new("/proc/self").exists() {
        return Err(err);
    }
    // No /proc: AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH) is the other way.
    // SAFETY: valid fds; the empty C string is static.
    check(unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })?;
    Ok(())
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
    // SAFETY: valid dirfds and C strings; flags 0 follows no symlink.
    check(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
            0,
        )
    })?;
    Ok(())
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
    // SAFETY: valid dirfds and C strings.
    check(unsafe {
        libc::renameat2(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })?;
    Ok(())
}

/// Removes the entry `name` from `dir` (a directory only if empty).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid dirfd and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    Ok(())
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
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn to_stat(st: &libc::stat) -> Stat {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    };
    Stat {
        kind,
        dev: st.st_dev,
        ino: st.st_ino,
        uid: st.st_uid,
        perm: st.st_mode & 0o7777,
        nlink: st.st_nlink,
    }
}

/// Stats `name` in `dir` without following it; `None` if it does not exist.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    let c = cstr(name)?;
    // SAFETY: stat is plain old data; zeroed is a valid initial value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid dirfd, C string and out-pointer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(Some(to_stat(&st)));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Stats an open descriptor.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    // SAFETY: stat is plain old data; zeroed is a valid initial value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(to_stat(&st))
}

/// Sets the permission bits of an open file or directory.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(())
}

/// Flushes every dirty inode and name of the file system holding `fd`
/// (reports write-back errors since Linux 5.8).
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })?;
    Ok(())
}

/// fsync of any descriptor (a directory included).
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fsync(fd.as_raw_fd()) })?;
    Ok(())
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
    // SAFETY: statvfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    if unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Whether `fd` is on a memory-backed file system (tmpfs, ramfs), where
/// a flush has nothing to write.
pub fn in_memory_fs(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: statfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    const RAMFS_MAGIC: libc::__fsword_t = 0x8584_58f6;
    matches!(st.f_type, libc::TMPFS_MAGIC | RAMFS_MAGIC)
}

/// Takes an exclusive advisory lock on `fd` without waiting; `false` if
/// another process (or descriptor) holds it.
pub fn try_lock(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: valid fd.
    let r = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// The names in the directory `fd` (without "." and "..").
pub fn list_dir(fd: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let own = dup(fd)?;
    // SAFETY: `own` is a valid directory fd whose ownership passes to the
    // DIR stream (closed by closedir below).
    let d = unsafe { libc::fdopendir(own.as_raw_fd()) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(own);
    // SAFETY: `d` is a valid DIR stream; rewind in case the fd was read before.
    unsafe { libc::rewinddir(d) };
    let mut out = Vec::new();
    loop {
        // SAFETY: `d` is valid; readdir returns NULL at the end.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated array inside the valid entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
    // SAFETY: `d` is valid and closed once.
    unsafe { libc::closedir(d) };
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
    // SAFETY: umask cannot fail; the old value is restored at once.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old as u32
    }
}

/// Raises the soft limit on open descriptors to the hard limit, so a busy
/// receiver is bounded by its own caps, not by a low default.
pub fn raise_fd_limit() {
    // SAFETY: rlimit is plain old data.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid resource and out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return;
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: valid resource and pointer; failure leaves the old limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    }
}

/// SO_LINGER with a zero timeout: the final close sends a TCP reset.
pub fn reset_on_close(s: &impl AsRawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
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
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|i| libc::pollfd {
            fd: i.fd.as_raw_fd(),
            events: (if i.read { libc::POLLIN } else { 0 })
                | (if i.write { libc::POLLOUT } else { 0 }),
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `p` is a valid array of pollfd of the length passed.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Some(vec![Ready::default(); fds.len()]));
        }
        return Err(e);
    }
    if n == 0 {
        return Ok(None);
    }
    let bad = libc::POLLERR | libc::POLLNVAL;
    Ok(Some(
        p.iter()
            .map(|x| Ready {
                read: x.revents & (libc::POLLIN | libc::POLLHUP | bad) != 0,
                write: x.revents & (libc::POLLOUT | bad) != 0,
            })
            .collect(),
    ))
}

/// One `read(2)` on a descriptor, unbuffered (standard input's own buffer
/// would hide data from [`poll`]).
pub fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `write(2)` on a descriptor, unbuffered.
pub fn write_fd(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `writev` of `bufs` (at most `IOV_MAX` of them are passed).
pub fn write_fd_vectored(fd: BorrowedFd<'_>, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    let n = bufs.len().min(1024) as libc::c_int;
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix, and
    // each one is valid for reads of its length for the whole call.
    let n = unsafe { libc::writev(fd.as_raw_fd(), bufs.as_ptr().cast(), n) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sets or clears `O_NONBLOCK` (only on descriptors pincat owns: the flag
/// is shared with every process holding the same open file).
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: valid fd; F_GETFL takes no argument.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: valid fd and flags.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

/// The machine's non-loopback interface addresses that are up (IPv6
/// link-local ones left out: they need a zone to be dialed).
pub fn interface_addrs() -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: valid out-pointer; freed with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        let loopback = ifa.ifa_flags & (libc::IFF_LOOPBACK as libc::c_uint) != 0;
        if ifa.ifa_addr.is_null() || !up || loopback {
            continue;
        }
        // SAFETY: ifa_addr is non-null and starts with a sockaddr; its
        // family says which larger struct it is.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as libc::c_int;
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if !ip.is_loopback() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Points `fd` at /dev/null: whoever reads what it was (a pipe, a
/// terminal) sees its end, while the descriptor number stays valid for its
/// owner (who closes it later as usual).
pub fn end_fd(fd: BorrowedFd<'_>) {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: both are valid descriptors; dup2 closes the old open file
        // behind `fd` atomically and leaves `null` ours to drop.
        unsafe { libc::dup2(null.as_raw_fd(), fd.as_raw_fd()) };
    }
}

/// [`end_fd`] on standard output.
pub fn end_stdout() {
    end_fd(stdio().1);
}

/// Standard input and output as borrowed descriptors (they stay open for
/// the life of the process; [`end_stdout`] keeps fd 1 valid).
pub fn stdio() -> (BorrowedFd<'static>, BorrowedFd<'static>) {
    // SAFETY: fds 0 and 1 are open for the whole process (a process started
    // without them gets its first files there, which is still a valid fd).
    unsafe { (BorrowedFd::borrow_raw(0), BorrowedFd::borrow_raw(1)) }
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
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.to_string();
    (!name.is_empty()).then_some(name)
}

/// fsync standard output when it is a regular file (`> out.bin`); pipes
/// and terminals cannot be synced.
pub fn sync_stdout() {
    // SAFETY: fd 1 stays open for the life of the process; the borrow does
    // not outlive this call.
    let fd = unsafe { BorrowedFd::borrow_raw(1) };
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
    fn umask_is_read() {
        assert!(umask() <= 0o777);
    }
}
