//! Peer text made safe to print: names and messages from a peer are capped
//! and their controls, format and separator characters shown escaped.

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
pub(super) fn utf8_prefix(raw: &[u8], max: usize) -> &[u8] {
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

pub(super) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
