//! Reaching directories below the output's root through descriptors kept
//! along the path, never following a symbolic link, creating missing
//! directories only when asked and checking each one made is really new.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys::{self, Kind, Stat};

/// Most directory descriptors one walk keeps along its path.
pub(super) const MAX_WALK_FDS: usize = 32;

/// Keeps descriptors along one directory path below the root, so moving
/// between nearby paths costs only the components that differ (linear in
/// the offer, however deep it goes). Nothing is followed: every step is
/// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) or openat(O_NOFOLLOW).
pub(super) struct Walker<'a> {
    root: BorrowedFd<'a>,
    path: String,
    /// (end of the prefix of `path`, descriptor of that directory)
    stack: Vec<(usize, OwnedFd)>,
}

/// How a walk creates missing directories: a callback told of each one
/// made (where its name ends, its identity) and the mode to make them with.
pub(super) type Make<'m> = (&'m mut dyn FnMut(usize, Stat), u32);

impl<'a> Walker<'a> {
    pub(super) fn new(root: BorrowedFd<'a>) -> Self {
        Walker {
            root,
            path: String::new(),
            stack: Vec::new(),
        }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.stack.last().map_or(self.root, |(_, f)| f.as_fd())
    }

    /// Moves to the directory `target` ("" is the root). With `make`, missing
    /// directories are created (mode `dir_mode`, before umask) and reported.
    pub(super) fn goto(&mut self, target: &str, make: Option<Make<'_>>) -> io::Result<()> {
        let common = common_dirs(&self.path, target);
        while self.stack.last().is_some_and(|(end, _)| *end > common) {
            self.stack.pop();
        }
        let base = self.stack.last().map_or(0, |(e, _)| *e);
        self.path.clear();
        let rest = target[base..].trim_start_matches('/');
        if !rest.is_empty() {
            let r = match sys::open_dir_beneath(self.fd(), rest) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && make.is_some() => {
                    self.make_each(target, base, make)
                }
                Err(e) => Err(e),
                Ok(fd) => {
                    self.stack.push((target.len(), fd));
                    self.trim();
                    Ok(())
                }
            };
            if let Err(e) = r {
                self.stack.clear();
                return Err(e);
            }
        }
        self.path.push_str(target);
        Ok(())
    }

    fn make_each(&mut self, target: &str, base: usize, make: Option<Make<'_>>) -> io::Result<()> {
        let Some((report, mode)) = make else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let mut pos = base;
        for comp in target[base..].split('/') {
            let end = pos + comp.len();
            pos = end + 1;
            if comp.is_empty() {
                continue;
            }
            let name = OsStr::new(comp);
            let fd = match sys::open_dir_at(self.fd(), name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::mkdir_at(self.fd(), name, mode) {
                        Ok(()) => {
                            let fd = sys::open_dir_at(self.fd(), name)?;
                            let st = fresh_dir(fd.as_fd())?;
                            // Exact mode whatever the umask (the owner must
                            // be able to fill it); on the descriptor, which
                            // is the verified new directory whatever its
                            // name now points to.
                            sys::fchmod(fd.as_fd(), mode)?;
                            report(end, st);
                            fd
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            sys::open_dir_at(self.fd(), name)?
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            self.stack.push((end, fd));
            self.trim();
        }
        Ok(())
    }

    /// Keeps at most [`MAX_WALK_FDS`] descriptors: the shallowest go (a
    /// later move above them reopens from the root, still in one step).
    fn trim(&mut self) {
        if self.stack.len() > MAX_WALK_FDS {
            self.stack.drain(..self.stack.len() - MAX_WALK_FDS);
        }
    }
}

/// Checks that a directory just made and opened by name is really the new
/// one: a local user who can rename entries in its parent could have
/// swapped another directory in between the mkdir and the open. A new
/// directory is ours, empty, and has no subdirectories.
pub(super) fn fresh_dir(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let st = sys::stat_fd(fd)?;
    let empty = sys::list_dir(fd).map(|v| v.is_empty()).unwrap_or(false);
    if st.kind != Kind::Dir || st.uid != sys::euid() || st.nlink != 2 || !empty {
        // Reported like a symlink on the way: the path is not ours to use.
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(st)
}

/// Length of the longest common prefix of two relative directory paths
/// that ends at a component boundary in both.
fn common_dirs(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let boundary = |s: &[u8], i: usize| i == s.len() || s[i] == b'/';
    if boundary(a, n) && boundary(b, n) {
        return n;
    }
    a[..n].iter().rposition(|&c| c == b'/').unwrap_or(0)
}

/// Splits "a/b/c" into ("a/b", "c") and "c" into ("", "c").
pub(super) fn split_parent(name: &str) -> (&str, &str) {
    match name.rfind('/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("", name),
    }
}
