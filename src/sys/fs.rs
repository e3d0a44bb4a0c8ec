//! The receiver's disk access: opening, creating, linking, renaming and
//! removing entries relative to a directory descriptor, never through a
//! symbolic link; stat, sync, space, locks and listings.

use super::*;

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

/// Opens the existing regular file `name` in `dir` to read and write,
/// never through a symbolic link; `None` if it does not exist.
pub fn open_rw_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<File>> {
    let c = cstr(name)?;
    let flags =
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
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
    // No flags: a symbolic link `from` is linked itself, never followed.
    two_names(from, to, |f, t| {
        rustix::fs::linkat(from_dir, f, to_dir, t, AtFlags::empty())
    })
}

/// Renames `from` to `to` within or across directories, failing (EEXIST)
/// rather than replacing anything: the fallback where hard links are missing.
pub fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    let noreplace = rustix::fs::RenameFlags::NOREPLACE;
    two_names(from, to, |f, t| {
        rustix::fs::renameat_with(from_dir, f, to_dir, t, noreplace)
    })
}

/// Renames `from` in `from_dir` to `to` in `to_dir`, atomically
/// replacing whatever file `to` names (never following a link).
pub fn rename_between(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    two_names(from, to, |f, t| {
        rustix::fs::renameat(from_dir, f, to_dir, t)
    })
}

/// Swaps the two names atomically: each then names what the other did.
pub fn rename_exchange(
    a_dir: BorrowedFd<'_>,
    a: &OsStr,
    b_dir: BorrowedFd<'_>,
    b: &OsStr,
) -> io::Result<()> {
    let exchange = rustix::fs::RenameFlags::EXCHANGE;
    two_names(a, b, |f, t| {
        rustix::fs::renameat_with(a_dir, f, b_dir, t, exchange)
    })
}

/// Runs `op` on two names made C strings.
fn two_names(
    a: &OsStr,
    b: &OsStr,
    op: impl FnOnce(&CStr, &CStr) -> rustix::io::Result<()>,
) -> io::Result<()> {
    let (a, b) = (cstr(a)?, cstr(b)?);
    Ok(op(&a, &b)?)
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
    /// Size in bytes.
    pub size: u64,
    /// Last modification: seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Last status change, in seconds (renames and links move it).
    pub ctime: i64,
}

impl Stat {
    /// Whether both describe the same object (device and inode).
    pub fn same(&self, other: &Stat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
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
        size: st.st_size as _,
        mtime: (st.st_mtime as _, st.st_mtime_nsec as _),
        ctime: st.st_ctime as _,
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

/// Sets the modification time of the file or directory `fd` (its access
/// time is left as it is).
pub fn set_mtime(fd: BorrowedFd<'_>, secs: i64, nanos: u32) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &mtime_only(secs, nanos))?)
}

/// Timestamps that set the modification time and leave the access time.
fn mtime_only(secs: i64, nanos: u32) -> rustix::fs::Timestamps {
    use rustix::fs::{Timespec, UTIME_OMIT};
    rustix::fs::Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: secs,
            tv_nsec: nanos.into(),
        },
    }
}

/// Makes the symbolic link `name` in `dir` holding `target`; fails (EEXIST)
/// if anything is there.
pub fn symlink_at(target: &str, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let t = cstr(OsStr::new(target))?;
    let n = cstr(name)?;
    Ok(rustix::fs::symlinkat(t.as_c_str(), dir, n.as_c_str())?)
}

/// Sets the modification time of the symbolic link `name` in `dir` itself
/// (never what it points to).
pub fn set_link_mtime(dir: BorrowedFd<'_>, name: &OsStr, secs: i64, nanos: u32) -> io::Result<()> {
    let n = cstr(name)?;
    let times = mtime_only(secs, nanos);
    Ok(rustix::fs::utimensat(
        dir,
        n.as_c_str(),
        &times,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Takes an exclusive `flock` on `fd`, waiting for another holder.
pub fn lock(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::flock(
        fd,
        rustix::fs::FlockOperation::LockExclusive,
    )?)
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
