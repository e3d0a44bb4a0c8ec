//! Safe file creation for received data: invisible temporary files that only
//! get their final name, without ever replacing an existing file, once the
//! content is complete and synced.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// A file being written that has no final name yet.
///
/// On Linux it is an `O_TMPFILE` inode with no name at all, so a crash leaves
/// nothing behind; elsewhere (or where the filesystem lacks `O_TMPFILE`) it is
/// a hidden `.pincat-*.part` file removed on drop.
#[derive(Debug)]
pub struct TempFile {
    /// Open while being written; closed after [`TempFile::finish`] for named files.
    file: Option<File>,
    named: Option<PathBuf>,
    finished: bool,
}

impl TempFile {
    /// Creates a temporary file in `dir`, mode 0600 (anonymous where possible).
    pub fn new_in(dir: &Path) -> io::Result<TempFile> {
        Self::new_in_mode(dir, true)
    }

    /// Creates a temporary file in `dir`, mode 0600; `anonymous` asks for an
    /// `O_TMPFILE` inode, which costs an open descriptor until it is persisted.
    pub fn new_in_mode(dir: &Path, anonymous: bool) -> io::Result<TempFile> {
        #[cfg(target_os = "linux")]
        if anonymous {
            match OpenOptions::new()
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE)
                .open(dir)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        file: Some(file),
                        named: None,
                        finished: false,
                    });
                }
                Err(e) if is_unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".pincat-{}-{nanos:x}-{n}.part", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        file: Some(file),
                        named: Some(path),
                        finished: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("cannot find a free temporary file name"))
    }

    /// Syncs the content; a named file is also closed to free its descriptor.
    /// Idempotent.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        if let Some(f) = &self.file {
            f.sync_all()?;
        }
        if self.named.is_some() {
            self.file = None;
        }
        self.finished = true;
        Ok(())
    }

    /// Syncs the content and gives the file its final name and `mode`,
    /// failing with `AlreadyExists` rather than replacing anything.
    pub fn persist(mut self, target: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.finish()?;
        let perms = fs::Permissions::from_mode(mode & 0o777);
        match (&self.file, &self.named) {
            (Some(f), _) => f.set_permissions(perms)?,
            (None, Some(p)) => fs::set_permissions(p, perms)?,
            (None, None) => return Err(io::Error::other("temporary file already closed")),
        }
        match self.named.take() {
            None => match &self.file {
                Some(f) => link_anonymous(f, target)?,
                None => return Err(io::Error::other("temporary file already closed")),
            },
            Some(tmp) => {
                let res = link_named(&tmp, target);
                let _ = fs::remove_file(&tmp);
                res?
            }
        }
        if let Some(dir) = target.parent() {
            sync_dir(dir);
        }
        Ok(())
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) if !self.finished => f.write(buf),
            _ => Err(io::Error::other("write to a finished temporary file")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.named.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    // EISDIR: a kernel that predates O_TMPFILE; EOPNOTSUPP: the filesystem lacks it.
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

#[cfg(target_os = "linux")]
fn link_anonymous(file: &File, target: &Path) -> io::Result<()> {
    let to = cpath(target)?;
    let proc_path = cpath(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::AlreadyExists || Path::new("/proc/self/fd").exists() {
        return Err(err);
    }
    // No /proc: AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH but is the only other way.
    let empty = CString::default();
    // SAFETY: as above; the fd is open for the duration of the call.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn link_anonymous(_file: &File, _target: &Path) -> io::Result<()> {
    Err(io::Error::other("anonymous temporary files are Linux-only"))
}

fn link_named(tmp: &Path, target: &Path) -> io::Result<()> {
    match fs::hard_link(tmp, target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // Filesystems without hard links: check, then rename (a narrow race).
        Err(_) => {
            if fs::symlink_metadata(target).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(tmp, target)
        }
    }
}

/// Best-effort fsync of a directory so a new name survives a crash.
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Free bytes for unprivileged users on the filesystem holding `dir`.
pub fn available_space(dir: &Path) -> Option<u64> {
    let c = cpath(dir).ok()?;
    // SAFETY: statvfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Writes `bytes` to a new file at `path` with mode 0600; never overwrites and
/// never leaves a partial file under the final name.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        anyhow::bail!("{} already exists; not overwriting it", path.display());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = TempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path, 0o600).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} already exists; not overwriting it", path.display())
        } else {
            anyhow::Error::new(e).context(format!("cannot create {}", path.display()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_never_overwrites_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        fs::write(&target, b"old").unwrap();
        let mut t = TempFile::new_in(dir.path()).unwrap();
        t.write_all(b"new").unwrap();
        let err = t.persist(&target, 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }

    #[test]
    fn dropped_temp_leaves_nothing_and_persisted_has_content() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut t = TempFile::new_in(dir.path()).unwrap();
            t.write_all(b"abandoned").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut t = TempFile::new_in(dir.path()).unwrap();
        t.write_all(b"kept").unwrap();
        t.persist(&dir.path().join("k"), 0o640).unwrap();
        assert_eq!(fs::read(dir.path().join("k")).unwrap(), b"kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn write_new_private_is_0600_and_refuses_existing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.pem");
        write_new_private(&p, b"secret").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_new_private(&p, b"other").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"secret");
    }
}
