//! Beginning a transfer: the offer checked against the disk before any
//! byte arrives (reserved names, space, what is already there, anything in
//! the way), its directories made and marked in use, and the way its files
//! are held until commit chosen.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use super::basis::changed_fail;
use super::fail::{exists_fail, io_fail, walk_fail};
use super::walk::{Walker, split_parent};
use super::{
    Base, Fail, FileBasis, Holding, MAX_HELD, Made, Registry, STATE_DIR, Store, Transfer, lock,
    state,
};
use crate::protocol::{Offer, RejectCode, TransferKind, escape_name};
use crate::sys::{self, Kind, Stat};

impl Store {
    /// Checks an accepted offer against the disk and prepares to receive it.
    /// Nothing is visible under the output until [`Transfer::commit`].
    #[cfg(test)]
    pub fn begin(self: &Arc<Self>, offer: Offer) -> Result<Transfer, Fail> {
        self.begin_for(offer, None)
    }

    /// `Store::begin` for a peer whose partial files are kept under
    /// `secret` (see `kept.rs`): a resume builds on them.
    pub fn begin_for(
        self: &Arc<Self>,
        offer: Offer,
        secret: Option<crate::digest::Hash>,
    ) -> Result<Transfer, Fail> {
        let update = offer.kind == TransferKind::Files && (offer.update || self.update);
        let mut t = Transfer::new(self.clone(), offer);
        t.parts = t.offer.continued;
        t.secret = secret.filter(|_| self.resume);
        t.update = update;
        t.check_links()?;
        match t.offer.kind {
            TransferKind::Stream => t.begin_stream()?,
            TransferKind::Files => t.begin_files()?,
        }
        t.count_plans_due();
        Ok(t)
    }
}

/// A stream that would go to a terminal (as curl, refused up front).
pub(crate) const TERMINAL: &str = "binary output to a terminal: the receiver's standard output is a terminal; run it with --out FILE, or --out - to write the stream there anyway";

/// An unnamed stream into a directory.
fn unnamed_fail() -> Fail {
    (
        RejectCode::Unsupported,
        "the receiver writes into a directory and cannot take an unnamed stream; name it with send --as NAME, or send files"
            .into(),
    )
}

impl Transfer {
    fn begin_stream(&mut self) -> Result<(), Fail> {
        let store = self.store.clone();
        let named = self
            .offer
            .stream_name()
            .map(|n| (n.to_string(), OsString::from(n)));
        match (&store.base, named) {
            (Base::Stdout(_), _) if store.no_terminal && std::io::stdout().is_terminal() => {
                Err((RejectCode::Unsupported, TERMINAL.into()))
            }
            (Base::Stdout(_), _) => Ok(()),
            (Base::Device(f), _) => {
                self.holding = Holding::Device(f.clone());
                Ok(())
            }
            (Base::Dir(_), None) => Err(unnamed_fail()),
            (Base::NotDir, _) => Err(exists_fail(&store.display.display().to_string())),
            // A named stream into a directory (made if missing, as for
            // files) becomes that file in it.
            (Base::Dir(_) | Base::Missing(..), Some((shown, name))) => {
                if state::reserved_top(&shown) {
                    return Err((
                        RejectCode::BadName,
                        format!(
                            "refused stream name {}: {STATE_DIR} and names that start with {STATE_DIR}- are reserved on the receiver",
                            escape_name(&shown)
                        ),
                    ));
                }
                // Kept before anything can fail, so an abort removes a
                // directory this transfer made; counted in use, so another
                // transfer's abort never removes it under this one.
                let root = self.files_root(&store)?;
                let dir = sys::dup(root.as_fd())
                    .map_err(|e| io_fail("cannot open the output".into(), e))?;
                self.root = Some(root);
                let here = sys::stat_fd(dir.as_fd())
                    .map_err(|e| io_fail("cannot check the output".into(), e))?;
                self.mark_in_use(&mut lock(&store.walk), (here.dev, here.ino));
                self.stream_into(dir.as_fd(), &name, &shown)
            }
            (Base::Missing(dir, name), None) => {
                // Made a directory since (by a files transfer, or a named
                // stream): as for any directory.
                let st = sys::stat_at(dir.as_fd(), name)
                    .map_err(|e| io_fail("cannot check the output".into(), e))?;
                if st.is_some_and(|st| st.kind == Kind::Dir) {
                    return Err(unnamed_fail());
                }
                let shown = store.display.display().to_string();
                self.stream_into(dir.as_fd(), name, &shown)
            }
        }
    }

    /// A stream that becomes the file `name` in `dir` once whole: never
    /// over anything there (`shown` names it in messages).
    fn stream_into(&mut self, dir: BorrowedFd<'_>, name: &OsStr, shown: &str) -> Result<(), Fail> {
        if sys::stat_at(dir, name)
            .map_err(|e| io_fail("cannot check the output".into(), e))?
            .is_some()
        {
            return Err(exists_fail(shown));
        }
        let f = sys::tmpfile_in(dir, 0o600)
            .map_err(|e| io_fail(format!("cannot create a file beside {shown}"), e))?;
        self.root = Some(sys::dup(dir).map_err(|e| io_fail("cannot open the output".into(), e))?);
        self.stream_name = Some(name.to_os_string());
        self.holding = Holding::Held(vec![Some(f)]);
        Ok(())
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
        let many = self.parts || self.files.len() > MAX_HELD || !self.can_hold();
        if many && let Some(tops) = self.tree_tops(root.as_fd()) {
            let mut reg = lock(&store.walk);
            let here = sys::stat_fd(root.as_fd())
                .map_err(|err| io_fail("cannot check the output".into(), err))?;
            self.mark_in_use(&mut reg, (here.dev, here.ino));
            self.holding = self.stage(&mut reg)?;
            drop(reg);
            if self.can_rename() {
                self.make_tree(tops)?;
                self.find_kept();
                return Ok(());
            }
        }
        if self.parts {
            let fail = match self.top_exists(root.as_fd()) {
                Some(_) if self.update => super::parts::update_fail(),
                Some(exists) => exists,
                None => super::parts::parts_fail(),
            };
            return Err(fail);
        }
        self.check_and_make(&store, root.as_fd())?;
        // A file `--update` may replace is swapped in from a staged name.
        let replaces = self
            .bases
            .iter()
            .any(|b| matches!(b, FileBasis::Existing { .. }));
        if !matches!(self.holding, Holding::Staged { .. }) {
            self.holding = if many || replaces {
                self.stage(&mut lock(&store.walk))?
            } else {
                Holding::Held((0..self.files.len()).map(|_| None).collect())
            };
        }
        self.find_kept();
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
        let mut changed = Vec::new();
        let mut file_no: usize = 0;
        for i in 0..self.offer.entries.len() {
            let mut reg = lock(&store.walk);
            let e = &self.offer.entries[i];
            if e.is_file() {
                file_no += 1;
            }
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
                let (i, f) = (i as u32, file_no.wrapping_sub(1));
                if let Some((file, st)) = self.check_target(w.fd(), i, f, &mut changed)? {
                    // Hashed without the walk lock: other transfers go on.
                    self.mark_in_use(&mut reg, key);
                    drop(reg);
                    self.hash_existing(f, file, st)?;
                    continue;
                }
            }
            self.mark_in_use(&mut reg, key);
        }
        if !changed.is_empty() {
            return Err(changed_fail(&changed));
        }
        Ok(())
    }

    /// The target of entry `i` (a file or a link, file number `f`) in its
    /// directory `dir`: absent, or with `--update` a file to compare;
    /// anything else refuses the offer.
    fn check_target(
        &mut self,
        dir: BorrowedFd<'_>,
        i: u32,
        f: usize,
        changed: &mut Vec<String>,
    ) -> Result<Option<(File, Stat)>, Fail> {
        let e = &self.offer.entries[i as usize];
        let is_file = e.is_file();
        let leaf = OsString::from(split_parent(&e.name).1);
        let name = || escape_name(&self.offer.entries[i as usize].name);
        match sys::stat_at(dir, &leaf) {
            Ok(None) => Ok(None),
            Ok(Some(s)) if s.kind == Kind::Symlink => Err((
                RejectCode::Exists,
                format!(
                    "{} exists on the receiver as a symbolic link; it is never followed or overwritten",
                    name()
                ),
            )),
            Ok(Some(s)) if self.update && s.kind == Kind::File && is_file => {
                self.compare_existing(dir, &leaf, f, s, changed)
            }
            Ok(Some(s)) if self.update && s.kind == Kind::Dir && is_file => Err((
                RejectCode::Exists,
                format!(
                    "{} is a directory on the receiver and a file on the sender; nothing was stored",
                    name()
                ),
            )),
            Ok(Some(_)) => Err(exists_fail(&name())),
            Err(err) => Err(io_fail(format!("cannot check {}", name()), err)),
        }
    }

    /// `--update` meets a file that is there: the quick check (same size
    /// and modification time) leaves it as it is. Otherwise, when the
    /// receiver may replace it (`--allow-update`), it is opened here (and
    /// hashed by [`Transfer::hash_existing`], without the walk lock) so the
    /// sender sends only the chunks that differ; without that permission
    /// it is a changed file, and the transfer is refused: its content is
    /// never hashed for a sender that may not replace it (that would tell
    /// the sender whether its guess of the content is right).
    fn compare_existing(
        &mut self,
        dir: BorrowedFd<'_>,
        leaf: &OsStr,
        f: usize,
        st: Stat,
        changed: &mut Vec<String>,
    ) -> Result<Option<(File, Stat)>, Fail> {
        let e = &self.offer.entries[self.files[f] as usize];
        let name = escape_name(&e.name);
        // Its data is on the way already (a short offer without --update,
        // to `get --update`): nothing to compare, it is replaced.
        let compare = self.builds();
        let quick = st.size == e.size && e.mtime.is_some_and(|t| (t.secs, t.nanos) == st.mtime);
        let checksum = self.offer.checksum && self.store.allow_update;
        if compare && ((quick && !checksum) || (e.size == 0 && st.size == 0)) {
            self.bases[f] = FileBasis::Unchanged;
            return Ok(None);
        }
        if !self.store.allow_update {
            changed.push(name);
            return Ok(None);
        }
        let fail = |err| io_fail(format!("cannot read {name} to compare it"), err);
        let file = sys::open_read_at(dir, leaf)
            .map_err(fail)?
            .ok_or_else(|| fail(std::io::Error::from_raw_os_error(libc::ENOENT)))?;
        let now = sys::stat_fd(file.as_fd()).map_err(fail)?;
        if !now.same(&st) || now.kind != Kind::File {
            return Err((
                RejectCode::Io,
                format!("{name} changed on the receiver while it was compared; nothing was stored"),
            ));
        }
        Ok(Some((file, st)))
    }

    /// Hashes the existing file of `f` (opened by `compare_existing`) for
    /// the sender to compare, and closes it: a basis holds no descriptor.
    fn hash_existing(&mut self, f: usize, mut file: File, st: Stat) -> Result<(), Fail> {
        let e = &self.offer.entries[self.files[f] as usize];
        let hashes = match self.builds() {
            true => crate::digest::hash_prefix(&mut file, e.size, st.size).map_err(|err| {
                io_fail(
                    format!("cannot read {} to compare it", escape_name(&e.name)),
                    err,
                )
            })?,
            false => Vec::new(),
        };
        self.bases[f] = FileBasis::Existing {
            stat: Box::new(st),
            hashes: hashes.into_boxed_slice(),
        };
        Ok(())
    }

    /// Counts this transfer once among the users of directory `key`.
    fn mark_in_use(&mut self, reg: &mut Registry, key: (u64, u64)) {
        if self.in_use.insert(key) {
            *reg.in_use.entry(key).or_insert(0) += 1;
        }
    }
}
