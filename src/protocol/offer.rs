//! The OFFER payload: what a giver announces (a stream, or named files and
//! directories of known sizes), its encoding and the checks on decode.

use std::ops::Range;

use super::{Cursor, MAX_ENTRIES, NameError, ProtocolError, escape_name, validate_name};

/// What kind of transfer an offer announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// One unnamed byte stream of unknown length.
    Stream,
    /// Named files and directories of known sizes.
    Files,
}

/// One offered file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative, '/'-separated path.
    pub name: String,
    /// True for a directory (size 0, no data).
    pub is_dir: bool,
    /// Unix permission bits as the sender has them.
    pub mode: u32,
    /// Exact number of bytes that follow for this file.
    pub size: u64,
    /// Its modification time at the sender, which the receiver gives what
    /// it creates (`None`: the receiver's clock).
    pub mtime: Option<Mtime>,
    /// For a symbolic link: its target, as the link holds it (size 0, no
    /// data; never a directory).
    pub link: Option<String>,
}

impl Entry {
    /// A regular file: its bytes follow in the data.
    pub fn is_file(&self) -> bool {
        !self.is_dir && self.link.is_none()
    }
}

/// The longest symbolic link target an offer may carry (Linux's PATH_MAX).
pub const MAX_LINK_TARGET: usize = 4095;

/// A modification time: seconds since the Unix epoch (negative before it)
/// and nanoseconds within that second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtime {
    /// Whole seconds since 1970-01-01 UTC.
    pub secs: i64,
    /// Nanoseconds, below 1,000,000,000.
    pub nanos: u32,
}

/// The sender's description of the transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Stream or files.
    pub kind: TransferKind,
    /// Files and directories, in the order their data follows (empty for a stream).
    pub entries: Vec<Entry>,
    /// What the giver found in the offered directories and does not send
    /// (symbolic links, special files), by name, so the taker can say so.
    pub skipped: Vec<String>,
    /// `--update`: files the taker has already are compared, not refused.
    pub update: bool,
    /// `--checksum`: compare by content, not by size and time.
    pub checksum: bool,
    /// One part of a transfer in parts (a tree too large to offer whole):
    /// another part's OFFER follows this part's END and DIGESTS.
    pub continued: bool,
}

impl Offer {
    /// Total announced bytes (files only).
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// Whether the giver sends data before the taker's ACCEPT: for a
    /// stream, or files of at most [`EARLY_DATA`](super::EARLY_DATA) bytes
    /// without `--update`. Only an offer without early data gets BASIS.
    pub fn early_data(&self) -> bool {
        self.kind == TransferKind::Stream
            || (!self.update && self.total_bytes() <= super::EARLY_DATA)
    }

    /// Number of regular files (none in a stream, named or not).
    pub fn file_count(&self) -> u32 {
        match self.kind {
            TransferKind::Stream => 0,
            TransferKind::Files => self.entries.iter().filter(|e| e.is_file()).count() as u32,
        }
    }

    /// The name a stream asked to be stored under (`send --as NAME`).
    pub fn stream_name(&self) -> Option<&str> {
        match self.kind {
            TransferKind::Stream => self.entries.first().map(|e| e.name.as_str()),
            TransferKind::Files => None,
        }
    }

    /// Encodes the payload of one OFFER frame holding the whole offer.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_part(&self.entries, &self.skipped, false)
    }

    /// Encodes the offer as OFFER payloads of at most `max` bytes each
    /// (entries in order; every payload but the last says more follow).
    /// `None` when one entry alone does not fit.
    pub fn encode_frames(&self, max: usize) -> Option<Vec<Vec<u8>>> {
        let ranges = self.frame_ranges(max)?;
        let n = ranges.len();
        Some(
            ranges
                .into_iter()
                .enumerate()
                .map(|(i, r)| self.encode_frame(r, i + 1 == n))
                .collect(),
        )
    }

    /// How [`Offer::encode_frames`] cuts the entries: one range per
    /// payload, so that a large offer can be encoded one payload at a time
    /// ([`Offer::encode_frame`]). `None` when one entry alone does not fit.
    pub fn frame_ranges(&self, max: usize) -> Option<Vec<Range<usize>>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        let mut len = HEAD_LEN + SKIPPED_HEAD;
        for (i, e) in self.entries.iter().enumerate() {
            let n = entry_len(e);
            if len + n > max {
                if i == start {
                    return None;
                }
                ranges.push(start..i);
                (start, len) = (i, HEAD_LEN + SKIPPED_HEAD);
            }
            len += n;
        }
        let skipped: usize = self.skipped.iter().map(|n| 2 + n.len()).sum();
        ranges.push(start..self.entries.len());
        if len + skipped > max {
            // The skipped names go alone, after the last entries.
            (HEAD_LEN + SKIPPED_HEAD + skipped <= max).then_some(())?;
            let end = self.entries.len();
            ranges.push(end..end);
        }
        Some(ranges)
    }

    /// One OFFER payload: the entries in `r`, and with `last` the skipped
    /// names (else the flag that more follow).
    pub fn encode_frame(&self, r: Range<usize>, last: bool) -> Vec<u8> {
        let skipped: &[String] = if last { &self.skipped } else { &[] };
        self.encode_part(&self.entries[r], skipped, !last)
    }

    pub(super) fn encode_part(&self, entries: &[Entry], skipped: &[String], more: bool) -> Vec<u8> {
        let mut v = Vec::new();
        v.push(match self.kind {
            TransferKind::Stream => 0,
            TransferKind::Files => 1,
        });
        v.push(
            u8::from(self.update)
                | u8::from(self.checksum) << 1
                | u8::from(more) << 2
                | u8::from(self.continued) << 3,
        );
        v.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for e in entries {
            v.push(match (e.is_dir, &e.link) {
                (true, _) => 1,
                (false, Some(_)) => 2,
                (false, None) => 0,
            });
            v.extend_from_slice(&e.mode.to_be_bytes());
            v.extend_from_slice(&e.size.to_be_bytes());
            match e.mtime {
                Some(t) => {
                    v.push(1);
                    v.extend_from_slice(&t.secs.to_be_bytes());
                    v.extend_from_slice(&t.nanos.to_be_bytes());
                }
                None => v.push(0),
            }
            v.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
            v.extend_from_slice(e.name.as_bytes());
            if let Some(t) = &e.link {
                v.extend_from_slice(&(t.len() as u16).to_be_bytes());
                v.extend_from_slice(t.as_bytes());
            }
        }
        v.extend_from_slice(&(skipped.len() as u32).to_be_bytes());
        for name in skipped {
            v.extend_from_slice(&(name.len() as u16).to_be_bytes());
            v.extend_from_slice(name.as_bytes());
        }
        v
    }

    /// Decodes and validates an OFFER payload that holds the whole offer:
    /// every name is checked, sizes cannot overflow, names are unique and
    /// no file is another entry's parent.
    pub fn decode(p: &[u8]) -> Result<Offer, ProtocolError> {
        let (offer, more) = Offer::decode_part(p)?;
        if more {
            return Err(ProtocolError::Malformed("OFFER"));
        }
        offer.check()?;
        Ok(offer)
    }

    /// Adds the next OFFER payload's entries (and skipped names) to this
    /// offer; the kind and flags must be the same.
    pub fn extend(&mut self, next: Offer) -> Result<(), ProtocolError> {
        let flags = |o: &Offer| (o.kind, o.update, o.checksum, o.continued);
        let same = flags(&next) == flags(self);
        let total = self.total_bytes().checked_add(next.total_bytes());
        if !same || total.is_none() {
            return Err(ProtocolError::Malformed("OFFER"));
        }
        self.entries.extend(next.entries);
        self.skipped.extend(next.skipped);
        Ok(())
    }

    /// The whole offer's checks once every part is in: at least one entry
    /// for files, names unique, no file another entry's parent.
    pub fn check(&self) -> Result<(), ProtocolError> {
        if self.kind == TransferKind::Files && self.entries.is_empty() {
            return Err(ProtocolError::Malformed("OFFER"));
        }
        // A stream's name: one plain file name, no size, no directories.
        let named_wrong =
            |e: &Entry| !e.is_file() || e.size != 0 || e.name.contains('/') || e.mtime.is_some();
        if self.kind == TransferKind::Stream && self.entries.iter().any(named_wrong) {
            return Err(ProtocolError::Malformed("OFFER"));
        }
        check_tree(&self.entries)?;
        Ok(())
    }

    /// Decodes one OFFER payload, each name and size checked, and whether
    /// more payloads of the same offer follow. The checks across entries
    /// are [`Offer::check`], once the offer is whole.
    pub fn decode_part(p: &[u8]) -> Result<(Offer, bool), ProtocolError> {
        const M: ProtocolError = ProtocolError::Malformed("OFFER");
        let mut r = Cursor(p);
        let kind = match r.u8().ok_or(M)? {
            0 => TransferKind::Stream,
            1 => TransferKind::Files,
            _ => return Err(M),
        };
        let flags = r.u8().ok_or(M)?;
        if flags & !15 != 0 || (kind == TransferKind::Stream && flags != 0) {
            return Err(M);
        }
        let count = r.u32().ok_or(M)? as usize;
        // A stream has no entries, or one: its name (`send --as NAME`).
        if count > MAX_ENTRIES || (kind == TransferKind::Stream && count > 1) {
            return Err(M);
        }
        let mut entries = Vec::with_capacity(count.min(1024));
        let mut total: u64 = 0;
        for _ in 0..count {
            let (is_dir, is_link) = match r.u8().ok_or(M)? {
                0 => (false, false),
                1 => (true, false),
                2 => (false, true),
                _ => return Err(M),
            };
            let mode = r.u32().ok_or(M)?;
            let size = r.u64().ok_or(M)?;
            let mtime = match r.u8().ok_or(M)? {
                0 => None,
                1 => {
                    let secs = r.u64().ok_or(M)? as i64;
                    let nanos = r.u32().ok_or(M)?;
                    if nanos >= 1_000_000_000 {
                        return Err(M);
                    }
                    Some(Mtime { secs, nanos })
                }
                _ => return Err(M),
            };
            let len = r.u16().ok_or(M)? as usize;
            let raw = r.take(len).ok_or(M)?;
            let name = std::str::from_utf8(raw)
                .map_err(|_| NameError::NotUtf8)?
                .to_owned();
            validate_name(&name)?;
            let link = match is_link {
                true => Some(link_target(&mut r)?),
                false => None,
            };
            if (is_dir || is_link) && size != 0 {
                return Err(M);
            }
            total = total.checked_add(size).ok_or(M)?;
            entries.push(Entry {
                name,
                is_dir,
                mode,
                size,
                mtime,
                link,
            });
        }
        let skipped = skipped_names(&mut r, kind)?;
        if !r.0.is_empty() {
            return Err(M);
        }
        let offer = Offer {
            kind,
            entries,
            skipped,
            update: flags & 1 != 0,
            checksum: flags & 2 != 0,
            continued: flags & 8 != 0,
        };
        Ok((offer, flags & 4 != 0))
    }
}

/// Bytes of an OFFER payload before its entries: kind, flags, count.
const HEAD_LEN: usize = 6;
/// Bytes of the skipped names' count.
const SKIPPED_HEAD: usize = 4;

/// Encoded size of one entry.
fn entry_len(e: &Entry) -> usize {
    let time = if e.mtime.is_some() { 13 } else { 1 };
    let link = e.link.as_ref().map_or(0, |t| 2 + t.len());
    1 + 4 + 8 + time + 2 + e.name.len() + link
}

/// A symbolic link's target: 1 to [`MAX_LINK_TARGET`] bytes of UTF-8, no
/// NUL (what a link can hold). Where it points is the receiver's to judge.
fn link_target(r: &mut Cursor<'_>) -> Result<String, ProtocolError> {
    const M: ProtocolError = ProtocolError::Malformed("OFFER");
    let len = r.u16().ok_or(M)? as usize;
    let raw = r.take(len).ok_or(M)?;
    if raw.is_empty() || raw.len() > MAX_LINK_TARGET || raw.contains(&0) {
        return Err(M);
    }
    let t = std::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)?;
    Ok(t.to_owned())
}

/// The names of what the giver skipped: valid names, at most as many as
/// entries may be, none for a stream.
fn skipped_names(r: &mut Cursor<'_>, kind: TransferKind) -> Result<Vec<String>, ProtocolError> {
    const M: ProtocolError = ProtocolError::Malformed("OFFER");
    let count = r.u32().ok_or(M)? as usize;
    if count > MAX_ENTRIES || (kind == TransferKind::Stream && count != 0) {
        return Err(M);
    }
    let mut names = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = r.u16().ok_or(M)? as usize;
        let raw = r.take(len).ok_or(M)?;
        let name = std::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)?;
        validate_name(name)?;
        names.push(name.to_owned());
    }
    Ok(names)
}

/// Names must be unique, and a file cannot also be a parent of another entry.
fn check_tree(entries: &[Entry]) -> Result<(), NameError> {
    // Sorted component by component, every entry's descendants follow it
    // directly, so comparing neighbours finds duplicates and files used as
    // directories in O(total name length * log n); checking every prefix
    // of every name was quadratic in the depth.
    let mut order: Vec<&Entry> = entries.iter().collect();
    order.sort_unstable_by(|a, b| a.name.split('/').cmp(b.name.split('/')));
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let under = b.name.len() > a.name.len()
            && b.name.starts_with(a.name.as_str())
            && b.name.as_bytes()[a.name.len()] == b'/';
        if a.name == b.name || (under && !a.is_dir) {
            return Err(NameError::Duplicate(escape_name(&b.name)));
        }
    }
    Ok(())
}
