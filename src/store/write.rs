//! The write path: the transfer's bytes, in offer order, into the file
//! whose turn it is (created on first use, held or staged), a stream to
//! standard output or its file, and the sender's END checked against what
//! arrived.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::AsFd;

use super::fail::{io_fail, walk_fail};
use super::walk::{Walker, split_parent};
use super::write_behind::WRITE_BEHIND_EVERY;
use super::{Fail, Holding, Transfer, lock, out_dir};
use crate::protocol::{RejectCode, TransferKind, escape_name};
use crate::sys;

impl Transfer {
    pub(super) fn size_of(&self, file: usize) -> u64 {
        self.files
            .get(file)
            .map_or(0, |&i| self.offer.entries[i as usize].size)
    }

    /// Stores the next bytes of the transfer, in offer order.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), Fail> {
        if self.offer.kind == TransferKind::Stream {
            return self.write_slices(&[io::IoSlice::new(data)]);
        }
        while !data.is_empty() {
            while self.left == 0 {
                self.advance()?;
            }
            let n = (data.len() as u64).min(self.left) as usize;
            let r = self.current_file()?.write_all(&data[..n]);
            r.map_err(|e| io_fail(format!("cannot write {}", self.current_name()), e))?;
            if let Some(c) = self.chunker.as_mut() {
                c.update(&data[..n]);
            }
            self.left -= n as u64;
            self.account(n as u64);
            data = &data[n..];
        }
        Ok(())
    }

    /// Stores the next bytes of the transfer given as slices, in offer
    /// order: one vectored write per file they fall in, not one per slice.
    pub fn write_slices(&mut self, bufs: &[io::IoSlice<'_>]) -> Result<(), Fail> {
        let mut total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.offer.kind == TransferKind::Stream {
            let r = match &mut self.holding {
                Holding::Stdout => write_prefix(&mut sys::RawStdout, bufs, total)
                    .map_err(|e| io_fail("cannot write to standard output".into(), e)),
                Holding::Device(f) => write_prefix(&mut &**f, bufs, total).map_err(|e| {
                    io_fail(format!("cannot write {}", self.store.display.display()), e)
                }),
                Holding::Held(v) => match v.first_mut() {
                    Some(Some(f)) => write_prefix(f, bufs, total).map_err(|e| {
                        io_fail(format!("cannot write {}", self.store.display.display()), e)
                    }),
                    _ => Ok(()),
                },
                Holding::Staged { .. } => Err((RejectCode::Io, "stream staged".into())),
            };
            r?;
            self.written += total as u64;
            return Ok(());
        }
        let mut rest: Vec<io::IoSlice<'_>> = bufs.to_vec();
        let mut rest = &mut rest[..];
        while total > 0 {
            while self.left == 0 {
                self.advance()?;
            }
            let n = (total as u64).min(self.left) as usize;
            let r = write_prefix(self.current_file()?, rest, n);
            r.map_err(|e| io_fail(format!("cannot write {}", self.current_name()), e))?;
            if let Some(c) = self.chunker.as_mut() {
                hash_first(c, rest, n);
            }
            self.left -= n as u64;
            self.account(n as u64);
            io::IoSlice::advance_slices(&mut rest, n);
            total -= n;
        }
        Ok(())
    }

    fn account(&mut self, n: u64) {
        let before = self.written / WRITE_BEHIND_EVERY;
        self.written += n;
        if self.written / WRITE_BEHIND_EVERY != before {
            self.write_behind();
        }
        let r = n.min(self.reserved);
        self.reserved -= r;
        self.store.release(r);
    }

    fn current_name(&self) -> String {
        self.files.get(self.current).map_or_else(String::new, |&i| {
            escape_name(&self.offer.entries[i as usize].name)
        })
    }

    /// The file receiving data now, made on first use (from the kept
    /// partial file when there is one).
    fn current_file(&mut self) -> Result<&mut File, Fail> {
        if self.current >= self.files.len() {
            return Err((
                RejectCode::Protocol,
                "the sender sent more bytes than it announced".into(),
            ));
        }
        if self.opened <= self.current {
            self.make_current()?;
        }
        let f = match &mut self.holding {
            Holding::Held(v) => v[self.current].as_mut(),
            Holding::Staged { open, .. } => open.as_mut(),
            Holding::Stdout | Holding::Device(_) => None,
        };
        f.ok_or((RejectCode::Io, "file missing".into()))
    }

    /// Makes the current file: new, or the kept partial file moved into
    /// place; then gets it ready for its data (see `prepare`).
    fn make_current(&mut self) -> Result<(), Fail> {
        let (cur, entry) = (self.current, self.files[self.current]);
        // Its final mode from the start: the staging directory is private.
        let staged_mode = self.file_mode(cur);
        let raw = self.offer.entries[entry as usize].name.clone();
        let fail = |e| io_fail(format!("cannot create {}", escape_name(&raw)), e);
        let kept_fd = self.kept.as_ref().and_then(|k| sys::dup(k.as_fd()).ok());
        let taken = self.take_kept(cur);
        let mut moved = false;
        let file = match (&mut self.holding, taken, kept_fd) {
            (Holding::Held(_), Some((f, _)), _) => f,
            (Holding::Held(_), None, _) => {
                let store = self.store.clone();
                let _g = lock(&store.walk);
                let mut w = Walker::new(out_dir(&self.root)?);
                let parent = split_parent(&raw).0;
                w.goto(parent, None).map_err(|e| walk_fail(&raw, e))?;
                sys::tmpfile_in(w.fd(), 0o600).map_err(fail)?
            }
            (Holding::Staged { sub, tree, .. }, Some((f, own)), Some(kept)) => {
                match tree {
                    Some(t) => t.adopt(sub.as_fd(), &raw, kept.as_fd(), &own),
                    None => sys::rename_noreplace(
                        kept.as_fd(),
                        &own,
                        sub.as_fd(),
                        OsStr::new(&cur.to_string()),
                    ),
                }
                .map_err(fail)?;
                moved = true;
                f
            }
            (Holding::Staged { sub, tree, .. }, _, _) => match tree {
                Some(t) => t.create(sub.as_fd(), &raw, staged_mode),
                None => sys::create_new_at(sub.as_fd(), OsStr::new(&cur.to_string()), staged_mode),
            }
            .map_err(fail)?,
            (Holding::Stdout | Holding::Device(_), _, _) => {
                return Err((RejectCode::Io, "no file".into()));
            }
        };
        if moved {
            self.kept_moved(cur);
        }
        self.opened = cur + 1;
        self.prepare(cur, &file)?;
        match &mut self.holding {
            Holding::Held(v) => v[cur] = Some(file),
            Holding::Staged { open, .. } => *open = Some(file),
            Holding::Stdout | Holding::Device(_) => {}
        }
        Ok(())
    }

    /// Moves on to the next range of the current file, or to the next file.
    fn advance(&mut self) -> Result<(), Fail> {
        if self.current >= self.files.len() {
            return Err((
                RejectCode::Protocol,
                "the sender sent more bytes than it announced".into(),
            ));
        }
        self.start_file();
        let Some((a, b)) = self.ranges.as_mut().and_then(Vec::pop) else {
            return self.next_file();
        };
        // Only a file built on a basis skips: the others are written in order.
        if self.plans[self.current].is_some() {
            let r = self.current_file()?.seek(io::SeekFrom::Start(a));
            r.map_err(|e| io_fail(format!("cannot write {}", self.current_name()), e))?;
        }
        if let Some(c) = self.chunker.as_mut() {
            c.seek(a);
        }
        self.left = b - a;
        Ok(())
    }

    /// The current file's ranges and chunker, unless already started.
    fn start_file(&mut self) {
        if self.ranges.is_none() {
            let mut r = self.file_ranges(self.current);
            r.reverse();
            self.ranges = Some(r);
            self.chunker = Some(self.chunker_for(self.current));
        }
    }

    /// Closes the current file (making sure it exists, even when empty,
    /// unless the receiver keeps the one it has) and moves to the next.
    fn next_file(&mut self) -> Result<(), Fail> {
        if self.current >= self.files.len() {
            return Err((
                RejectCode::Protocol,
                "the sender sent more bytes than it announced".into(),
            ));
        }
        self.start_file();
        if !self.keeps_existing(self.current) {
            self.current_file()?;
        }
        let closing = match &mut self.holding {
            // One descriptor at a time: the staged file is named, so close it.
            Holding::Staged { open, .. } => open.take(),
            _ => None,
        };
        if let Some(f) = closing {
            // Created with its final mode when the kernel applies the same
            // umask (always, outside tests): no chmod (a journaled inode
            // update) per file.
            if self.store.umask != self.store.kernel_umask {
                let mode = self.file_mode(self.current);
                sys::fchmod(f.as_fd(), mode)
                    .map_err(|e| io_fail("cannot set a file's mode".into(), e))?;
            }
            self.stamp_file(f.as_fd(), self.current)?;
        }
        self.seal_digest(self.current);
        self.current += 1;
        self.ranges = None;
        self.chunker = None;
        self.left = 0;
        Ok(())
    }

    pub(super) fn file_mode(&self, file: usize) -> u32 {
        let m = self
            .files
            .get(file)
            .map_or(0o644, |&i| self.offer.entries[i as usize].mode);
        m & 0o777 & !self.store.umask
    }

    /// Checks the sender's END against what arrived and creates the empty
    /// files at the end of the offer.
    pub fn finish(&mut self, files: u32, bytes: u64) -> Result<(), Fail> {
        // A transfer in parts: END counts the current part.
        let here = self.written - self.before.written;
        if bytes != here {
            return Err((
                RejectCode::Protocol,
                format!("the sender claims {bytes} bytes but {here} arrived"),
            ));
        }
        if self.offer.kind == TransferKind::Stream {
            return Ok(());
        }
        let expected = self.expected_bytes();
        if files != self.offer.file_count() || bytes != expected {
            return Err((
                RejectCode::Protocol,
                format!(
                    "the sender announced {} file(s) and {expected} bytes but ended after {files} and {bytes}",
                    self.offer.file_count(),
                ),
            ));
        }
        while self.current < self.files.len() {
            self.next_file()?;
        }
        Ok(())
    }
}

/// Hashes exactly the first `n` bytes of `bufs`.
fn hash_first(c: &mut crate::digest::Chunker, bufs: &[io::IoSlice<'_>], mut n: usize) {
    for b in bufs {
        if n == 0 {
            break;
        }
        let k = b.len().min(n);
        c.update(&b[..k]);
        n -= k;
    }
}

/// Writes exactly the first `n` bytes of `bufs` to `w`, vectored.
fn write_prefix(w: &mut impl Write, bufs: &[io::IoSlice<'_>], n: usize) -> io::Result<()> {
    let mut v = Vec::with_capacity(bufs.len());
    let mut want = n;
    for b in bufs {
        if want == 0 {
            break;
        }
        let k = b.len().min(want);
        v.push(io::IoSlice::new(&b[..k]));
        want -= k;
    }
    let mut v = &mut v[..];
    while !v.is_empty() {
        match w.write_vectored(v) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => io::IoSlice::advance_slices(&mut v, k),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
