//! Reading the planned files for sending: each file's chunks that the taker
//! needs (all of them unless it has a basis), back to back, hashed on the
//! way so the sender knows every file's digest; a file that is not the
//! planned one, or that changed while it was read, is an error, never a
//! torn or substituted copy.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::files::{Dirs, Local, Place, Stamp, Walked, changed, file_error};
use crate::digest::{self, Chunker, Hash};

/// What of one file is sent.
#[derive(Debug, Clone, Default)]
pub(super) enum Part {
    /// All of it (no basis at the taker).
    #[default]
    All,
    /// Nothing: the taker keeps what it has (same size and time).
    Skip,
    /// Some chunks (see [`Chunks`]).
    Chunks(Box<Chunks>),
}

/// The chunks flagged true are sent; the others the taker has, and their
/// hashes are known here from when the file was compared.
#[derive(Debug, Clone)]
pub(super) struct Chunks {
    pub(super) send: Vec<bool>,
    pub(super) known: Vec<Hash>,
    /// The file as it was when compared: it must not change until sent.
    pub(super) compared: Stamp,
}

/// The planned files' chunks back to back, exactly as planned.
pub(super) struct FileSeq {
    files: Vec<Local>,
    /// The directories `files` are in.
    places: Vec<Place>,
    /// Their names, back to back (see [`Local::leaf_end`]).
    leaves: Vec<u8>,
    parts: Vec<Part>,
    next: usize,
    cur: Option<Reading>,
    dirs: Dirs,
    /// The first 8 bytes of each file's digest once read (0 for a
    /// skipped one): enough to name a file whose copy differs, in 8 bytes
    /// a file instead of 33.
    prefixes: Vec<u64>,
    /// Every file's digest (or its absence), in order, hashed: what the
    /// taker's digests must hash to.
    all: blake3::Hasher,
}

impl FileSeq {
    /// Reads the files a walk planned, in order.
    pub(super) fn of(walked: Walked) -> Self {
        let (files, places, leaves) = (walked.locals, walked.places, walked.leaves);
        let n = files.len();
        FileSeq {
            files,
            places,
            leaves,
            parts: Vec::new(),
            next: 0,
            cur: None,
            dirs: Dirs::default(),
            prefixes: vec![0; n],
            all: blake3::Hasher::new(),
        }
    }

    /// How many files there are.
    pub(super) fn len(&self) -> usize {
        self.files.len()
    }

    /// The planned size of file `i`.
    pub(super) fn size(&self, i: usize) -> u64 {
        self.files[i].planned.size
    }

    /// Sets what of file `i` is sent.
    pub(super) fn set_part(&mut self, i: usize, part: Part) {
        // Made only when a file is not sent whole: a plain plan of a
        // million files needs none.
        if self.parts.is_empty() {
            self.parts = vec![Part::All; self.files.len()];
        }
        self.parts[i] = part;
    }

    /// What of file `i` is sent.
    fn part(&self, i: usize) -> &Part {
        self.parts.get(i).unwrap_or(&Part::All)
    }

    /// Files skipped because the taker has them unchanged (by size and
    /// time: not verified).
    pub(super) fn skipped(&self) -> u32 {
        self.parts
            .iter()
            .filter(|p| matches!(p, Part::Skip))
            .count() as u32
    }

    /// Bytes of every planned file.
    pub(super) fn total(&self) -> u64 {
        self.files.iter().map(|l| l.planned.size).sum()
    }

    /// Bytes that will be sent, after the parts were set.
    pub(super) fn to_send(&self) -> u64 {
        (0..self.files.len())
            .map(|i| {
                ranges(self.part(i), self.size(i))
                    .iter()
                    .map(|(a, b)| b - a)
                    .sum::<u64>()
            })
            .sum()
    }

    /// The hashes of the first `n` chunks of file `i` (its planned file,
    /// checked as when sending), and the file's stamp when hashed.
    pub(super) fn hash_prefix(&mut self, i: usize, n: usize) -> io::Result<(Vec<Hash>, Stamp)> {
        let size = self.size(i);
        let have = match digest::chunk_range(size, n as u64) {
            (start, _) if (n as u64) < digest::chunk_count(size) => start,
            _ => size,
        };
        let (real, shown) = self.paths(i);
        let planned = self.files[i].planned;
        let mut r = Reading::open(&real, shown, planned, &mut self.dirs, None, &Part::All)?;
        let path = r.path.clone();
        let hashes =
            digest::hash_prefix(&mut r.file, size, have).map_err(|e| read_error(&path, e))?;
        Ok((hashes, r.at_open))
    }

    /// Where file `i` is: resolved, and as the user wrote it.
    fn paths(&self, i: usize) -> (PathBuf, PathBuf) {
        let l = &self.files[i];
        let start = match i {
            0 => 0,
            _ => self.files[i - 1].leaf_end as usize,
        };
        let leaf = OsStr::from_bytes(&self.leaves[start..l.leaf_end as usize]);
        let p = &self.places[l.dir as usize];
        (p.real.join(leaf), p.shown.join(leaf))
    }

    /// Whether the taker's digest of file `i` can be ours: both absent
    /// (skipped), or the same first bytes (`None`: no such file). The whole
    /// of every digest is checked by [`FileSeq::all_digests`].
    pub(super) fn may_match(&self, i: usize, theirs: &Option<Hash>) -> Option<bool> {
        let ours = *self.prefixes.get(i)?;
        Some(match (theirs, self.part(i)) {
            (None, Part::Skip) => true,
            (Some(h), p) if !matches!(p, Part::Skip) => prefix(h) == ours,
            _ => false,
        })
    }

    /// Every file's digest in order, hashed (see [`add_digest`]),
    /// once everything was read.
    pub(super) fn all_digests(&self) -> Hash {
        *self.all.finalize().as_bytes()
    }
}

/// The first 8 bytes of a digest.
fn prefix(h: &Hash) -> u64 {
    u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// Adds one file's digest (or its absence) to a hash of all of them.
pub(super) fn add_digest(all: &mut blake3::Hasher, d: &Option<Hash>) {
    match d {
        Some(h) => all.update(&[1]).update(h),
        None => all.update(&[0]),
    };
}

/// A short read means the file shrank; anything else names the file.
fn read_error(path: &std::path::Path, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        changed(path)
    } else {
        file_error(path, "cannot read", e)
    }
}

/// The byte ranges of a file that are sent, adjacent chunks joined.
fn ranges(part: &Part, size: u64) -> Vec<(u64, u64)> {
    match part {
        Part::All if size == 0 => Vec::new(),
        Part::All => vec![(0, size)],
        Part::Skip => Vec::new(),
        Part::Chunks(c) => digest::sent_ranges(size, &c.send),
    }
}

impl Read for FileSeq {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(r) = self.cur.as_mut() {
                if let Some(n) = r.read_some(out)? {
                    return Ok(n);
                }
                r.finish()?;
                let done = self.next - 1;
                let d = r.chunker.digest();
                self.prefixes[done] = d.as_ref().map_or(0, prefix);
                add_digest(&mut self.all, &d);
                self.cur = None;
            }
            let Some(planned) = self.files.get(self.next).map(|l| l.planned) else {
                return Ok(0);
            };
            let (real, shown) = self.paths(self.next);
            let i = self.next;
            self.next += 1;
            let part = self.parts.get(i).unwrap_or(&Part::All);
            if matches!(part, Part::Skip) {
                add_digest(&mut self.all, &None);
                continue;
            }
            let compared = match part {
                Part::Chunks(c) => Some(c.compared),
                _ => None,
            };
            let r = Reading::open(&real, shown, planned, &mut self.dirs, compared, part)?;
            self.cur = Some(r);
        }
    }
}

/// One planned file, open and being read.
struct Reading {
    file: File,
    /// As the user wrote it, for messages.
    path: PathBuf,
    at_open: Stamp,
    /// The ranges still to send, last first.
    ranges: Vec<(u64, u64)>,
    /// Bytes left of the current range.
    left: u64,
    /// Where the next read starts (the file's offset; reads only move it).
    pos: u64,
    chunker: Chunker,
}

impl Reading {
    /// Opens the planned file; with `compared`, it must be exactly as it
    /// was then (nothing written since its chunks were compared).
    fn open(
        real: &Path,
        path: PathBuf,
        planned: Stamp,
        dirs: &mut Dirs,
        compared: Option<Stamp>,
        part: &Part,
    ) -> io::Result<Reading> {
        let file = match dirs.open(real) {
            Ok(f) => f,
            // O_NOFOLLOW refused: the file was replaced by a symbolic link.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(changed(&path)),
            Err(e) => return Err(file_error(&path, "cannot open", e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| file_error(&path, "cannot read", e))?;
        let at_open = Stamp::of(&meta);
        let same = match compared {
            Some(c) => at_open.unchanged_since(&c),
            None => at_open.same_file(&planned),
        };
        if !meta.is_file() || !same {
            return Err(changed(&path));
        }
        let mut chunker = Chunker::new(planned.size);
        if let Part::Chunks(c) = part {
            let (send, known) = (&c.send, &c.known);
            for (i, h) in known.iter().enumerate() {
                if !send.get(i).copied().unwrap_or(true) {
                    chunker.given(i as u64, *h);
                }
            }
        }
        let mut ranges = ranges(part, planned.size);
        ranges.reverse();
        Ok(Reading {
            file,
            path,
            at_open,
            ranges,
            left: 0,
            pos: 0,
            chunker,
        })
    }

    /// The next bytes of the file's ranges; `None` once all were read.
    fn read_some(&mut self, out: &mut [u8]) -> io::Result<Option<usize>> {
        while self.left == 0 {
            let Some((a, b)) = self.ranges.pop() else {
                return Ok(None);
            };
            if a != self.pos {
                self.file
                    .seek(SeekFrom::Start(a))
                    .map_err(|e| file_error(&self.path, "cannot read", e))?;
                self.pos = a;
            }
            self.chunker.seek(a);
            self.left = b - a;
        }
        let want = (out.len() as u64).min(self.left) as usize;
        let n = match self.file.read(&mut out[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(file_error(&self.path, "cannot read", e)),
        };
        if n == 0 {
            // It ends before the planned size: it shrank.
            return Err(changed(&self.path));
        }
        self.chunker.update(&out[..n]);
        self.left -= n as u64;
        self.pos += n as u64;
        Ok(Some(n))
    }

    /// After the planned bytes: fstat shows the same size, mtime and ctime
    /// as when the file was opened (no read past the planned size: a file
    /// that grew has a new size).
    fn finish(&mut self) -> io::Result<()> {
        let now = self
            .file
            .metadata()
            .map_err(|e| file_error(&self.path, "cannot read", e))?;
        if !Stamp::of(&now).unchanged_since(&self.at_open) {
            return Err(changed(&self.path));
        }
        Ok(())
    }
}
