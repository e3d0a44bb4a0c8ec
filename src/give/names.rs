//! The top-level names of an offer, as events show them.

use crate::protocol::{self, Offer};

/// Most top-level names an event lists, and the most characters of each:
/// names come from a peer, and an event is one line.
const SHOWN_NAMES: usize = 32;
const SHOWN_NAME_CHARS: usize = 200;

/// Top-level names of an offer, escaped and capped for display (the last
/// item says how many more there are).
pub(crate) fn top_names(offer: &Offer) -> Vec<String> {
    let top: Vec<&str> = offer
        .entries
        .iter()
        .filter(|e| !e.name.contains('/'))
        .map(|e| e.name.as_str())
        .collect();
    let mut out: Vec<String> = top
        .iter()
        .take(SHOWN_NAMES)
        .map(|n| {
            let shown = protocol::escape_text(n);
            match shown.char_indices().nth(SHOWN_NAME_CHARS) {
                Some((i, _)) => format!("{}…", &shown[..i]),
                None => shown,
            }
        })
        .collect();
    if top.len() > SHOWN_NAMES {
        out.push(format!("… and {} more", top.len() - SHOWN_NAMES));
    }
    out
}
