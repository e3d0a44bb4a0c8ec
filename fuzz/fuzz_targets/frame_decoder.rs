//! Everything a peer's bytes go through before any policy: preamble, frame
//! headers, OFFER (names included), END/RECEIPT counts, REJECT/ERROR text,
//! and BASIS, PLAN and DIGESTS (which must round-trip).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pincat::protocol::{self, Offer};

fuzz_target!(|data: &[u8]| {
    if data.len() >= protocol::PREAMBLE_LEN {
        let mut p = [0u8; protocol::VERSION_LEN];
        p.copy_from_slice(&data[..protocol::VERSION_LEN]);
        if protocol::check_preamble(&p).is_ok() {
            let _ = protocol::check_role(data[protocol::VERSION_LEN], protocol::Role::Taker);
        }
    }
    // Walk the input as a frame stream, as the receiver does.
    let mut rest = data;
    while rest.len() >= protocol::HEADER_LEN {
        let mut h = [0u8; protocol::HEADER_LEN];
        h.copy_from_slice(&rest[..protocol::HEADER_LEN]);
        rest = &rest[protocol::HEADER_LEN..];
        let Ok((t, len)) = protocol::decode_header(&h) else { break };
        let payload = &rest[..len.min(rest.len())];
        rest = &rest[payload.len()..];
        if let Ok(m) = protocol::Message::decode(t, payload.to_vec()) {
            if matches!(m, protocol::Message::Basis(_) | protocol::Message::Plan(_) | protocol::Message::Digests(_)) {
                let f = m.encode();
                let mut h2 = [0u8; protocol::HEADER_LEN];
                h2.copy_from_slice(&f[..protocol::HEADER_LEN]);
                let (t2, _) = protocol::decode_header(&h2).unwrap();
                let back = protocol::Message::decode(t2, f[protocol::HEADER_LEN..].to_vec());
                assert_eq!(back.as_ref(), Ok(&m));
            }
        }
        if let Ok(offer) = Offer::decode(payload) {
            // Whatever decodes must be safe to use as relative paths and round-trip.
            for e in &offer.entries {
                assert!(protocol::validate_name(&e.name).is_ok());
                assert!(!e.name.starts_with('/') && !e.name.split('/').any(|c| c == ".."));
            }
            assert_eq!(Offer::decode(&offer.encode()).as_ref(), Ok(&offer));
        }
        let _ = protocol::decode_counts(payload, "END");
        let (_, msg) = protocol::decode_reject(payload);
        assert!(!msg.chars().any(|c| c.is_control()));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = protocol::validate_name(s);
        assert!(!protocol::escape_name(s).chars().any(|c| c.is_control()));
    }
});
