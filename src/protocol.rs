//! The pincat wire format inside TLS: encoding and decoding only, no I/O policy.
//!
//! After the TLS 1.3 handshake (and the pin check) both sides write a 9-byte
//! preamble: `b"PINCAT"`, the protocol version as a big-endian `u16`, and the
//! side's data role (1 gives, 2 takes). The first 8 bytes never change shape,
//! so a peer speaking another version gets a clear error instead of garbage,
//! and two givers or two takers fail at once. Everything after it is frames:
//!
//! ```text
//! frame   = type:u8 length:u32be payload[length]
//! OFFER   (1) sender -> receiver  kind:u8 (0 stream, 1 files) count:u32 entry*
//!         entry = type:u8 (0 file, 1 dir) mode:u32 size:u64 name_len:u16 name (UTF-8, '/'-separated)
//! ACCEPT  (2) receiver -> sender  empty
//! REJECT  (3) receiver -> sender  code:u8 message (UTF-8)
//! DATA    (4) sender -> receiver  bytes; file contents are concatenated in offer order
//! END     (5) sender -> receiver  files:u32 bytes:u64 (what the sender sent)
//! ABORT   (6) sender -> receiver  message: the sender gives up (e.g. a file changed)
//! RECEIPT (7) receiver -> sender  files:u32 bytes:u64 (what was written and synced)
//! ERROR   (8) receiver -> sender  code:u8 message: the receiver failed after ACCEPT
//! BASIS   (9), PLAN (10), DIGESTS (11): see the `sync` module
//! KEEPALIVE (12) either side, before the data: empty; still hashing
//!           (and receiver -> sender while its handler runs, `serve --exec`)
//! REPLY   (13) receiver -> sender  bytes: its handler's output, before the RECEIPT
//! ```
//!
//! A transfer is: OFFER, then BASIS* and ACCEPT, or REJECT, then PLAN*,
//! DATA*, END, then DIGESTS*, KEEPALIVE* and REPLY* (a handler's), and
//! RECEIPT (or ERROR). The sender reports
//! success only when the RECEIPT matches what it sent and every digest
//! matches its own. The giver may send up to [`EARLY_DATA`] bytes of DATA
//! (and END) right behind its OFFER, before the ACCEPT arrives, when the
//! offer is a stream or files of at most that many bytes without
//! `--update` (see [`Offer::early_data`]): a short transfer then costs one
//! round trip after the handshake. Only an offer without early data may
//! get BASIS frames (the taker builds on what it has; see `sync`).

use thiserror::Error;

mod escape;
mod names;
mod offer;
mod sync;

use escape::truncate_utf8;
pub use escape::{
    MAX_PEER_TEXT, TRUNCATED, escape_name, escape_text, is_format_or_separator, peer_text,
};
pub use names::{NameError, validate_name};
pub use offer::{Entry, MAX_LINK_TARGET, Mtime, Offer, TransferKind};
pub use sync::{Basis, BasisEntry, Digests, PlanEntry, basis_len, digests_len, plan_len};

/// First six bytes of every pincat session, in both directions.
pub const MAGIC: &[u8; 6] = b"PINCAT";
/// The protocol version this build speaks.
pub const VERSION: u16 = 4;
/// Bytes in the preamble: magic, version, role.
pub const PREAMBLE_LEN: usize = 9;
/// Bytes of the preamble every version shares: magic plus version.
pub const VERSION_LEN: usize = 8;
/// Payload a giver may send behind its offer before the taker accepted it:
/// a short message costs no extra round trip, a refused large one little.
pub const EARLY_DATA: u64 = 64 * 1024;

/// Which data role a side plays: exactly one of each per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Offers and sends data (`send`, `offer`).
    Giver = 1,
    /// Accepts and stores data (`serve`, `get`).
    Taker = 2,
}

impl Role {
    /// The other role.
    pub fn peer(self) -> Role {
        match self {
            Role::Giver => Role::Taker,
            Role::Taker => Role::Giver,
        }
    }

    /// For messages: what this role does and which commands play it.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Giver => "gives data (`pincat send` or `pincat offer`)",
            Role::Taker => "takes data (`pincat serve` or `pincat get`)",
        }
    }
}
/// Bytes in a frame header: type plus length.
pub const HEADER_LEN: usize = 5;
/// Largest DATA payload a receiver accepts.
pub const MAX_DATA: usize = 1 << 20;
/// Largest OFFER (and any control frame) a receiver accepts.
pub const MAX_CONTROL: usize = 1 << 20;
/// Most entries in one offer.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest received path, in bytes.
pub const MAX_NAME: usize = 4096;
/// Longest received path component, in bytes.
pub const MAX_COMPONENT: usize = 255;

/// Everything that can be wrong with bytes a peer sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The peer is not speaking pincat at all.
    #[error(
        "the peer does not speak the pincat protocol (is it in --raw mode, or another program?)"
    )]
    NotPincat,
    /// Both sides play the same role.
    #[error(
        "role mismatch: the peer {} too; one side must give (`send`/`offer`) and the other take (`serve`/`get`)",
        .0.describe()
    )]
    Role(Role),
    /// The peer speaks another protocol version.
    #[error(
        "the peer speaks pincat protocol version {0}, this pincat speaks version {VERSION}: use the same pincat release on both sides"
    )]
    Version(u16),
    /// An unknown frame type.
    #[error("unknown frame type {0}")]
    UnknownFrame(u8),
    /// A frame longer than allowed for its type.
    #[error("{kind} frame of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Frame type name.
        kind: &'static str,
        /// Announced length.
        len: usize,
        /// Limit for the type.
        max: usize,
    },
    /// A frame arrived where another was expected.
    #[error("unexpected {got} frame (expected {expected})")]
    Unexpected {
        /// What arrived.
        got: &'static str,
        /// What the state machine wanted.
        expected: &'static str,
    },
    /// A payload that does not decode.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    /// A refused path name.
    #[error(transparent)]
    Name(#[from] NameError),
}

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Sender's description of what follows.
    Offer = 1,
    /// Receiver agrees to the offer.
    Accept = 2,
    /// Receiver refuses the offer.
    Reject = 3,
    /// Payload bytes.
    Data = 4,
    /// Sender is done.
    End = 5,
    /// Sender gives up.
    Abort = 6,
    /// Receiver confirms what it wrote.
    Receipt = 7,
    /// Receiver failed after accepting.
    Error = 8,
    /// Receiver's description of what it already has.
    Basis = 9,
    /// Sender's choice of the chunks it sends.
    Plan = 10,
    /// Receiver's digests of what it stored.
    Digests = 11,
    /// Either side, before the data: still working (hashing what it has).
    Keepalive = 12,
    /// Receiver's handler output (`serve --exec`), before its RECEIPT.
    Reply = 13,
}

impl FrameType {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Offer => "OFFER",
            FrameType::Accept => "ACCEPT",
            FrameType::Reject => "REJECT",
            FrameType::Data => "DATA",
            FrameType::End => "END",
            FrameType::Abort => "ABORT",
            FrameType::Receipt => "RECEIPT",
            FrameType::Error => "ERROR",
            FrameType::Basis => "BASIS",
            FrameType::Plan => "PLAN",
            FrameType::Digests => "DIGESTS",
            FrameType::Keepalive => "KEEPALIVE",
            FrameType::Reply => "REPLY",
        }
    }

    fn max_len(self) -> usize {
        match self {
            FrameType::Data | FrameType::Reply => MAX_DATA,
            _ => MAX_CONTROL,
        }
    }
}

/// The preamble a giver sends (see [`preamble_of`]).
pub fn preamble() -> [u8; PREAMBLE_LEN] {
    preamble_of(Role::Giver)
}

/// The preamble this build sends in `role`.
pub fn preamble_of(role: Role) -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..6].copy_from_slice(MAGIC);
    p[6..8].copy_from_slice(&VERSION.to_be_bytes());
    p[8] = role as u8;
    p
}

/// Checks the role byte of a peer whose version matched: it must play the
/// other role than `ours`.
pub fn check_role(b: u8, ours: Role) -> Result<(), ProtocolError> {
    match b {
        1 if ours == Role::Taker => Ok(()),
        2 if ours == Role::Giver => Ok(()),
        1 | 2 => Err(ProtocolError::Role(ours)),
        _ => Err(ProtocolError::Malformed("preamble")),
    }
}

/// Checks the magic and version of a received preamble (the part every
/// version shares, so an older peer gets a clear error, not a hang).
pub fn check_preamble(p: &[u8; VERSION_LEN]) -> Result<(), ProtocolError> {
    if &p[..6] != MAGIC {
        return Err(ProtocolError::NotPincat);
    }
    match u16::from_be_bytes([p[6], p[7]]) {
        VERSION => Ok(()),
        v => Err(ProtocolError::Version(v)),
    }
}

/// Encodes a frame header.
pub fn encode_header(t: FrameType, len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(len <= t.max_len());
    let mut h = [0u8; HEADER_LEN];
    h[0] = t as u8;
    h[1..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

/// Decodes a frame header, enforcing the per-type length cap.
pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<(FrameType, usize), ProtocolError> {
    let t = match h[0] {
        1 => FrameType::Offer,
        2 => FrameType::Accept,
        3 => FrameType::Reject,
        4 => FrameType::Data,
        5 => FrameType::End,
        6 => FrameType::Abort,
        7 => FrameType::Receipt,
        8 => FrameType::Error,
        9 => FrameType::Basis,
        10 => FrameType::Plan,
        11 => FrameType::Digests,
        12 => FrameType::Keepalive,
        13 => FrameType::Reply,
        other => return Err(ProtocolError::UnknownFrame(other)),
    };
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > t.max_len() {
        return Err(ProtocolError::TooLong {
            kind: t.name(),
            len,
            max: t.max_len(),
        });
    }
    Ok((t, len))
}

/// Encodes a whole control frame (header plus payload).
pub fn frame(t: FrameType, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(&encode_header(t, payload.len()));
    v.extend_from_slice(payload);
    v
}
/// Why the receiver refused (REJECT) or failed (ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// A target file already exists.
    Exists = 1,
    /// A name was refused.
    BadName = 2,
    /// Not enough space for the announced size, or the disk filled up.
    NoSpace = 3,
    /// The receiver is busy or shutting down.
    Busy = 4,
    /// The offer does not fit the receiver's target (e.g. a stream into a directory).
    Unsupported = 5,
    /// A local I/O error on the receiver.
    Io = 6,
    /// The sender broke the protocol.
    Protocol = 7,
    /// The listener admits only a dialer that proves its code.
    CodeRequired = 8,
    /// The receiver's handler (`serve --exec`) failed; the message starts
    /// with its status token (see [`crate::exec::Status`]).
    Handler = 9,
}

impl RejectCode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Exists,
            2 => Self::BadName,
            3 => Self::NoSpace,
            4 => Self::Busy,
            5 => Self::Unsupported,
            7 => Self::Protocol,
            8 => Self::CodeRequired,
            9 => Self::Handler,
            _ => Self::Io,
        }
    }

    /// Stable lower-case name used in JSON events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exists => "exists",
            Self::BadName => "bad-name",
            Self::NoSpace => "no-space",
            Self::Busy => "busy",
            Self::Unsupported => "unsupported",
            Self::Io => "io",
            Self::Protocol => "protocol",
            Self::CodeRequired => "code-required",
            Self::Handler => "handler",
        }
    }
}

/// Encodes a REJECT or ERROR payload.
pub fn encode_reject(code: RejectCode, message: &str) -> Vec<u8> {
    let mut v = vec![code as u8];
    let msg = truncate_utf8(message, 4096);
    v.extend_from_slice(msg.as_bytes());
    v
}

/// Decodes a REJECT or ERROR payload; the message is capped and escaped for
/// printing (see [`peer_text`]).
pub fn decode_reject(p: &[u8]) -> (RejectCode, String) {
    match p.split_first() {
        Some((c, msg)) => (RejectCode::from_u8(*c), peer_text(msg)),
        None => (RejectCode::Io, String::new()),
    }
}

/// Encodes END or RECEIPT: file count and byte count.
pub fn encode_counts(files: u32, bytes: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&files.to_be_bytes());
    v[4..].copy_from_slice(&bytes.to_be_bytes());
    v
}

/// Decodes END or RECEIPT.
pub fn decode_counts(p: &[u8], what: &'static str) -> Result<(u32, u64), ProtocolError> {
    let mut r = Cursor(p);
    let files = r.u32().ok_or(ProtocolError::Malformed(what))?;
    let bytes = r.u64().ok_or(ProtocolError::Malformed(what))?;
    if !r.0.is_empty() {
        return Err(ProtocolError::Malformed(what));
    }
    Ok((files, bytes))
}

/// A refusal or a failure, with its reason: what REJECT and ERROR carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why, as a stable code.
    pub code: RejectCode,
    /// One line for a person (from a peer: capped and escaped on decode).
    pub message: String,
}

impl Refusal {
    /// A refusal with this code and message.
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// File and byte counts: what END and RECEIPT carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Regular files.
    pub files: u32,
    /// Payload bytes.
    pub bytes: u64,
}

/// One frame, typed: nobody outside this module decodes a payload by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The sender's description of what follows (a part of it, with
    /// `true`: more OFFER frames follow; see [`Offer::check`]).
    Offer(Offer, bool),
    /// The receiver agrees.
    Accept,
    /// The receiver refuses the offer.
    Reject(Refusal),
    /// Payload bytes.
    Data(Vec<u8>),
    /// The sender is done: what it sent.
    End(Counts),
    /// The sender gives up, with its reason (from a peer: capped, escaped).
    Abort(String),
    /// The receiver confirms what it stored durably.
    Receipt(Counts),
    /// The receiver failed after accepting.
    Error(Refusal),
    /// What the receiver already has of some files.
    Basis(Vec<BasisEntry>),
    /// Which chunks of those files the sender sends.
    Plan(Vec<PlanEntry>),
    /// The digests of what the receiver stored.
    Digests(Digests),
    /// Still working: the side that sends it is hashing what it has.
    Keepalive,
    /// Part of the receiver's handler output.
    Reply(Vec<u8>),
}

impl Message {
    /// The frame type this message travels as.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Message::Offer(..) => FrameType::Offer,
            Message::Accept => FrameType::Accept,
            Message::Reject(_) => FrameType::Reject,
            Message::Data(_) => FrameType::Data,
            Message::End(_) => FrameType::End,
            Message::Abort(_) => FrameType::Abort,
            Message::Receipt(_) => FrameType::Receipt,
            Message::Error(_) => FrameType::Error,
            Message::Basis(_) => FrameType::Basis,
            Message::Plan(_) => FrameType::Plan,
            Message::Digests(_) => FrameType::Digests,
            Message::Keepalive => FrameType::Keepalive,
            Message::Reply(_) => FrameType::Reply,
        }
    }

    /// The whole frame: header and payload.
    pub fn encode(&self) -> Vec<u8> {
        let payload = match self {
            Message::Offer(o, more) => o.encode_part(&o.entries, &o.skipped, *more),
            Message::Accept | Message::Keepalive => Vec::new(),
            Message::Reject(r) | Message::Error(r) => encode_reject(r.code, &r.message),
            Message::Data(d) | Message::Reply(d) => d.clone(),
            Message::End(c) | Message::Receipt(c) => encode_counts(c.files, c.bytes).to_vec(),
            Message::Abort(m) => truncate_utf8(m, 4096).as_bytes().to_vec(),
            Message::Basis(b) => {
                let mut v = Vec::new();
                sync::encode_basis(&mut v, b);
                v
            }
            Message::Plan(p) => {
                let mut v = Vec::new();
                sync::encode_plan(&mut v, p);
                v
            }
            Message::Digests(d) => {
                let mut v = Vec::new();
                sync::encode_digests(&mut v, d);
                v
            }
        };
        frame(self.frame_type(), &payload)
    }

    /// Decodes the payload of a frame of type `t`.
    pub fn decode(t: FrameType, payload: Vec<u8>) -> Result<Message, ProtocolError> {
        let counts =
            |what| decode_counts(&payload, what).map(|(files, bytes)| Counts { files, bytes });
        Ok(match t {
            FrameType::Offer => {
                let (offer, more) = Offer::decode_part(&payload)?;
                Message::Offer(offer, more)
            }
            FrameType::Accept => Message::Accept,
            FrameType::Reject | FrameType::Error => {
                let (code, message) = decode_reject(&payload);
                let r = Refusal { code, message };
                if t == FrameType::Reject {
                    Message::Reject(r)
                } else {
                    Message::Error(r)
                }
            }
            FrameType::End => Message::End(counts("END")?),
            FrameType::Receipt => Message::Receipt(counts("RECEIPT")?),
            FrameType::Abort => Message::Abort(peer_text(&payload)),
            FrameType::Data => Message::Data(payload),
            FrameType::Reply => Message::Reply(payload),
            FrameType::Basis => Message::Basis(sync::decode_basis(&payload)?),
            FrameType::Plan => Message::Plan(sync::decode_plan(&payload)?),
            FrameType::Digests => Message::Digests(sync::decode_digests(&payload)?),
            FrameType::Keepalive if payload.is_empty() => Message::Keepalive,
            FrameType::Keepalive => return Err(ProtocolError::Malformed("KEEPALIVE")),
        })
    }

    /// The message's name in errors ("OFFER", "DATA", ...).
    pub fn name(&self) -> &'static str {
        self.frame_type().name()
    }
}
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests;
