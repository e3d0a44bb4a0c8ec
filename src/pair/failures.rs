//! A fixed code's failed attempts, kept across restarts so that a
//! supervisor restarting the listener does not reset its budget. The count
//! lives in the user's state directory, which must be this user's and
//! writable by no one else; the file is named by a keyed hash of the code
//! (the key is kept beside it, readable by this user only), never followed
//! through a symbolic link, and updated under a lock, so that two listeners
//! with the same code add up their failures.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use super::Code;
use crate::error::Result;
use crate::sys;

const KEY_LEN: usize = 32;

/// Where one fixed code's failures are counted.
pub(super) struct FailureFile {
    path: PathBuf,
    dir: PathBuf,
}

impl FailureFile {
    /// The count file for `code` in `dir` (made, mode 0700, if missing).
    pub(super) fn open(dir: &Path, code: &Code) -> Result<FailureFile> {
        private_dir(dir)?;
        let key = key(dir).map_err(|e| {
            anyhow!(
                "cannot keep the code's failed attempts in {}: {e}",
                dir.display()
            )
        })?;
        Ok(FailureFile {
            path: dir.join(file_name(&key, code)),
            dir: dir.to_path_buf(),
        })
    }

    /// The directory, as shown to the user (the file's name is not: it
    /// is derived from the code).
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Failures so far (0 for a code never tried; a file that is not a
    /// count counts as spent).
    pub(super) fn read(&self) -> io::Result<u32> {
        match open_nofollow(&self.path, false) {
            Ok(mut f) => {
                let mut s = String::new();
                f.read_to_string(&mut s)?;
                Ok(parse(&s))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Adds one failure and returns the new count (this process's and any
    /// other's with the same code).
    pub(super) fn bump(&self) -> io::Result<u32> {
        let mut f = open_nofollow(&self.path, true)?;
        sys::lock(f.as_fd())?;
        let mut s = String::new();
        f.read_to_string(&mut s)?;
        let n = parse(&s).saturating_add(1);
        f.set_len(0)?;
        f.rewind()?;
        f.write_all(format!("{n}\n").as_bytes())?;
        f.sync_data()?;
        Ok(n)
    }
}

fn parse(s: &str) -> u32 {
    match s.trim() {
        "" => 0,
        t => t.parse().unwrap_or(u32::MAX),
    }
}

fn open_nofollow(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Makes `dir` (mode 0700) if missing, and checks it is a directory of
/// this user that no one else may write: another user who could would
/// reset the count or plant links.
fn private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(anyhow!(
                "cannot keep the code's failed attempts in {}: {e}",
                dir.display()
            )
            .into());
        }
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    if !m.is_dir() || m.uid() != sys::euid() || m.mode() & 0o022 != 0 {
        return Err(anyhow!(
            "will not keep the code's failed attempts in {}: it must be a directory of this user that no one else can write (set PINCAT_STATE_DIR)",
            dir.display()
        )
        .into());
    }
    Ok(())
}

/// The directory's key for naming count files: made once (written under
/// a temporary name, then linked, so a reader never sees half of it).
fn key(dir: &Path) -> io::Result<[u8; KEY_LEN]> {
    let path = dir.join("code-key");
    if let Some(k) = read_key(&path)? {
        return Ok(k);
    }
    let mut k = [0u8; KEY_LEN];
    aws_lc_rs::rand::fill(&mut k).map_err(|_| io::Error::other("no randomness"))?;
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| io::Error::other("no randomness"))?;
    let tmp = dir.join(format!("code-key.{}", hex::encode(nonce)));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let linked = f
        .write_all(&k)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(k),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_key(&path)?.ok_or_else(|| io::Error::other("the key vanished"))
        }
        Err(e) => Err(e),
    }
}

fn read_key(path: &Path) -> io::Result<Option<[u8; KEY_LEN]>> {
    let mut f = match open_nofollow(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut k = [0u8; KEY_LEN];
    f.read_exact(&mut k)?;
    Ok(Some(k))
}

/// `code-HEX.failures`: a keyed hash, so that the name (which may show in
/// a listing or a log) tells nothing about the code without the key.
fn file_name(key: &[u8; KEY_LEN], code: &Code) -> String {
    use aws_lc_rs::hmac;
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, code.as_str().as_bytes());
    format!("code-{}.failures", hex::encode(&tag.as_ref()[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> Code {
        Code::parse("acid-acorn-acre").unwrap()
    }

    #[test]
    fn counts_add_up_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("state");
        let f = FailureFile::open(&d, &code()).unwrap();
        assert_eq!(f.read().unwrap(), 0);
        assert_eq!(f.bump().unwrap(), 1);
        let again = FailureFile::open(&d, &code()).unwrap();
        assert_eq!(again.bump().unwrap(), 2);
        assert_eq!(f.read().unwrap(), 2);
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // The name does not reveal the code without the directory's key.
        let other = tempfile::tempdir().unwrap();
        let g = FailureFile::open(other.path(), &code()).unwrap();
        assert_ne!(f.path.file_name(), g.path.file_name());
    }

    #[test]
    fn a_directory_others_can_write_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("shared");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(FailureFile::open(&d, &code()).is_err());
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o777, "never chmodded");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_in_place_of_the_count_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("state");
        let f = FailureFile::open(&d, &code()).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, &f.path).unwrap();
        assert!(f.bump().is_err());
        assert!(f.read().is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
