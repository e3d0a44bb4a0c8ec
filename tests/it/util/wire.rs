//! pincat's wire format by hand, for peers that lie: offers built entry by
//! entry, frame scripts, and frames read back off any stream.

use std::io::{self, Read};

use pincat::protocol::{self, Entry, FrameType, Offer, TransferKind};

pub use pincat::protocol::frame;

/// A file entry of `size` bytes, mode 0644.
pub fn file(name: &str, size: u64) -> Entry {
    Entry {
        name: name.into(),
        is_dir: false,
        mode: 0o644,
        size,
        mtime: None,
        link: None,
    }
}

/// A directory entry, mode 0755.
pub fn dir(name: &str) -> Entry {
    Entry {
        name: name.into(),
        is_dir: true,
        mode: 0o755,
        size: 0,
        mtime: None,
        link: None,
    }
}

/// A files offer of `entries`.
pub fn files(entries: Vec<Entry>) -> Offer {
    Offer {
        kind: TransferKind::Files,
        entries,
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
    }
}

/// A stream offer.
pub fn stream() -> Offer {
    Offer {
        kind: TransferKind::Stream,
        entries: vec![],
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
    }
}

/// The encoded payload of a files offer of `(name, size)` files.
pub fn files_offer<S: AsRef<str>>(entries: &[(S, u64)]) -> Vec<u8> {
    files(entries.iter().map(|(n, s)| file(n.as_ref(), *s)).collect()).encode()
}

/// A whole transfer as a sender script: OFFER with `offer` (a payload),
/// one DATA frame of `data`, and END claiming `files` files of `bytes`
/// bytes in all (true or not).
pub fn offer_data_end(offer: &[u8], data: &[u8], files: u32, bytes: u64) -> Vec<u8> {
    let mut script = frame(FrameType::Offer, offer);
    script.extend(frame(FrameType::Data, data));
    script.extend(frame(
        FrameType::End,
        &protocol::encode_counts(files, bytes),
    ));
    script
}

/// Reads the peer's 8-byte preamble.
pub fn read_preamble(r: &mut impl Read) -> io::Result<[u8; protocol::PREAMBLE_LEN]> {
    let mut pre = [0u8; protocol::PREAMBLE_LEN];
    r.read_exact(&mut pre)?;
    Ok(pre)
}

/// Reads one frame: its type and payload.
pub fn read_frame(r: &mut impl Read) -> io::Result<(FrameType, Vec<u8>)> {
    let mut head = [0u8; protocol::HEADER_LEN];
    r.read_exact(&mut head)?;
    let (t, len) = protocol::decode_header(&head)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut p = vec![0u8; len];
    r.read_exact(&mut p)?;
    Ok((t, p))
}

/// Every whole frame in `bytes` (a peer's output after its preamble).
pub fn frames_in(mut bytes: &[u8]) -> Vec<(FrameType, Vec<u8>)> {
    let mut frames = Vec::new();
    while let Ok(f) = read_frame(&mut bytes) {
        frames.push(f);
    }
    frames
}
