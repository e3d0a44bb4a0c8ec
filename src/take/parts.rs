//! Taking a transfer in parts (see `give/parts.rs`): each part is accepted,
//! received and confirmed with its DIGESTS before the next part's OFFER is
//! read, into the same store transfer; the receipt comes once, after the
//! commit of the whole. Every name must come after the one before it in
//! the giver's walk order, so no name can come twice across parts and no
//! file can be a later entry's directory.

use std::cell::Cell;
use std::cmp::Ordering as Order;
use std::time::Instant;

use super::end::{End, shape_of};
use super::frames::{Grant, accept, send_digests};
use super::{NoOffer, Outcome, Taker, refusal, wire_fail};
use crate::digest::Hash;
use crate::events::{Event, Kind};
use crate::fingerprint::Fingerprint;
use crate::give::top_names;
use crate::protocol::{Offer, Refusal, RejectCode, escape_name};
use crate::session::{Session, WireError};
use crate::store;

/// The walk order across parts: the last name so far, and the top-level
/// names seen (one run of names each).
#[derive(Default)]
struct Walk {
    last: Option<(String, bool)>,
    tops: Vec<String>,
}

impl Walk {
    /// Checks that the part's names follow the ones before, in order.
    fn check(&mut self, offer: &Offer) -> std::result::Result<(), Refusal> {
        let bad = |why: &str, name: &str| {
            Refusal::new(
                RejectCode::BadName,
                format!("refused file name {}: {why}", escape_name(name)),
            )
        };
        let mut last = self.last.as_ref().map(|(n, d)| (n.as_str(), *d));
        for e in &offer.entries {
            let top = e.name.split('/').next().unwrap_or_default();
            match last {
                Some((l, l_dir)) if l.split('/').next() == Some(top) => {
                    if e.name.split('/').cmp(l.split('/')) != Order::Greater {
                        return Err(bad("it comes out of order, or twice", &e.name));
                    }
                    let under = e.name.len() > l.len()
                        && e.name.starts_with(l)
                        && e.name.as_bytes()[l.len()] == b'/';
                    if under && !l_dir {
                        return Err(bad(
                            "it is inside something that is not a directory",
                            &e.name,
                        ));
                    }
                }
                _ if self.tops.iter().any(|t| t == top) => {
                    return Err(bad("it comes out of order, or twice", &e.name));
                }
                _ => self.tops.push(top.to_string()),
            }
            last = Some((e.name.as_str(), e.is_dir));
        }
        if let Some((n, d)) = last {
            self.last = Some((n.to_string(), d));
        }
        Ok(())
    }
}

impl Taker {
    /// Takes a transfer in parts, its first part's offer read.
    pub(super) fn take_parts(
        &self,
        s: &mut Session,
        client: Option<Fingerprint>,
        secret: Option<Hash>,
        (offer, grant): (Offer, Grant<'_>),
    ) -> Outcome {
        let start = Instant::now();
        let mut walk = Walk::default();
        if let Err(r) = walk.check(&offer) {
            return self.refuse(s, client, r, true);
        }
        let (names, skipped) = (top_names(&offer), offer.skipped.clone());
        let shape = match self.keep_open {
            true => [0; 32],
            false => shape_of(&offer),
        };
        let mut t = match s.keep_alive_while(|| self.claim(offer, secret)) {
            Ok(t) => t,
            Err(r) => return self.refuse(s, client, r, true),
        };
        // Held while the part's names are: the offer memory counts them.
        let mut grant = grant;
        self.events.emit(Event::TransferStarted {
            peer: s.peer(),
            giving: false,
            kind: Kind::Files,
            names,
            files: 0,
            bytes: None,
            skipped,
        });
        let cut = Cell::new(false);
        let mut files = 0;
        let result = loop {
            let r = accept(s, &t)
                .map_err(wire_fail)
                .and_then(|()| self.receive(s, &mut t, (None, true), &cut));
            if let Err(r) = r {
                break Err(r);
            }
            files += t.part_files();
            if !t.continued() {
                break Ok(());
            }
            match self.next_part(s, &mut t, &mut walk, &cut) {
                Ok(g) => grant = g,
                Err(r) => break Err(r),
            }
        };
        drop(grant);
        s.set_deadline(None);
        let end = End {
            kind: Kind::Files,
            files,
            start,
            framed: true,
            cut: cut.get(),
            shape,
            parts: true,
            handed: None,
        };
        self.conclude(s, t, result, end)
    }

    /// Confirms the part just received (DIGESTS) and takes the next one;
    /// returns the share of the offer memory its names hold.
    fn next_part(
        &self,
        s: &mut Session,
        t: &mut store::Transfer,
        walk: &mut Walk,
        cut: &Cell<bool>,
    ) -> std::result::Result<Grant<'_>, Refusal> {
        let wire = |e: WireError| self.cut_short(e, cut);
        send_digests(s, t.digests(), t.files_before()).map_err(wire)?;
        s.set_deadline(Some(Instant::now() + self.idle_timeout));
        let (offer, grant) = self.read_frames(s, false).map_err(|e| match e {
            NoOffer::Wire(e) => wire(e),
            NoOffer::Refuse(r) => r,
            // The giver gave up (its walk failed): what arrived is kept.
            NoOffer::Refused(r) => {
                cut.set(true);
                r
            }
        })?;
        walk.check(&offer)?;
        s.keep_alive_while(|| t.next_part(offer)).map_err(refusal)?;
        Ok(grant)
    }
}
