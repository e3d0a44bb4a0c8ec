//! A transfer in parts (see `give/parts.rs`): a tree too large to offer
//! whole comes as a run of offers, each taken once the part before it is
//! whole, into the same private staging trees. The transfer holds one
//! part's names at a time, whatever the number of files; the trees are
//! named at commit exactly as for a transfer offered whole. Directories
//! get their times in staging once nothing more can come into them (the
//! giver walks in order); a cut transfer keeps every file of every part for
//! a resume.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use super::commit::staged::STAGED_DEPTH;
use super::commit::tree::{MAX_TREE_TOPS, prepare_top, top_mode};
use super::fail::io_fail;
use super::walk::{MAX_WALK_FDS, Walker};
use super::{Fail, FileBasis, Holding, STATE_DIR, Transfer, kept, lazy, state};
use crate::protocol::{Offer, RejectCode, TransferKind, escape_name};
use crate::sys::{self, Kind};

/// What the parts before the current one added up to.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Before {
    pub(super) files: u32,
    pub(super) written: u64,
    pub(super) resumed: u64,
    pub(super) unverified: u32,
}

/// The refusal for a transfer in parts this receiver cannot stage whole.
pub(super) fn parts_fail() -> Fail {
    (
        RejectCode::Unsupported,
        format!(
            "this transfer comes in parts (more than {} entries), which this receiver takes only as new top-level directories (at most {MAX_TREE_TOPS}, at most {MAX_WALK_FDS} levels deep) that it does not have yet",
            crate::give::PART_ENTRIES
        ),
    )
}

/// The refusal for `get --update` of a tree in parts that is there.
pub(super) fn update_fail() -> Fail {
    (
        RejectCode::Unsupported,
        format!(
            "--update compares at most {} entries in one transfer, and this tree has more; get its directories one by one",
            crate::give::PART_ENTRIES
        ),
    )
}

impl Transfer {
    /// Whether another part follows this one.
    pub fn continued(&self) -> bool {
        self.offer.continued
    }

    /// Files in the current part.
    pub fn part_files(&self) -> u32 {
        self.files.len() as u32
    }

    /// Files in the parts before the current one: the number of the
    /// current part's first file in the whole transfer.
    pub fn files_before(&self) -> u32 {
        self.before.files
    }

    /// The refusal for the first top-level name of the offer that the
    /// output has already.
    pub(super) fn top_exists(&self, root: BorrowedFd<'_>) -> Option<Fail> {
        let mut tops = self.offer.entries.iter().map(|e| e.name.split('/').next());
        tops.find_map(|t| {
            let t = t?;
            matches!(sys::stat_at(root, OsStr::new(t)), Ok(Some(_)))
                .then(|| super::fail::exists_fail(&escape_name(t)))
        })
    }

    /// Takes the next part's offer, once the current part is whole (after
    /// [`Transfer::finish`]): its names are checked and its directories
    /// made in the staging trees as for the first part.
    pub fn next_part(&mut self, offer: Offer) -> Result<(), Fail> {
        let same = offer.kind == TransferKind::Files && !offer.update && !offer.checksum;
        if !self.parts || !self.offer.continued || !same || offer.entries.is_empty() {
            return Err((
                RejectCode::Protocol,
                "the sender sent a part that does not follow its transfer".into(),
            ));
        }
        self.forget_part_kept();
        let last = self.offer.entries.last().map(|e| e.name.clone());
        self.stamp_part_dirs(last.as_deref());
        self.before.files += self.files.len() as u32;
        self.before.resumed += self.resumed_here();
        self.before.unverified += self.unverified_here();
        self.before.written = self.written;
        self.start_part(offer);
        self.check_links()?;
        self.add_tops()?;
        self.build_entries()?;
        // The parts before are on disk now: what the file system says is
        // free counts them, so their promise is given back.
        self.store.release(self.reserved);
        self.reserved = 0;
        let need = self.space_needed();
        let root = super::out_dir(&self.root)?;
        self.reserved = self.store.reserve(root, need)?;
        self.find_kept();
        self.count_plans_due();
        Ok(())
    }

    /// The per-file state of a new part.
    fn start_part(&mut self, offer: Offer) {
        let files: Vec<u32> = (0..offer.entries.len() as u32)
            .filter(|&i| offer.entries[i as usize].is_file())
            .collect();
        let n = files.len();
        self.offer = offer;
        self.files = files;
        self.bases = lazy::Lazy::new(n, &super::NEW);
        self.plans = lazy::Lazy::new(n, &super::NO_PLAN);
        self.digests = vec![None; n];
        (self.planned, self.plans_due, self.next_plan) = (0, 0, 0);
        (self.ranges, self.chunker) = (None, None);
        (self.opened, self.current, self.left) = (0, 0, 0);
    }

    /// The new part's top-level directories: each one the output does not
    /// have (and no reserved name), made in staging, private until commit.
    fn add_tops(&mut self) -> Result<(), Fail> {
        let root = super::out_dir(&self.root)?;
        let umask = self.store.umask;
        let Holding::Staged {
            sub,
            tree: Some(tree),
            ..
        } = &mut self.holding
        else {
            return Err(parts_fail());
        };
        for e in &self.offer.entries {
            let top = e.name.split('/').next().unwrap_or_default();
            if e.name.split('/').count() > MAX_WALK_FDS {
                return Err(parts_fail());
            }
            if tree
                .tops
                .iter()
                .any(|(t, _)| t.as_bytes() == top.as_bytes())
            {
                continue;
            }
            if state::reserved_top(top) {
                return Err((
                    RejectCode::BadName,
                    format!(
                        "refused file name {}: {STATE_DIR} and names that start with {STATE_DIR}- are reserved on the receiver for transfers in progress",
                        escape_name(top)
                    ),
                ));
            }
            let present = sys::stat_at(root, OsStr::new(top))
                .map_err(|err| io_fail("cannot check the output".into(), err))?;
            if present.is_some() {
                return Err(super::fail::exists_fail(&escape_name(top)));
            }
            if tree.tops.len() >= MAX_TREE_TOPS || !(e.is_dir && e.name == top) {
                return Err(parts_fail());
            }
            sys::mkdir_at(sub.as_fd(), OsStr::new(top), 0o700)
                .map_err(|err| io_fail("cannot make a received directory".into(), err))?;
            prepare_top(sub.as_fd(), OsStr::new(top))?;
            let mode = top_mode(&self.offer, OsStr::new(top), umask).unwrap_or(0o700);
            tree.tops.push((OsString::from(top), mode));
        }
        Ok(())
    }

    /// Bytes of the current part the receiver had already.
    pub(super) fn resumed_here(&self) -> u64 {
        self.offer
            .total_bytes()
            .saturating_sub(self.expected_bytes())
    }

    /// Files of the current part the quick check left as they were.
    pub(super) fn unverified_here(&self) -> u32 {
        self.bases
            .iter()
            .filter(|b| matches!(b, FileBasis::Unchanged))
            .count() as u32
    }

    /// Kept partial files the current part took and did not use are
    /// removed, as a commit does (the part is whole).
    fn forget_part_kept(&mut self) {
        let Some(kept) = &self.kept else {
            return;
        };
        for b in self.bases.iter_mut() {
            if let FileBasis::Kept { own: Some(own), .. } = b {
                let _ = sys::unlink_at(kept.as_fd(), own, false);
                *b = FileBasis::New;
            }
        }
    }

    /// Gives directories their times in staging once nothing more comes
    /// into them: every one but those on the way to `last` (the last name
    /// so far; `None` at the end: all of them), deepest first.
    pub(super) fn stamp_part_dirs(&mut self, last: Option<&str>) {
        if !self.store.times {
            return;
        }
        let mine = self.offer.entries.iter().filter(|e| e.is_dir);
        let mut dirs: Vec<(String, crate::protocol::Mtime)> = std::mem::take(&mut self.carried);
        dirs.extend(mine.filter_map(|e| Some((e.name.clone(), e.mtime?))));
        let on_the_way = |d: &str| {
            last.is_some_and(|l| {
                l.len() > d.len() && l.starts_with(d) && l.as_bytes()[d.len()] == b'/'
            })
        };
        let (carry, now): (Vec<_>, Vec<_>) = dirs.into_iter().partition(|(d, _)| on_the_way(d));
        self.carried = carry;
        let Holding::Staged { sub, .. } = &self.holding else {
            return;
        };
        let mut now = now;
        now.sort_by_key(|(d, _)| std::cmp::Reverse(d.matches('/').count()));
        let mut w = Walker::new(sub.as_fd());
        for (d, t) in now {
            if w.goto(&d, None).is_ok() {
                let _ = sys::set_mtime(w.fd(), t.secs, t.nanos);
            }
        }
    }

    /// Before a commit of a transfer in parts: the last directories get
    /// their times in staging; returns the top-level ones' (given again
    /// once in place).
    pub(super) fn stamp_last_dirs(&mut self) -> Vec<(OsString, crate::protocol::Mtime)> {
        if !self.store.times {
            return Vec::new();
        }
        let tops: Vec<_> = self
            .carried
            .iter()
            .map(|(d, t)| (d.as_str(), Some(*t)))
            .chain(
                (self.offer.entries.iter())
                    .filter(|e| e.is_dir)
                    .map(|e| (e.name.as_str(), e.mtime)),
            )
            .filter(|(d, _)| !d.contains('/'))
            .filter_map(|(d, t)| Some((OsString::from(d), t?)))
            .collect();
        self.stamp_part_dirs(None);
        tops
    }

    /// On a cut transfer in parts: the files of the earlier parts (whole,
    /// in the staging trees) are kept for a resume like the current part's.
    pub(super) fn keep_earlier_parts(&mut self) {
        let Some(secret) = self.secret else {
            return;
        };
        if self.kept.is_none() {
            self.kept = self.root.as_ref().and_then(|r| kept::open(r.as_fd(), true));
        }
        let (Some(kept), Holding::Staged { sub, .. }) = (&self.kept, &self.holding) else {
            return;
        };
        let mut names = Vec::new();
        keep_tree(
            sub.as_fd(),
            "",
            kept.as_fd(),
            &secret,
            STAGED_DEPTH,
            &mut names,
        );
        if let Some(here) = &self.store.kept_here {
            super::lock(here).extend(names);
        }
    }
}

/// Moves every regular file of this user below `dir` (named `prefix` in
/// the transfer) into `kept` under its kept name; `names` gets each.
fn keep_tree(
    dir: BorrowedFd<'_>,
    prefix: &str,
    kept: BorrowedFd<'_>,
    secret: &crate::digest::Hash,
    depth: usize,
    names: &mut Vec<OsString>,
) {
    let me = sys::euid();
    for f in sys::list_dir(dir).unwrap_or_default() {
        let leaf = OsStr::from_bytes(f.as_bytes());
        let Ok(text) = std::str::from_utf8(f.as_bytes()) else {
            continue;
        };
        let name = match prefix {
            "" => text.to_string(),
            p => format!("{p}/{text}"),
        };
        match sys::stat_at(dir, leaf) {
            Ok(Some(st)) if st.uid == me && st.kind == Kind::Dir && depth > 0 => {
                if let Ok(sub) = sys::open_dir_at(dir, leaf) {
                    keep_tree(sub.as_fd(), &name, kept, secret, depth - 1, names);
                }
            }
            Ok(Some(st)) if st.uid == me && st.kind == Kind::File && st.size > 0 => {
                let to = kept::name(secret, &name, st.size);
                if sys::rename_between(dir, leaf, kept, &to).is_ok() {
                    names.push(to);
                }
            }
            _ => {}
        }
    }
}
