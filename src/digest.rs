//! Content digests both ends compute the same way: every file is cut into
//! fixed-size chunks, each chunk hashed with BLAKE3, and the file's digest
//! is BLAKE3 over the chunk hashes and the size. The chunk hashes are what
//! resume and `--update` compare (a chunk whose hash matches is not sent
//! again); the file digest is what the receipt carries.

/// The smallest chunk: 256 KiB.
pub const MIN_CHUNK: u64 = 256 * 1024;
/// Most chunks one file is cut into: larger files get larger chunks, so a
/// file's chunk hashes always fit in one control frame.
pub const MAX_CHUNKS: u64 = 16 * 1024;

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// The chunk size for a file of `size` bytes: [`MIN_CHUNK`], doubled until
/// the file has at most [`MAX_CHUNKS`] chunks.
pub fn chunk_size(size: u64) -> u64 {
    MIN_CHUNK.max(size.div_ceil(MAX_CHUNKS).next_power_of_two())
}

/// How many chunks a file of `size` bytes has (none when empty).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(chunk_size(size))
}

/// The byte range of chunk `i` of a file of `size` bytes.
pub fn chunk_range(size: u64, i: u64) -> (u64, u64) {
    let cs = chunk_size(size);
    let start = i * cs;
    (start, (start + cs).min(size))
}

/// The byte ranges of the chunks flagged in `send` of a file of `size`
/// bytes, adjacent chunks joined: what travels of it.
pub fn sent_ranges(size: u64, send: &[bool]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, _) in send.iter().enumerate().filter(|(_, s)| **s) {
        let (a, b) = chunk_range(size, i as u64);
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

/// A file's digest from its chunk hashes and size.
pub fn file_digest(chunks: &[Hash], size: u64) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"pincat file digest v1\0");
    for c in chunks {
        h.update(c);
    }
    h.update(&size.to_le_bytes());
    *h.finalize().as_bytes()
}

/// Hashes a file's bytes as they go by, chunk by chunk: bytes must come in
/// order from the start of a chunk (a sender's or receiver's range always
/// starts on one).
pub struct Chunker {
    size: u64,
    chunk: u64,
    /// Where the next byte falls in the file.
    pos: u64,
    hasher: blake3::Hasher,
    /// Each chunk's hash, once known (from the bytes, or given).
    hashes: Vec<Option<Hash>>,
}

impl Chunker {
    /// A chunker for a file of `size` bytes, nothing hashed yet.
    pub fn new(size: u64) -> Chunker {
        Chunker {
            size,
            chunk: chunk_size(size),
            pos: 0,
            hasher: blake3::Hasher::new(),
            hashes: vec![None; chunk_count(size) as usize],
        }
    }

    /// Bytes from here on start at `pos` (the start of a chunk).
    pub fn seek(&mut self, pos: u64) {
        debug_assert!(pos.is_multiple_of(self.chunk) || pos == self.size);
        self.pos = pos;
        self.hasher.reset();
    }

    /// Chunk `i`'s hash is known without its bytes (a chunk kept from before).
    pub fn given(&mut self, i: u64, h: Hash) {
        if let Some(slot) = self.hashes.get_mut(i as usize) {
            *slot = Some(h);
        }
    }

    /// The next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.pos < self.size {
            let end = ((self.pos / self.chunk) + 1) * self.chunk;
            let n = (data.len() as u64).min(end.min(self.size) - self.pos) as usize;
            self.hasher.update(&data[..n]);
            self.pos += n as u64;
            data = &data[n..];
            if self.pos == end.min(self.size) {
                let i = ((self.pos - 1) / self.chunk) as usize;
                self.hashes[i] = Some(*self.hasher.finalize().as_bytes());
                self.hasher.reset();
            }
        }
    }

    /// The file's digest, once every chunk's hash is known.
    pub fn digest(&self) -> Option<Hash> {
        let all: Option<Vec<Hash>> = self.hashes.iter().copied().collect();
        all.map(|c| file_digest(&c, self.size))
    }
}

/// The hashes of the whole chunks of `size`-byte file's chunking that a
/// reader yields, up to `have` bytes (a shorter last chunk is not hashed:
/// it cannot match a whole chunk of the source). Stops at the first error.
pub fn hash_prefix(r: &mut impl std::io::Read, size: u64, have: u64) -> std::io::Result<Vec<Hash>> {
    let cs = chunk_size(size);
    let whole = (have.min(size) / cs) as usize;
    // The file's last chunk may be short: it counts when `have` covers it.
    let last_short = have >= size && !size.is_multiple_of(cs);
    let n = whole + usize::from(last_short);
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; cs.min(1 << 20) as usize];
    for i in 0..n {
        let (start, end) = chunk_range(size, i as u64);
        let mut h = blake3::Hasher::new();
        let mut left = end - start;
        while left > 0 {
            let k = (left as usize).min(buf.len());
            r.read_exact(&mut buf[..k])?;
            h.update(&buf[..k]);
            left -= k as u64;
        }
        out.push(*h.finalize().as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_keep_the_count_bounded() {
        assert_eq!(chunk_size(0), MIN_CHUNK);
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(MIN_CHUNK * MAX_CHUNKS), MAX_CHUNKS);
        assert_eq!(chunk_size(MIN_CHUNK * MAX_CHUNKS + 1), MIN_CHUNK * 2);
        assert!(chunk_count(1 << 50) <= MAX_CHUNKS);
        assert_eq!(chunk_range(MIN_CHUNK + 10, 1), (MIN_CHUNK, MIN_CHUNK + 10));
    }

    #[test]
    fn the_chunker_agrees_with_whole_chunks_however_bytes_arrive() {
        let size = MIN_CHUNK * 2 + 777;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Chunker::new(size);
        whole.update(&data);
        let mut pieces = Chunker::new(size);
        for p in data.chunks(1000) {
            pieces.update(p);
        }
        assert_eq!(whole.digest(), pieces.digest());
        let hashes = hash_prefix(&mut &data[..], size, size).unwrap();
        assert_eq!(hashes.len(), 3);
        assert_eq!(whole.digest(), Some(file_digest(&hashes, size)));
        // Chunk 1 given, chunks 0 and 2 from bytes: the same digest.
        let mut mixed = Chunker::new(size);
        mixed.update(&data[..MIN_CHUNK as usize]);
        mixed.given(1, hashes[1]);
        mixed.seek(MIN_CHUNK * 2);
        mixed.update(&data[(MIN_CHUNK * 2) as usize..]);
        assert_eq!(mixed.digest(), whole.digest());
        // A partial prefix hashes only its whole chunks.
        let part = hash_prefix(&mut &data[..], size, MIN_CHUNK + 5).unwrap();
        assert_eq!(part, hashes[..1]);
        let mut other = data.clone();
        other[5] ^= 1;
        let mut changed = Chunker::new(size);
        changed.update(&other);
        assert_ne!(changed.digest(), whole.digest());
    }
}
