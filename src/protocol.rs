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
//! ```
//!
//! A transfer is: OFFER, then ACCEPT or REJECT, then DATA*, END, then RECEIPT
//! (or ERROR). The sender reports success only when the RECEIPT matches what
//! it sent. The giver may send up to [`EARLY_DATA`] bytes of DATA (and END)
//! right behind its OFFER, before the ACCEPT arrives: a short transfer then
//! costs one round trip after the handshake.

use thiserror::Error;

/// First six bytes of every pincat session, in both directions.
pub const MAGIC: &[u8; 6] = b"PINCAT";
/// The protocol version this build speaks.
pub const VERSION: u16 = 2;
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
        }
    }

    fn max_len(self) -> usize {
        match self {
            FrameType::Data => MAX_DATA,
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
}

/// The sender's description of the transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Stream or files.
    pub kind: TransferKind,
    /// Files and directories, in the order their data follows (empty for a stream).
    pub entries: Vec<Entry>,
}

impl Offer {
    /// Total announced bytes (files only).
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// Number of regular files.
    pub fn file_count(&self) -> u32 {
        self.entries.iter().filter(|e| !e.is_dir).count() as u32
    }

    /// Encodes the payload of an OFFER frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.push(match self.kind {
            TransferKind::Stream => 0,
            TransferKind::Files => 1,
        });
        v.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            v.push(u8::from(e.is_dir));
            v.extend_from_slice(&e.mode.to_be_bytes());
            v.extend_from_slice(&e.size.to_be_bytes());
            v.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
            v.extend_from_slice(e.name.as_bytes());
        }
        v
    }

    /// Decodes and validates an OFFER payload: every name is checked, sizes
    /// cannot overflow, names are unique and no file is another entry's parent.
    pub fn decode(p: &[u8]) -> Result<Offer, ProtocolError> {
        const M: ProtocolError = ProtocolError::Malformed("OFFER");
        let mut r = Cursor(p);
        let kind = match r.u8().ok_or(M)? {
            0 => TransferKind::Stream,
            1 => TransferKind::Files,
            _ => return Err(M),
        };
        let count = r.u32().ok_or(M)? as usize;
        if count > MAX_ENTRIES || (kind == TransferKind::Stream && count != 0) {
            return Err(M);
        }
        let mut entries = Vec::with_capacity(count.min(1024));
        let mut total: u64 = 0;
        for _ in 0..count {
            let is_dir = match r.u8().ok_or(M)? {
                0 => false,
                1 => true,
                _ => return Err(M),
            };
            let mode = r.u32().ok_or(M)?;
            let size = r.u64().ok_or(M)?;
            let len = r.u16().ok_or(M)? as usize;
            let raw = r.take(len).ok_or(M)?;
            let name = std::str::from_utf8(raw)
                .map_err(|_| NameError::NotUtf8)?
                .to_owned();
            validate_name(&name)?;
            if is_dir && size != 0 {
                return Err(M);
            }
            total = total.checked_add(size).ok_or(M)?;
            entries.push(Entry {
                name,
                is_dir,
                mode,
                size,
            });
        }
        if !r.0.is_empty() {
            return Err(M);
        }
        if kind == TransferKind::Files && entries.is_empty() {
            return Err(M);
        }
        check_tree(&entries)?;
        Ok(Offer { kind, entries })
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Regular files.
    pub files: u32,
    /// Payload bytes.
    pub bytes: u64,
}

/// One frame, typed: nobody outside this module decodes a payload by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The sender's description of what follows.
    Offer(Offer),
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
}

impl Message {
    /// The frame type this message travels as.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Message::Offer(_) => FrameType::Offer,
            Message::Accept => FrameType::Accept,
            Message::Reject(_) => FrameType::Reject,
            Message::Data(_) => FrameType::Data,
            Message::End(_) => FrameType::End,
            Message::Abort(_) => FrameType::Abort,
            Message::Receipt(_) => FrameType::Receipt,
            Message::Error(_) => FrameType::Error,
        }
    }

    /// The whole frame: header and payload.
    pub fn encode(&self) -> Vec<u8> {
        let payload = match self {
            Message::Offer(o) => o.encode(),
            Message::Accept => Vec::new(),
            Message::Reject(r) | Message::Error(r) => encode_reject(r.code, &r.message),
            Message::Data(d) => d.clone(),
            Message::End(c) | Message::Receipt(c) => encode_counts(c.files, c.bytes).to_vec(),
            Message::Abort(m) => truncate_utf8(m, 4096).as_bytes().to_vec(),
        };
        frame(self.frame_type(), &payload)
    }

    /// Decodes the payload of a frame of type `t`.
    pub fn decode(t: FrameType, payload: Vec<u8>) -> Result<Message, ProtocolError> {
        let counts =
            |what| decode_counts(&payload, what).map(|(files, bytes)| Counts { files, bytes });
        Ok(match t {
            FrameType::Offer => Message::Offer(Offer::decode(&payload)?),
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
        })
    }

    /// The message's name in errors ("OFFER", "DATA", ...).
    pub fn name(&self) -> &'static str {
        self.frame_type().name()
    }
}

/// Why a received name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// Empty name or empty component (`a//b`).
    #[error("refused an empty file name or path component")]
    Empty,
    /// Not UTF-8.
    #[error("refused a file name that is not UTF-8")]
    NotUtf8,
    /// Absolute path, drive prefix or backslash.
    #[error("refused file name {0}: absolute paths and drive prefixes are not allowed")]
    Absolute(String),
    /// `.` or `..` component.
    #[error("refused file name {0}: '.' and '..' components are not allowed")]
    DotDot(String),
    /// NUL, control, or escape characters.
    #[error("refused file name {0}: control characters are not allowed")]
    Control(String),
    /// Too long.
    #[error(
        "refused file name {0}: longer than {MAX_NAME} bytes or a component longer than {MAX_COMPONENT}"
    )]
    TooLong(String),
    /// Same name twice, or a file that is also a directory.
    #[error("refused file name {0}: it appears twice in the offer, or also as a directory")]
    Duplicate(String),
}

/// Checks a received relative path: only normal components, no control
/// characters, no absolute or drive-prefixed paths, bounded length.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(escape_name(truncate_utf8(name, 64))));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(NameError::Control(escape_name(name)));
    }
    let first = name.split('/').next().unwrap_or_default();
    let drive = first.len() >= 2
        && first.as_bytes()[0].is_ascii_alphabetic()
        && first.as_bytes()[1] == b':';
    if name.starts_with('/') || name.contains('\\') || drive {
        return Err(NameError::Absolute(escape_name(name)));
    }
    for comp in name.split('/') {
        match comp {
            "" => return Err(NameError::Empty),
            "." | ".." => return Err(NameError::DotDot(escape_name(name))),
            c if c.len() > MAX_COMPONENT => {
                return Err(NameError::TooLong(escape_name(truncate_utf8(name, 64))));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Quotes a name for printing: control, format and separator characters,
/// escapes and quotes are shown escaped, so a peer cannot drive the terminal
/// or reorder what is shown.
pub fn escape_name(name: &str) -> String {
    // Debug already escapes these; the second pass guarantees it whatever
    // Unicode tables the standard library was built with.
    escape_text(&format!("{name:?}"))
}

/// Escapes free text from a peer (no quotes added): C0/C1 controls and the
/// invisible format and separator characters ([`is_format_or_separator`])
/// become `\n`, `\u{1b}`, `\u{202e}` and the like.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// Most bytes of peer free text (REJECT, ERROR, ABORT messages) that are
/// decoded, and most bytes of its escaped form that are shown.
pub const MAX_PEER_TEXT: usize = 1024;

/// Appended where peer text was cut short.
pub const TRUNCATED: &str = "\u{2026} (truncated)";

/// Peer bytes as printable text: at most [`MAX_PEER_TEXT`] bytes are decoded
/// (lossy UTF-8, cut at a character boundary) and escaped, and the result is
/// at most [`MAX_PEER_TEXT`] bytes plus [`TRUNCATED`] when anything was left
/// out. A peer can otherwise fill a terminal or a log with one message.
pub fn peer_text(raw: &[u8]) -> String {
    let head = utf8_prefix(raw, MAX_PEER_TEXT);
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len().min(MAX_PEER_TEXT) + TRUNCATED.len());
    let mut cut = head.len() < raw.len();
    let mut piece = String::new();
    for c in text.chars() {
        piece.clear();
        push_escaped(&mut piece, c);
        if out.len() + piece.len() > MAX_PEER_TEXT {
            cut = true;
            break;
        }
        out.push_str(&piece);
    }
    if cut {
        out.push_str(TRUNCATED);
    }
    out
}

/// The longest prefix of `raw` of at most `max` bytes that does not split a
/// UTF-8 sequence (invalid input may be cut anywhere; lossy decoding copes).
fn utf8_prefix(raw: &[u8], max: usize) -> &[u8] {
    if raw.len() <= max {
        return raw;
    }
    let mut end = max;
    // Back up over continuation bytes (10xxxxxx) to the start of the
    // character that would be cut; a sequence has at most 3 of them.
    for _ in 0..3 {
        if end == 0 || raw[end] & 0xC0 != 0x80 {
            break;
        }
        end -= 1;
    }
    &raw[..end]
}

fn push_escaped(out: &mut String, c: char) {
    if c.is_control() || is_format_or_separator(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// True for the Unicode general categories Cf (format: bidi embeddings,
/// overrides and isolates, zero-width characters, the BOM, soft hyphen, tags),
/// Zl (line separator) and Zp (paragraph separator). They are invisible or
/// reorder the text around them, so peer text containing them can show one
/// thing and mean another (a `txt.exe` that reads `exe.txt`). The ranges are
/// copied from UnicodeData.txt (Unicode 15.1); no crate is needed for them.
pub fn is_format_or_separator(c: char) -> bool {
    matches!(
        c as u32,
        // Cf
        0x00AD // SOFT HYPHEN
        | 0x0600..=0x0605 // ARABIC NUMBER SIGN..ARABIC NUMBER MARK ABOVE
        | 0x061C // ARABIC LETTER MARK
        | 0x06DD // ARABIC END OF AYAH
        | 0x070F // SYRIAC ABBREVIATION MARK
        | 0x0890..=0x0891 // ARABIC POUND MARK ABOVE..ARABIC PIASTRE MARK ABOVE
        | 0x08E2 // ARABIC DISPUTED END OF AYAH
        | 0x180E // MONGOLIAN VOWEL SEPARATOR
        | 0x200B..=0x200F // ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
        | 0x202A..=0x202E // LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
        | 0x2060..=0x2064 // WORD JOINER..INVISIBLE PLUS
        | 0x2066..=0x206F // LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
        | 0xFEFF // ZERO WIDTH NO-BREAK SPACE (BOM)
        | 0xFFF9..=0xFFFB // INTERLINEAR ANNOTATION ANCHOR..TERMINATOR
        | 0x110BD // KAITHI NUMBER SIGN
        | 0x110CD // KAITHI NUMBER SIGN ABOVE
        | 0x13430..=0x1343F // EGYPTIAN HIEROGLYPH VERTICAL JOINER..END WALLED ENCLOSURE
        | 0x1BCA0..=0x1BCA3 // SHORTHAND FORMAT LETTER OVERLAP..UP STEP
        | 0x1D173..=0x1D17A // MUSICAL SYMBOL BEGIN BEAM..END PHRASE
        | 0xE0001 // LANGUAGE TAG
        | 0xE0020..=0xE007F // TAG SPACE..CANCEL TAG
        // Zl, Zp
        | 0x2028 // LINE SEPARATOR
        | 0x2029 // PARAGRAPH SEPARATOR
    )
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
mod tests {
    use super::*;

    fn entry(name: &str, size: u64) -> Entry {
        Entry {
            name: name.into(),
            is_dir: false,
            mode: 0o644,
            size,
        }
    }

    #[test]
    fn offer_round_trips() {
        let offer = Offer {
            kind: TransferKind::Files,
            entries: vec![
                Entry {
                    name: "dir".into(),
                    is_dir: true,
                    mode: 0o755,
                    size: 0,
                },
                entry("dir/a.txt", 3),
                entry("b", u64::MAX - 3),
            ],
        };
        assert_eq!(Offer::decode(&offer.encode()), Ok(offer.clone()));
        let stream = Offer {
            kind: TransferKind::Stream,
            entries: vec![],
        };
        assert_eq!(Offer::decode(&stream.encode()), Ok(stream));
    }

    #[test]
    fn offer_rejects_truncation_trailing_bytes_and_overflow() {
        let offer = Offer {
            kind: TransferKind::Files,
            entries: vec![entry("a", u64::MAX), entry("b", 1)],
        };
        let enc = offer.encode();
        assert_eq!(
            Offer::decode(&enc),
            Err(ProtocolError::Malformed("OFFER")),
            "sizes overflowing u64 must be refused"
        );
        let ok = Offer {
            kind: TransferKind::Files,
            entries: vec![entry("a", 1)],
        }
        .encode();
        for cut in 0..ok.len() {
            assert!(Offer::decode(&ok[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = ok.clone();
        longer.push(0);
        assert!(Offer::decode(&longer).is_err());
    }

    #[test]
    fn offer_rejects_duplicates_and_file_as_parent() {
        for names in [["a", "a"], ["a", "a/b"]] {
            let offer = Offer {
                kind: TransferKind::Files,
                entries: names.iter().map(|n| entry(n, 0)).collect(),
            };
            assert!(matches!(
                Offer::decode(&offer.encode()),
                Err(ProtocolError::Name(NameError::Duplicate(_)))
            ));
        }
    }

    #[test]
    fn names_are_sanitized() {
        for good in [
            "a",
            "a/b/c.txt",
            "ünïcode/ファイル",
            "..a",
            "a..",
            ".hidden",
        ] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        let long_comp = "x".repeat(256);
        let long_path = ["y"; 2100].join("/");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            ".",
            "a//b",
            "a/",
            "C:evil",
            "c:/evil",
            "a\\b",
            "nul\0byte",
            "esc\x1b[31mred",
            "bell\x07",
            "c1\u{9b}x",
            long_comp.as_str(),
            long_path.as_str(),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn escape_hides_terminal_controls() {
        let e = escape_name("a\x1b[2Jb\n");
        assert!(!e.contains('\x1b') && !e.contains('\n'), "{e}");
    }

    #[test]
    fn format_and_separator_predicate_covers_cf_zl_zp() {
        for c in [
            '\u{00AD}',
            '\u{0600}',
            '\u{061C}',
            '\u{180E}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202E}',
            '\u{2060}',
            '\u{2066}',
            '\u{2069}',
            '\u{206F}',
            '\u{FEFF}',
            '\u{FFF9}',
            '\u{110BD}',
            '\u{1343F}',
            '\u{1D173}',
            '\u{E0001}',
            '\u{E0020}',
            '\u{E007F}',
            '\u{2028}',
            '\u{2029}',
        ] {
            assert!(is_format_or_separator(c), "U+{:04X}", c as u32);
        }
        // Neighbours of the ranges, ordinary text, and spaces (Zs is not hidden).
        for c in [
            'a',
            ' ',
            'é',
            'ф',
            'ア',
            '\u{00A0}',
            '\u{00AC}',
            '\u{00AE}',
            '\u{200A}',
            '\u{2010}',
            '\u{2027}',
            '\u{202F}',
            '\u{205F}',
            '\u{2065}',
            '\u{FEFE}',
            '\u{FFFC}',
            '\u{E0002}',
            '\u{E0080}',
            '\u{1F600}',
        ] {
            assert!(!is_format_or_separator(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn the_standard_library_agrees_these_are_not_printable() {
        // std's Debug escapes what its Unicode tables call unprintable (Cf,
        // Zl and Zp among them): every code point listed here must be one.
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            if is_format_or_separator(c) {
                let shown = format!("{c:?}");
                assert!(shown.starts_with("'\\u{"), "U+{:04X}: {shown}", c as u32);
            }
        }
    }

    #[test]
    fn escape_shows_bidi_zero_width_and_separators() {
        assert_eq!(escape_text("abc\u{202E}fdp.exe"), "abc\\u{202e}fdp.exe");
        assert_eq!(escape_text("a\u{200B}b"), "a\\u{200b}b");
        assert_eq!(escape_text("one\u{2028}two"), "one\\u{2028}two");
        assert_eq!(
            escape_text("c1\u{9b}x\u{1b}[2J\n"),
            "c1\\u{9b}x\\u{1b}[2J\\n"
        );
        assert_eq!(
            escape_text("plain ünïcode ファイル"),
            "plain ünïcode ファイル"
        );
        for s in ["a\u{202E}b", "a\u{200B}b", "a\u{2028}b"] {
            let e = escape_name(s);
            assert!(e.starts_with('"') && e.ends_with('"'), "{e}");
            assert!(!e.chars().any(is_format_or_separator), "{e:?}");
            assert!(e.contains("\\u{"), "{e}");
        }
        // Escaping what is already escaped changes nothing.
        let once = escape_text("x\u{202E}\u{7}");
        assert_eq!(escape_text(&once), once);
    }

    #[test]
    fn peer_text_is_capped_at_a_character_boundary() {
        let short = peer_text(b"file exists");
        assert_eq!(short, "file exists");
        let huge = peer_text(&vec![b'A'; 1_000_000]);
        assert_eq!(huge.len(), MAX_PEER_TEXT + TRUNCATED.len());
        assert!(huge.ends_with(TRUNCATED));
        // Two-byte characters across the cut: no replacement character.
        let accents = peer_text("é".repeat(1000).as_bytes());
        assert!(!accents.contains('\u{FFFD}') && accents.ends_with(TRUNCATED));
        assert!(accents.len() <= MAX_PEER_TEXT + TRUNCATED.len());
        // Escapes grow the text: the cap applies to what is shown, and an
        // escape is never cut in half.
        let bidi = peer_text("\u{202E}".repeat(400).as_bytes());
        let body = bidi.strip_suffix(TRUNCATED).expect("marked as cut");
        assert!(body.len() <= MAX_PEER_TEXT);
        assert_eq!(body.len() % "\\u{202e}".len(), 0, "{body}");
        assert!(!bidi.contains('\u{202E}'));
        // Exactly at the cap: nothing is left out, so no marker.
        let exact = peer_text(&vec![b'B'; MAX_PEER_TEXT]);
        assert_eq!(exact.len(), MAX_PEER_TEXT);
        assert_eq!(utf8_prefix("aé".as_bytes(), 2), b"a");
        assert_eq!(utf8_prefix("a\u{1F600}".as_bytes(), 3), b"a");
    }

    #[test]
    fn headers_enforce_caps_and_types() {
        let h = encode_header(FrameType::Data, 10);
        assert_eq!(decode_header(&h), Ok((FrameType::Data, 10)));
        let mut big = h;
        big[1..].copy_from_slice(&((MAX_DATA as u32) + 1).to_be_bytes());
        assert!(matches!(
            decode_header(&big),
            Err(ProtocolError::TooLong { .. })
        ));
        assert_eq!(
            decode_header(&[0, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownFrame(0))
        );
    }

    #[test]
    fn preamble_checks_magic_version_and_role() {
        let head =
            |p: [u8; PREAMBLE_LEN]| -> [u8; VERSION_LEN] { p[..VERSION_LEN].try_into().unwrap() };
        assert_eq!(check_preamble(&head(preamble())), Ok(()));
        let mut other = head(preamble());
        other[7] = 9;
        assert_eq!(check_preamble(&other), Err(ProtocolError::Version(9)));
        // A version 1 peer gets (and gives) a clear version error.
        other[7] = 1;
        assert_eq!(check_preamble(&other), Err(ProtocolError::Version(1)));
        assert_eq!(check_preamble(b"GET / HT"), Err(ProtocolError::NotPincat));
        let giver = preamble_of(Role::Giver)[8];
        let taker = preamble_of(Role::Taker)[8];
        assert_eq!(check_role(giver, Role::Taker), Ok(()));
        assert_eq!(check_role(taker, Role::Giver), Ok(()));
        assert_eq!(
            check_role(giver, Role::Giver),
            Err(ProtocolError::Role(Role::Giver))
        );
        assert_eq!(
            check_role(taker, Role::Taker),
            Err(ProtocolError::Role(Role::Taker))
        );
        assert!(check_role(7, Role::Taker).is_err());
        let msg = ProtocolError::Role(Role::Taker).to_string();
        assert!(
            msg.contains("takes data") && msg.contains("`serve`/`get`"),
            "{msg}"
        );
    }

    #[test]
    fn counts_and_reject_round_trip() {
        let c = encode_counts(3, 1 << 40);
        assert_eq!(decode_counts(&c, "END"), Ok((3, 1 << 40)));
        assert!(decode_counts(&c[..11], "END").is_err());
        let r = encode_reject(RejectCode::Exists, "x exists\x1b");
        let (code, msg) = decode_reject(&r);
        assert_eq!(code, RejectCode::Exists);
        assert!(msg.contains("x exists") && !msg.contains('\x1b'));
        let (_, msg) = decode_reject(&encode_reject(RejectCode::Io, "a\u{202E}b"));
        assert_eq!(msg, "a\\u{202e}b");
    }
}
