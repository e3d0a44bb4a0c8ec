//! What the relay holds per source: an address's share of unpaired
//! connections and of running pairs (an IPv6 source counts by its /64, so
//! one host's many addresses count once), and the pairs in all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The address a source's limits count under: an IPv4 address (also when
/// seen IPv4-mapped), or an IPv6 address's /64.
pub(super) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

/// Pairs being spliced: how many in all and per source.
#[derive(Default)]
pub(super) struct Slots {
    total: AtomicUsize,
    per: Mutex<HashMap<IpAddr, usize>>,
}

/// One running pair's place, given back when dropped (its splice ended,
/// or its thread could not start).
pub(super) struct Slot {
    slots: Arc<Slots>,
    keys: [IpAddr; 2],
}

impl Slots {
    /// A place for a pair between sources `a` and `b`, or why not: at most
    /// `max` pairs in all and `per_source` with each source in them.
    pub(super) fn take(
        self: &Arc<Self>,
        a: IpAddr,
        b: IpAddr,
        max: usize,
        per_source: usize,
    ) -> Result<Slot, &'static str> {
        let keys = [source_key(a), source_key(b)];
        let mut per = self.per.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::SeqCst) >= max {
            return Err("too many pairs at once");
        }
        let same = keys[0] == keys[1];
        let room = |k: &IpAddr, n: usize| per.get(k).copied().unwrap_or(0) + n <= per_source;
        let fits = match same {
            true => room(&keys[0], 2),
            false => room(&keys[0], 1) && room(&keys[1], 1),
        };
        if !fits {
            return Err("too many pairs from this address");
        }
        for k in keys {
            *per.entry(k).or_insert(0) += 1;
        }
        self.total.fetch_add(1, Ordering::SeqCst);
        Ok(Slot {
            slots: self.clone(),
            keys,
        })
    }

    /// Pairs running now.
    #[cfg(test)]
    pub(super) fn running(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self.slots.per.lock().unwrap_or_else(|p| p.into_inner());
        for k in self.keys {
            if let Some(n) = per.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&k);
                }
            }
        }
        self.slots.total.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_slash_64() {
        assert_eq!(source_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("2001:db8:1:2:bbbb::9")), ip("2001:db8:1:2::"));
        assert_ne!(source_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn slots_cap_pairs_in_all_and_per_source_and_come_back_when_dropped() {
        let s = Arc::new(Slots::default());
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("2001:db8::1"));
        let one = s.take(a, b, 3, 2).unwrap();
        let two = s.take(a, c, 3, 2).unwrap();
        assert_eq!(
            s.take(a, b, 3, 2).err(),
            Some("too many pairs from this address")
        );
        let three = s.take(b, ip("2001:db8::2"), 3, 2).unwrap();
        assert_eq!(s.running(), 3);
        assert_eq!(
            s.take(ip("10.9.9.9"), ip("10.9.9.8"), 3, 2).err(),
            Some("too many pairs at once")
        );
        drop((one, two, three));
        assert_eq!(s.running(), 0);
        assert!(s.per.lock().unwrap().is_empty());
        // Both ends from one source count twice.
        let _x = s.take(a, a, 3, 2).unwrap();
        assert!(s.take(a, b, 3, 2).is_err());
    }
}
