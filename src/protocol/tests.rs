//! Unit tests of the wire format: frames, offers, names and peer text.

use super::escape::utf8_prefix;
use super::*;

fn entry(name: &str, size: u64) -> Entry {
    Entry {
        name: name.into(),
        is_dir: false,
        mode: 0o644,
        size,
        mtime: None,
        link: None,
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
                mtime: Some(crate::protocol::Mtime {
                    secs: -86_400,
                    nanos: 999_999_999,
                }),
                link: None,
            },
            entry("dir/a.txt", 3),
            entry("b", u64::MAX - 3),
        ],
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
    };
    assert_eq!(Offer::decode(&offer.encode()), Ok(offer.clone()));
    let stream = Offer {
        kind: TransferKind::Stream,
        entries: vec![],
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
    };
    assert_eq!(Offer::decode(&stream.encode()), Ok(stream));
}

#[test]
fn a_time_with_a_second_or_more_of_nanoseconds_or_an_unknown_flag_is_malformed() {
    let mut e = entry("a", 1);
    e.mtime = Some(crate::protocol::Mtime {
        secs: 1,
        nanos: 999_999_999,
    });
    let offer = Offer {
        kind: TransferKind::Files,
        entries: vec![e],
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
    };
    let mut bytes = offer.encode();
    // kind(1) flags(1) count(4) is_dir(1) mode(4) size(8), then the
    // time's flag, its seconds (8) and nanoseconds (4).
    let nanos = 1 + 1 + 4 + 1 + 4 + 8 + 1 + 8;
    bytes[nanos..nanos + 4].copy_from_slice(&1_000_000_000u32.to_be_bytes());
    assert!(Offer::decode(&bytes).is_err());
    let mut bytes = offer.encode();
    bytes[nanos - 9] = 2;
    assert!(Offer::decode(&bytes).is_err());
}

#[test]
fn offer_rejects_truncation_trailing_bytes_and_overflow() {
    let offer = Offer {
        kind: TransferKind::Files,
        entries: vec![entry("a", u64::MAX), entry("b", 1)],
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
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
        skipped: Vec::new(),
        update: false,
        checksum: false,
        continued: false,
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
            skipped: Vec::new(),
            update: false,
            checksum: false,
            continued: false,
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

#[test]
fn sync_frames_round_trip_and_refuse_what_does_not_fit() {
    use crate::protocol::{Basis, BasisEntry, Digests, PlanEntry};
    let basis = Message::Basis(vec![
        BasisEntry {
            file: 0,
            basis: Basis::Unchanged,
        },
        BasisEntry {
            file: 3,
            basis: Basis::Have(vec![[7u8; 32], [9u8; 32]]),
        },
    ]);
    let plan = Message::Plan(vec![PlanEntry {
        file: 3,
        send: vec![false, true, true, false, true, false, false, false, true],
    }]);
    let digests = Message::Digests(Digests {
        first: 5,
        digests: vec![None, Some([1u8; 32])],
    });
    for m in [basis, plan, digests] {
        let f = m.encode();
        let (t, len) = decode_header(f[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(
            Message::decode(t, f[HEADER_LEN..HEADER_LEN + len].to_vec()).unwrap(),
            m
        );
    }
    // Files out of order, a "have" of no chunks, a stray plan bit, a bad flag.
    let bad = |t: FrameType, p: &[u8]| Message::decode(t, p.to_vec()).is_err();
    assert!(bad(FrameType::Basis, &[0, 0, 0, 2, 1, 0, 0, 0, 1, 1]));
    assert!(bad(FrameType::Basis, &[0, 0, 0, 1, 2, 0, 0, 0, 0]));
    assert!(bad(FrameType::Plan, &[0, 0, 0, 1, 0, 0, 0, 3, 0b1000]));
    assert!(bad(FrameType::Digests, &[0, 0, 0, 0, 0, 0, 0, 1, 2]));
    let mut d = vec![0, 0, 0, 0, 0, 0, 0, 1, 0];
    d.extend_from_slice(&[1u8; 32]);
    assert!(
        bad(FrameType::Digests, &d),
        "no digest may hide behind flag 0"
    );
}

#[test]
fn update_flags_travel_in_the_offer_and_streams_have_none() {
    let offer = Offer {
        kind: TransferKind::Files,
        entries: vec![entry("a", 1)],
        skipped: Vec::new(),
        update: true,
        checksum: true,
        continued: false,
    };
    assert_eq!(Offer::decode(&offer.encode()).unwrap(), offer);
    assert!(!offer.early_data(), "an update waits for the taker's basis");
    let mut bytes = offer.encode();
    bytes[1] = 4;
    assert!(Offer::decode(&bytes).is_err(), "unknown flag");
    let stream = [0u8, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(Offer::decode(&stream).is_err(), "a stream with a flag");
}

#[test]
fn a_large_offer_goes_in_frames_and_comes_back_whole() {
    let entries: Vec<_> = (0..40_000)
        .map(|i| entry(&format!("tree/some/longer/directory/name/file-{i:06}"), i))
        .collect();
    let offer = Offer {
        kind: TransferKind::Files,
        entries,
        skipped: vec!["tree/a-fifo".into()],
        update: true,
        checksum: false,
        continued: false,
    };
    let frames = offer.encode_frames(MAX_CONTROL).unwrap();
    assert!(frames.len() > 1, "{} frame(s)", frames.len());
    assert!(frames.iter().all(|f| f.len() <= MAX_CONTROL));
    let mut whole: Option<Offer> = None;
    for (i, f) in frames.iter().enumerate() {
        let (part, more) = Offer::decode_part(f).unwrap();
        assert_eq!(more, i + 1 < frames.len());
        match whole.as_mut() {
            None => whole = Some(part),
            Some(w) => w.extend(part).unwrap(),
        }
    }
    let whole = whole.unwrap();
    whole.check().unwrap();
    assert_eq!(whole, offer);
    // A name repeated across two frames is found once the offer is whole.
    let (mut first, _) = Offer::decode_part(&frames[0]).unwrap();
    let (again, _) = Offer::decode_part(&frames[0]).unwrap();
    first.extend(again).unwrap();
    assert!(first.check().is_err());
    // A part with other flags does not join.
    let (mut first, _) = Offer::decode_part(&frames[0]).unwrap();
    let mut other = Offer::decode_part(&frames[1]).unwrap().0;
    other.update = false;
    assert!(first.extend(other).is_err());
}
