//! pincat's integration tests, as one binary (`cargo test --test it`): the
//! real `pincat` binary on loopback, driven by the modules below. Run one
//! module with `cargo test --test it transfer::`.

// The toolkit: the `pincat serve` wrapper, in-process TLS peers, tools, data.
mod util;

// Hostile servers presenting the genuine certificate illegitimately (stolen cert, TLS 1.2).
mod adversarial;
// Private-CA trust: pincat- and openssl-issued identities, --ca and --allow-ca refusals.
mod ca;
// CA anchors out of their validity or not CAs, and chains the anchor did not sign directly.
mod ca_anchors;
// The command line as typed: address forms, the ncat form, -k, man pages, --help examples, completions.
mod face;
// Identities, mutual pinning, keep-open, retries, JSON events, signals, completions.
mod automation;
// serve --exec: handlers per transfer, their environment, exit 12, replies, cuts, --serial, files.
mod exec;
// Every command block of README.md and docs/, run on loopback.
mod docs;
// Peers killed at random points and full disks: never a partial or false success.
mod faults;
// Peers past the pin that lie: dangerous names, false sizes, forged or withheld receipts.
mod hostile;
// Raw mode against openssl, ncat and socat, both directions; fingerprints as openssl sees them.
mod interop;
// The receiver's bounds under attack: floods, memory and descriptor budgets, tricklers.
mod limits;
// Each transfer a message: named streams stored as files, never over one.
mod messages;
// What a newcomer reads: who gives, refusals once, offers that count gets given, progress on both ends.
mod newcomer;
// Through a real NAT built from network namespaces: both relays carry every verb (root).
mod nat;
// The default admission: codes, wrong codes, --code alone, --save, --allow-any.
mod pairing;
// Trees too large to offer whole, in parts: whole, resumed, refused out of order.
mod parts;
// Hostile senders of trees in parts: memory, idle time, a full disk, --strict, later parts.
mod parts_attacks;
// Through a relay on loopback (pincat's and the PyPI transit relay): every verb, hostile relays, bounds.
mod relay;
// The relay's bounds: floods per source, expiry, idle pairs, pairs per source, the byte cap, memory.
mod relay_bounds;
// Verified resume through a counting proxy.
mod resume;
// Progress on both ends: bars on a pseudo-terminal, periodic lines and the summary in logs.
mod progress;
// The paste-ready line of every listening verb and admission mode, run as printed.
mod paste;
// Known peers: the peers file, dialing by name, trust on first use, a changed key.
mod peers;
// Trees of any size: 200,000 files in bounded memory.
mod scale;
// The sender's own safety: files changing while sent, local mistakes, deceptive peer text.
mod sender_safety;
// Trust on first use: recorded once, a changed key refused, a key the server cannot prove.
mod tofu;
// The receiver's store under attack: aborts beside each other, umask, crashes, deep paths.
mod store_attacks;
// A local user swapping the receiver's directories for symlinks while transfers run.
mod store_races;
// Strangers who connect first to every listening verb get nothing; the real dialer then succeeds.
mod strangers;
// End-to-end transfers: streams, files, refusals, pins, IPv6, peers dying mid-transfer.
mod transfer;
// A tree as it left: modification times, --no-times, skips reported on both sides, --strict.
mod tree;
/// Key exchange: hybrid post-quantum between pincats, classical with older peers.
mod trust;
// send --update: identical files cost nothing, changed ones are swapped in whole.
mod update;
/// Every direction: offer/get, pipe (stdio, --exec, openssl), forward, role mismatches, dial addresses.
mod verbs;
