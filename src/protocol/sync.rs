//! The frames that let a taker build on what it already has (a partial
//! file kept from an interrupted transfer, or the file `--update`
//! replaces), and the digests it confirms with:
//!
//! ```text
//! BASIS   (9)  taker -> giver   entry*, before ACCEPT
//!         entry = file:u32 kind:u8 (1 unchanged, 2 have) [count:u32 hash[32]*count]
//! PLAN    (10) giver -> taker   entry*, right after ACCEPT, one per "have"
//!         entry = file:u32 chunks:u32 bitmap[ceil(chunks/8)] (1: the chunk is sent)
//! DIGESTS (11) taker -> giver   first:u32 count:u32 (flag:u8 digest[32])*, before RECEIPT
//! ```
//!
//! `file` counts regular files in offer order. "Unchanged" files (the
//! quick check found the same size and time) get no data and no digest
//! (flag 0: not verified); every other file's digest is flag 1.

use super::{Cursor, ProtocolError};
use crate::digest::{Hash, MAX_CHUNKS};

/// What a taker already has of one offered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// The same size and modification time: nothing is sent.
    Unchanged,
    /// These leading whole chunks, by hash: the giver sends only the
    /// chunks that differ.
    Have(Vec<Hash>),
}

/// One file's basis, by its number among the offer's regular files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasisEntry {
    /// Number of the file among the offer's regular files.
    pub file: u32,
    /// What the taker has.
    pub basis: Basis,
}

/// Which chunks of one file the giver sends (the rest the taker has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntry {
    /// Number of the file among the offer's regular files.
    pub file: u32,
    /// One flag per chunk of the file as offered: true when it is sent.
    pub send: Vec<bool>,
}

/// Every file's digest as stored, in order from `first` (`None`: left as
/// it was by the quick check, not verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Number of the first file described.
    pub first: u32,
    /// Digests from there on.
    pub digests: Vec<Option<Hash>>,
}

const MB: ProtocolError = ProtocolError::Malformed("BASIS");
const MP: ProtocolError = ProtocolError::Malformed("PLAN");
const MD: ProtocolError = ProtocolError::Malformed("DIGESTS");

/// Encoded size of one basis entry.
pub fn basis_len(b: &BasisEntry) -> usize {
    match &b.basis {
        Basis::Unchanged => 5,
        Basis::Have(h) => 9 + 32 * h.len(),
    }
}

pub(super) fn encode_basis(v: &mut Vec<u8>, entries: &[BasisEntry]) {
    for e in entries {
        v.extend_from_slice(&e.file.to_be_bytes());
        match &e.basis {
            Basis::Unchanged => v.push(1),
            Basis::Have(h) => {
                v.push(2);
                v.extend_from_slice(&(h.len() as u32).to_be_bytes());
                h.iter().for_each(|h| v.extend_from_slice(h));
            }
        }
    }
}

pub(super) fn decode_basis(p: &[u8]) -> Result<Vec<BasisEntry>, ProtocolError> {
    let mut r = Cursor(p);
    let mut out = Vec::new();
    let mut last: Option<u32> = None;
    while !r.0.is_empty() {
        let file = r.u32().ok_or(MB)?;
        if last.is_some_and(|l| file <= l) {
            return Err(MB);
        }
        last = Some(file);
        let basis = match r.u8().ok_or(MB)? {
            1 => Basis::Unchanged,
            2 => {
                let n = r.u32().ok_or(MB)? as u64;
                if n == 0 || n > MAX_CHUNKS {
                    return Err(MB);
                }
                let raw = r.take(n as usize * 32).ok_or(MB)?;
                Basis::Have(raw.chunks_exact(32).map(hash).collect())
            }
            _ => return Err(MB),
        };
        out.push(BasisEntry { file, basis });
    }
    Ok(out)
}

/// Encoded size of one plan entry.
pub fn plan_len(p: &PlanEntry) -> usize {
    8 + p.send.len().div_ceil(8)
}

pub(super) fn encode_plan(v: &mut Vec<u8>, entries: &[PlanEntry]) {
    for e in entries {
        v.extend_from_slice(&e.file.to_be_bytes());
        v.extend_from_slice(&(e.send.len() as u32).to_be_bytes());
        for byte in e.send.chunks(8) {
            let b = byte
                .iter()
                .enumerate()
                .fold(0u8, |b, (i, &s)| b | (u8::from(s) << i));
            v.push(b);
        }
    }
}

pub(super) fn decode_plan(p: &[u8]) -> Result<Vec<PlanEntry>, ProtocolError> {
    let mut r = Cursor(p);
    let mut out = Vec::new();
    let mut last: Option<u32> = None;
    while !r.0.is_empty() {
        let file = r.u32().ok_or(MP)?;
        if last.is_some_and(|l| file <= l) {
            return Err(MP);
        }
        last = Some(file);
        let n = r.u32().ok_or(MP)? as usize;
        if n as u64 > MAX_CHUNKS {
            return Err(MP);
        }
        let bits = r.take(n.div_ceil(8)).ok_or(MP)?;
        let send: Vec<bool> = (0..n).map(|i| bits[i / 8] >> (i % 8) & 1 == 1).collect();
        // Bits past the last chunk must be clear: one encoding per plan.
        if !n.is_multiple_of(8) && bits[n / 8] >> (n % 8) != 0 {
            return Err(MP);
        }
        out.push(PlanEntry { file, send });
    }
    Ok(out)
}

/// Encoded size of `n` digests.
pub fn digests_len(n: usize) -> usize {
    8 + 33 * n
}

pub(super) fn encode_digests(v: &mut Vec<u8>, d: &Digests) {
    v.extend_from_slice(&d.first.to_be_bytes());
    v.extend_from_slice(&(d.digests.len() as u32).to_be_bytes());
    for x in &d.digests {
        match x {
            Some(h) => {
                v.push(1);
                v.extend_from_slice(h);
            }
            None => v.extend_from_slice(&[0u8; 33]),
        }
    }
}

pub(super) fn decode_digests(p: &[u8]) -> Result<Digests, ProtocolError> {
    let mut r = Cursor(p);
    let first = r.u32().ok_or(MD)?;
    let n = r.u32().ok_or(MD)? as usize;
    if r.0.len() != n.checked_mul(33).ok_or(MD)? {
        return Err(MD);
    }
    let mut digests = Vec::with_capacity(n);
    for _ in 0..n {
        let raw = r.take(33).ok_or(MD)?;
        digests.push(match raw[0] {
            0 if raw[1..].iter().all(|&b| b == 0) => None,
            1 => Some(hash(&raw[1..])),
            _ => return Err(MD),
        });
    }
    Ok(Digests { first, digests })
}

fn hash(b: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(b);
    h
}
