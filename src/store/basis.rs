//! Building on what the receiver has: a partial file kept from an
//! interrupted transfer with the same peer (resume), or the file `--update`
//! compares with. The taker tells the giver the hashes of the whole chunks
//! it has (BASIS); the giver answers which chunks it sends (PLAN); a chunk
//! not sent is reused only where its hash matched the giver's, and every
//! file's digest is computed from the hashes of exactly what was stored.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;

use super::fail::io_fail;
use super::{Fail, FileBasis, Holding, Transfer, kept};
use crate::digest::{self, Chunker, Hash};
use crate::protocol::{Basis, BasisEntry, PlanEntry, RejectCode, TransferKind, escape_name};
use crate::sys;

/// Most names of kept files looked at per transfer.
const MAX_KEPT_LISTED: usize = 1 << 20;

impl Transfer {
    /// Whether the giver waits for ACCEPT, so the taker may build on what
    /// it has (files, and no early data).
    pub(super) fn builds(&self) -> bool {
        self.offer.kind == TransferKind::Files && !self.offer.early_data()
    }

    /// Takes this peer's kept partial files for the offered files that
    /// have no other basis, and hashes what each holds.
    pub(super) fn find_kept(&mut self) {
        let (Some(secret), true) = (self.secret, self.builds()) else {
            return;
        };
        let Some(root) = self.root.as_ref() else {
            return;
        };
        let Some(kept) = kept::open(root.as_fd(), false) else {
            return;
        };
        // A transfer in parts looks each name up (taking it fails when it
        // is not there): a listing could hold a million names.
        let listed: Option<HashSet<Vec<u8>>> = (!self.parts).then(|| {
            sys::list_dir(kept.as_fd())
                .unwrap_or_default()
                .into_iter()
                .take(MAX_KEPT_LISTED)
                .map(|n| n.as_bytes().to_vec())
                .collect()
        });
        for f in 0..self.files.len() {
            let e = &self.offer.entries[self.files[f] as usize];
            if e.size == 0 || !matches!(self.bases[f], FileBasis::New) {
                continue;
            }
            let name = kept::name(&secret, &e.name, e.size);
            if listed
                .as_ref()
                .is_some_and(|l| !l.contains(name.as_bytes()))
            {
                continue;
            }
            let Some((own, mut file)) = kept::take(kept.as_fd(), &name) else {
                continue;
            };
            let have = file.metadata().map_or(0, |m| m.len());
            let id = sys::stat_fd(file.as_fd()).map_or((0, 0), |st| (st.dev, st.ino));
            match digest::hash_prefix(&mut file, e.size, have) {
                Ok(hashes) if !hashes.is_empty() => {
                    self.bases[f] = FileBasis::Kept {
                        own: Some(own.into_boxed_os_str()),
                        id,
                        hashes: hashes.into_boxed_slice(),
                    };
                }
                _ => {
                    let _ = sys::unlink_at(kept.as_fd(), &own, false);
                }
            }
        }
        self.kept = Some(kept);
    }

    /// The BASIS entries to send, in file order.
    pub fn bases(&self) -> Vec<BasisEntry> {
        let mut out = Vec::new();
        for (f, b) in self.bases.iter().enumerate() {
            let basis = match b {
                FileBasis::New => continue,
                FileBasis::Unchanged => Basis::Unchanged,
                b => match b.hashes() {
                    Some(h) => Basis::Have(h.to_vec()),
                    None => continue,
                },
            };
            out.push(BasisEntry {
                file: f as u32,
                basis,
            });
        }
        out
    }

    /// Whether PLAN entries are still due (one per file the taker has
    /// chunks of), before any data.
    pub fn awaiting_plans(&self) -> bool {
        self.planned < self.plans_due
    }

    /// Counts the files the taker has chunks of: as many PLAN entries are
    /// due (once the bases are known, before ACCEPT).
    pub(super) fn count_plans_due(&mut self) {
        self.plans_due = self.bases.iter().filter(|b| b.hashes().is_some()).count();
    }

    /// Takes a PLAN frame: for each file the taker has chunks of, in order,
    /// which chunks come. A chunk may be left out only where the taker has
    /// it.
    pub fn plan(&mut self, entries: Vec<PlanEntry>) -> Result<(), Fail> {
        let bad = |m: &str| {
            (
                RejectCode::Protocol,
                format!("the sender sent a bad PLAN: {m}"),
            )
        };
        for p in entries {
            let f = p.file as usize;
            let next = self.next_plan;
            let expected = (next..self.bases.len()).find(|&i| self.bases[i].hashes().is_some());
            if expected != Some(f) {
                return Err(bad("not the next file it was told about"));
            }
            let size = self.size_of(f);
            let hashes = self.bases[f].hashes().map_or(0, <[Hash]>::len);
            if p.send.len() as u64 != digest::chunk_count(size)
                || p.send.iter().enumerate().any(|(i, s)| !s && i >= hashes)
            {
                return Err(bad("chunks that do not fit the file"));
            }
            self.plans[f] = Some(p.send.into_boxed_slice());
            self.planned += 1;
            self.next_plan = f + 1;
        }
        Ok(())
    }

    /// Whether file `f` stays as it is on the receiver: the quick check
    /// found it unchanged, or every chunk matched and the size is the same.
    pub(super) fn keeps_existing(&self, f: usize) -> bool {
        matches!(self.bases.get(f), Some(FileBasis::Unchanged)) || self.same(f)
    }

    fn same(&self, f: usize) -> bool {
        let Some(FileBasis::Existing { stat, hashes, .. }) = self.bases.get(f) else {
            return false;
        };
        let size = self.size_of(f);
        stat.size == size
            && hashes.len() as u64 == digest::chunk_count(size)
            && self.plans[f].as_ref().is_some_and(|s| s.iter().all(|s| !s))
    }

    /// The byte ranges of file `f` that come over the wire.
    pub(super) fn file_ranges(&self, f: usize) -> Vec<(u64, u64)> {
        let size = self.size_of(f);
        if self.keeps_existing(f) {
            return Vec::new();
        }
        let Some(send) = &self.plans[f] else {
            return if size == 0 {
                Vec::new()
            } else {
                vec![(0, size)]
            };
        };
        digest::sent_ranges(size, send)
    }

    /// Bytes of the offered files this taker told the giver it has (what
    /// the giver reads to compare).
    pub fn basis_bytes(&self) -> u64 {
        (0..self.files.len())
            .filter_map(|f| {
                let n = self.bases[f].hashes()?.len() as u64;
                Some((n * digest::chunk_size(self.size_of(f))).min(self.size_of(f)))
            })
            .sum()
    }

    /// Bytes the sender sends, once the plans are in.
    pub fn expected_bytes(&self) -> u64 {
        (0..self.files.len())
            .map(|f| self.file_ranges(f).iter().map(|(a, b)| b - a).sum::<u64>())
            .sum()
    }

    /// Bytes of the offered files the receiver had and keeps.
    pub fn resumed(&self) -> u64 {
        self.before.resumed + self.resumed_here()
    }

    /// Files left as they were by the quick check (not verified).
    pub fn unverified(&self) -> u32 {
        self.before.unverified + self.unverified_here()
    }

    /// Every file's digest as stored (`None`: left as it was unverified).
    pub fn digests(&self) -> &[Option<Hash>] {
        &self.digests
    }

    /// A chunker for file `f` that knows the hashes of the chunks kept.
    pub(super) fn chunker_for(&self, f: usize) -> Chunker {
        let mut c = Chunker::new(self.size_of(f));
        if let (Some(hashes), Some(send)) = (self.bases[f].hashes(), &self.plans[f]) {
            for (i, h) in hashes.iter().enumerate() {
                if !send.get(i).copied().unwrap_or(true) {
                    c.given(i as u64, *h);
                }
            }
        }
        c
    }

    /// The digest of file `f` once its bytes are all stored.
    pub(super) fn seal_digest(&mut self, f: usize) {
        let d = match &self.bases[f] {
            FileBasis::Unchanged => None,
            FileBasis::Existing { hashes, .. } if self.same(f) => {
                Some(digest::file_digest(hashes, self.size_of(f)))
            }
            _ => self.chunker.as_ref().and_then(Chunker::digest),
        };
        if let Some(slot) = self.digests.get_mut(f) {
            *slot = d;
        }
    }

    /// Gets the new file of `f` ready before its data: a kept partial
    /// file is cut (or grown) to the offered size; for a file `--update`
    /// replaces, the chunks that stay are copied from the old one, each
    /// checked against the hash that was sent for it.
    pub(super) fn prepare(&mut self, f: usize, file: &File) -> Result<(), Fail> {
        let size = self.size_of(f);
        let name = || escape_name(&self.offer.entries[self.files[f] as usize].name);
        match &self.bases[f] {
            FileBasis::Kept { .. } => file
                .set_len(size)
                .map_err(|e| io_fail(format!("cannot resume {}", name()), e)),
            FileBasis::Existing { stat, hashes } => {
                let send = self.plans[f].as_deref().unwrap_or(&[]);
                if hashes
                    .iter()
                    .enumerate()
                    .all(|(i, _)| send.get(i).copied().unwrap_or(true))
                {
                    return Ok(());
                }
                let old = self.open_existing(f, stat)?;
                let mut buf = Vec::new();
                for (i, h) in hashes.iter().enumerate() {
                    if send.get(i).copied().unwrap_or(true) {
                        continue;
                    }
                    let (a, b) = digest::chunk_range(size, i as u64);
                    buf.resize((b - a) as usize, 0);
                    let fail = |e| io_fail(format!("cannot copy {} to update it", name()), e);
                    old.read_exact_at(&mut buf, a).map_err(fail)?;
                    if blake3::hash(&buf).as_bytes() != h {
                        return Err((
                            RejectCode::Io,
                            format!(
                                "{} changed on the receiver during the update; it was not replaced",
                                name()
                            ),
                        ));
                    }
                    file.write_all_at(&buf, a).map_err(fail)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The kept partial file of `f`, when it has one not used yet: the
    /// file, opened again (the very one hashed: this user's, one link, the
    /// same identity), and its own name in the kept directory.
    pub(super) fn take_kept(&mut self, f: usize) -> Option<(File, OsString)> {
        let Some(FileBasis::Kept {
            own: Some(own), id, ..
        }) = self.bases.get(f)
        else {
            return None;
        };
        let kept = self.kept.as_ref()?;
        let file = sys::open_rw_at(kept.as_fd(), own).ok()??;
        match sys::stat_fd(file.as_fd()) {
            Ok(st) if (st.dev, st.ino) == *id && st.nlink == 1 && st.uid == sys::euid() => {
                Some((file, own.to_os_string()))
            }
            _ => None,
        }
    }

    /// The existing file `--update` compared for `f`, opened again by name
    /// and checked to be the very one compared.
    fn open_existing(&self, f: usize, stat: &sys::Stat) -> Result<File, Fail> {
        let name = &self.offer.entries[self.files[f] as usize].name;
        let fail = |e| io_fail(format!("cannot copy {} to update it", escape_name(name)), e);
        let store = self.store.clone();
        let _g = super::lock(&store.walk);
        let mut w = super::walk::Walker::new(super::out_dir(&self.root)?);
        let (parent, leaf) = super::walk::split_parent(name);
        w.goto(parent, None)
            .map_err(|e| super::fail::walk_fail(name, e))?;
        let old = sys::open_read_at(w.fd(), OsStr::new(leaf))
            .map_err(fail)?
            .ok_or_else(|| fail(std::io::Error::from_raw_os_error(libc::ENOENT)))?;
        match sys::stat_fd(old.as_fd()) {
            Ok(now) if now.same(stat) => Ok(old),
            _ => Err((
                RejectCode::Io,
                format!(
                    "{} changed on the receiver during the update; it was not replaced",
                    escape_name(name)
                ),
            )),
        }
    }

    /// The kept partial file of `f` was renamed out of the kept directory.
    pub(super) fn kept_moved(&mut self, f: usize) {
        if let Some(FileBasis::Kept { own, .. }) = self.bases.get_mut(f) {
            *own = None;
        }
    }

    /// After a commit: the kept names of the files used are gone, and the
    /// kept directory too once empty.
    pub(super) fn forget_kept(&mut self) {
        let Some(kept) = self.kept.take() else {
            return;
        };
        for b in self.bases.iter_mut() {
            if let FileBasis::Kept { own: Some(own), .. } = b {
                let _ = sys::unlink_at(kept.as_fd(), own, false);
                *b = FileBasis::New;
            }
        }
        drop(kept);
        if let Some(root) = &self.root {
            let store = self.store.clone();
            let _g = super::lock(&store.walk);
            kept::tidy(root.as_fd());
        }
    }

    /// On an abort: kept partial files that were taken go back under their
    /// kept names (unused, or with `keep`, whatever was written); used ones
    /// are removed otherwise.
    pub(super) fn return_kept(&mut self, keep: bool) {
        let (Some(kept), Some(secret)) = (self.kept.as_ref(), self.secret) else {
            return;
        };
        for f in 0..self.bases.len() {
            let FileBasis::Kept { own: Some(own), .. } = &self.bases[f] else {
                continue;
            };
            let e = &self.offer.entries[self.files[f] as usize];
            if keep || f >= self.opened {
                let name = kept::name(&secret, &e.name, e.size);
                let _ = sys::rename_between(kept.as_fd(), own, kept.as_fd(), &name);
            } else {
                let _ = sys::unlink_at(kept.as_fd(), own, false);
            }
            self.bases[f] = FileBasis::New;
        }
    }

    /// On an interrupted transfer: every file it wrote (whole or in part)
    /// is kept under its kept name for a resume, except new versions of
    /// files `--update` replaces. Best effort.
    pub(super) fn keep_partials(&mut self) {
        // A transfer small enough to go whole before the ACCEPT is sent
        // again whole: nothing of it is worth keeping.
        let Some(secret) = self.secret.filter(|_| self.builds()) else {
            return;
        };
        if self.opened == 0 {
            return;
        }
        if self.kept.is_none() {
            self.kept = self.root.as_ref().and_then(|r| kept::open(r.as_fd(), true));
        }
        let Some(kept) = self.kept.as_ref().and_then(|k| sys::dup(k.as_fd()).ok()) else {
            return;
        };
        for f in 0..self.opened.min(self.files.len()) {
            if matches!(
                self.bases[f],
                FileBasis::Existing { .. } | FileBasis::Unchanged
            ) {
                continue;
            }
            let e = &self.offer.entries[self.files[f] as usize];
            if e.size == 0 {
                continue;
            }
            let name = kept::name(&secret, &e.name, e.size);
            self.keep_one(f, kept.as_fd(), &name);
        }
    }

    fn keep_one(&mut self, f: usize, kept: BorrowedFd<'_>, name: &OsStr) {
        if let Some(here) = &self.store.kept_here {
            super::lock(here).insert(name.to_os_string());
        }
        if let Some(FileBasis::Kept { own: Some(own), .. }) = self.bases.get(f) {
            // Held: still named in the kept directory.
            if sys::rename_between(kept, own, kept, name).is_ok() {
                self.bases[f] = FileBasis::New;
            }
            return;
        }
        match &self.holding {
            Holding::Held(v) => {
                if let Some(Some(file)) = v.get(f) {
                    let _ = kept::keep_open(kept, file, name);
                }
            }
            Holding::Staged { sub, tree, .. } => {
                let raw = &self.offer.entries[self.files[f] as usize].name;
                let _ = match tree {
                    Some(_) => {
                        let (parent, leaf) = super::walk::split_parent(raw);
                        sys::open_dir_beneath(sub.as_fd(), parent).and_then(|d| {
                            sys::rename_between(d.as_fd(), OsStr::new(leaf), kept, name)
                        })
                    }
                    None => {
                        sys::rename_between(sub.as_fd(), OsStr::new(&f.to_string()), kept, name)
                    }
                };
            }
            Holding::Stdout | Holding::Device(_) => {}
        }
    }
}

/// The refusal for files that are there and differ, without
/// `--allow-update`.
pub(super) fn changed_fail(names: &[String]) -> Fail {
    (
        RejectCode::Exists,
        format!(
            "{} already exist on the receiver and differ; the receiver replaces files only with `serve --allow-update` (or `get --update`); nothing was stored",
            crate::events::list_names(names, |n| n.to_string())
        ),
    )
}

impl FileBasis {
    /// The hashes of the chunks the receiver has, when it has some.
    pub(super) fn hashes(&self) -> Option<&[Hash]> {
        match self {
            FileBasis::Kept { hashes, .. } | FileBasis::Existing { hashes, .. } => {
                Some(&hashes[..]).filter(|h| !h.is_empty())
            }
            _ => None,
        }
    }
}
