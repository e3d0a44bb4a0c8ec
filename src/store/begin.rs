//! Beginning a transfer: the offer checked against the disk before any
//! byte arrives (reserved names, space, what is already there, anything in
//! the way), its directories made and marked in use, and the way its files
//! are held until commit chosen.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use super::fail::{exists_fail, io_fail, walk_fail};
use super::walk::{Walker, split_parent};
use super::{
    Base, Fail, Holding, MAX_HELD, Made, Registry, STATE_DIR, Store, Transfer, lock, state,
};
use crate::protocol::{Offer, RejectCode, TransferKind, escape_name};
use crate::sys::{self, Kind, Stat};

impl Store {
    /// Checks an accepted offer against the disk and prepares to receive it.
    /// Nothing is visible under the output until [`Transfer::commit`].
    pub fn begin(self: &Arc<Self>, offer: Offer) -> Result<Transfer, Fail> {
        let mut t = Transfer::new(self.clone(), offer);
        t.check_links()?;
        match t.offer.kind {
            TransferKind::Stream => t.begin_stream()?,
            TransferKind::Files => t.begin_files()?,
        }
        Ok(t)
    }
}

impl Transfer {
    fn begin_stream(&mut self) -> Result<(), Fail> {
        let store = self.store.clone();
        match &store.base {
            Base::Stdout(_) => Ok(()),
            Base::Dir(_) => Err((
                RejectCode::Unsupported,
                "the receiver writes into a directory and cannot take a stream; send files instead"
                    .into(),
            )),
            Base::NotDir => Err(exists_fail(&store.display.display().to_string())),
            Base::Missing(dir, name) => {
                if sys::stat_at(dir.as_fd(), name)
                    .map_err(|e| io_fail("cannot check the output".into(), e))?
                    .is_some()
                {
                    return Err(exists_fail(&store.display.display().to_string()));
                }
                let f = sys::tmpfile_in(dir.as_fd(), 0o600).map_err(|e| {
                    io_fail(
                        format!("cannot create a file beside {}", store.display.display()),
                        e,
                    )
                })?;
                self.root = Some(
                    sys::dup(dir.as_fd())
                        .map_err(|e| io_fail("cannot open the output".into(), e))?,
                );
                self.stream_name = Some(name.clone());
                self.holding = Holding::Held(vec![Some(f)]);
                Ok(())
            }
        }
    }

    fn begin_files(&mut self) -> Result<(), Fail> {
        let reserved = |n: &str| state::reserved_top(n.split('/').next().unwrap_or(n));
        if let Some(e) = self.offer.entries.iter().find(|e| reserved(&e.name)) {
            return Err((
                RejectCode::BadName,
                format!(
                    "refused file name {}: {STATE_DIR} and names that start with {STATE_DIR}- are reserved on the receiver for transfers in progress",
                    escape_name(&e.name)
                ),
            ));
        }
        let store = self.store.clone();
        let root = self.files_root(&store)?;
        let need = self.space_needed();
        let reserved = store.reserve(root.as_fd(), need);
        self.root = Some(root);
        self.reserved = reserved?;
        let root = self
            .root
            .as_ref()
            .ok_or((RejectCode::Io, "no output".into()))?;
        let root =
            sys::dup(root.as_fd()).map_err(|e| io_fail("cannot open the output".into(), e))?;
        let many = self.files.len() > MAX_HELD || !self.can_hold();
        if many && let Some(tops) = self.tree_tops(root.as_fd()) {
            let mut reg = lock(&store.walk);
            let here = sys::stat_fd(root.as_fd())
                .map_err(|err| io_fail("cannot check the output".into(), err))?;
            self.mark_in_use(&mut reg, (here.dev, here.ino));
            self.holding = self.stage(&mut reg)?;
            drop(reg);
            if self.can_rename() {
                self.make_tree(tops)?;
                self.left = self.size_of(0);
                return Ok(());
            }
        }
        self.check_and_make(&store, root.as_fd())?;
        if !matches!(self.holding, Holding::Staged { .. }) {
            self.holding = if many {
                self.stage(&mut lock(&store.walk))?
            } else {
                Holding::Held((0..self.files.len()).map(|_| None).collect())
            };
        }
        self.left = self.size_of(0);
        Ok(())
    }

    /// Refuses existing targets and anything in the way (symlinks, files),
    /// creates the directories, and marks every directory used as in use.
    /// The in-use table is locked per entry, so a huge offer does not stall
    /// other transfers while it is checked.
    fn check_and_make(&mut self, store: &Store, root: BorrowedFd<'_>) -> Result<(), Fail> {
        let umask = self.store.umask;
        let implicit = (0o777 & !umask) | 0o700;
        let mut w = Walker::new(root);
        let mut made: HashMap<(u64, u64), usize> = HashMap::new();
        for i in 0..self.offer.entries.len() {
            let mut reg = lock(&store.walk);
            let e = &self.offer.entries[i];
            let target = if e.is_dir {
                e.name.as_str()
            } else {
                split_parent(&e.name).0
            };
            let mut report = |end: usize, stat: Stat| {
                made.insert((stat.dev, stat.ino), self.made.len());
                self.made.push(Made {
                    entry: i as u32,
                    len: end as u32,
                    stat,
                });
            };
            w.goto(target, Some((&mut report, implicit)))
                .map_err(|err| walk_fail(&e.name, err))?;
            let here = sys::stat_fd(w.fd())
                .map_err(|err| io_fail("cannot check a directory".into(), err))?;
            let key = (here.dev, here.ino);
            if e.is_dir {
                if made.contains_key(&key) {
                    let mode = (e.mode & 0o777 & !umask) | 0o700;
                    sys::fchmod(w.fd(), mode).map_err(|err| {
                        io_fail(
                            format!("cannot set the mode of {}", escape_name(&e.name)),
                            err,
                        )
                    })?;
                }
            } else {
                let leaf = OsStr::new(split_parent(&e.name).1);
                match sys::stat_at(w.fd(), leaf) {
                    Ok(None) => {}
                    Ok(Some(s)) if s.kind == Kind::Symlink => {
                        return Err((
                            RejectCode::Exists,
                            format!(
                                "{} exists on the receiver as a symbolic link; it is never followed or overwritten",
                                escape_name(&e.name)
                            ),
                        ));
                    }
                    Ok(Some(_)) => return Err(exists_fail(&escape_name(&e.name))),
                    Err(err) => {
                        return Err(io_fail(
                            format!("cannot check {}", escape_name(&e.name)),
                            err,
                        ));
                    }
                }
            }
            self.mark_in_use(&mut reg, key);
        }
        Ok(())
    }

    /// Counts this transfer once among the users of directory `key`.
    fn mark_in_use(&mut self, reg: &mut Registry, key: (u64, u64)) {
        if self.in_use.insert(key) {
            *reg.in_use.entry(key).or_insert(0) += 1;
        }
    }
}
