//! pincat: move data between two machines over TLS 1.3, where the only trust
//! is a pinned SHA-256 certificate fingerprint. The `pincat` binary is a thin
//! layer over this library.
//!
//! Receive with [`Server`], send with [`send()`]; identities are [`Identity`],
//! pins are [`Fingerprint`].
//!
//! # Layout
//! Every command is one *transport role* (who dials, who listens) and one
//! *data role* (who gives, who takes):
//!
//! | module | its one job |
//! |---|---|
//! | [`fingerprint`] | the SHA-256 digest type: parse, display, compare |
//! | [`identity`] | keys and certificates (rcgen), PEM in and out |
//! | [`verify`] | where the pin is decided: rustls verifiers and TLS 1.3 configs |
//! | [`protocol`] | the wire format: typed [`protocol::Message`]s, encode/decode, no I/O |
//! | [`session`] | a TLS session over TCP: read and write messages, deadlines, close |
//! | `sys` (internal) | every OS call, through rustix; its header lists the few `unsafe` blocks left, each with a SAFETY comment |
//! | `store` (internal) | the taker's disk: one directory handle, transfers, commit/abort |
//! | [`net`] | transport roles: [`net::dialer`] (connect, retry, client TLS), [`net::listener`] (accept, caps, pool, shutdown) and [`net::endpoint`] ([`Listen`]: what every listening verb's options embed, and the bound listener) |
//! | `give`, `take` (internal) | the two data roles over any session |
//! | [`mod@send`], [`serve`] | push: dialer + giver, listener + taker |
//! | [`offer`] | pull: listener + giver (`offer`), dialer + taker (`get`) |
//! | [`pipe`] | full duplex over one session, stdio or a program |
//! | [`exec`] | `serve --exec`: each transfer handed to a program; its status the receipt, its stdout the reply |
//! | [`forward`] | a TCP service over pinned TLS: exposing and using ends |
//! | [`peers`] | known peers by name: the peers file, trust on first use |
//! | [`pair`] | pairing codes: the words, SPAKE2 inside the session, the listener's attempt budget |
//! | [`events`] | what people and scripts see: typed kinds, reasons, one transfer report |
//! | [`error`] | failures and exit codes |
//!
//! The binary adds only `cli/`: one module per verb group, its clap flags
//! beside their translation into these option structs (peer names,
//! signals, progress display); clap types never reach the library.
#![deny(unsafe_code)]

mod digest;
pub mod error;
pub mod events;
pub mod exec;
pub mod fingerprint;
pub mod forward;
mod give;
pub mod identity;
pub mod net;
pub mod offer;
pub mod pair;
pub mod peers;
pub mod pipe;
pub mod protocol;
pub mod record;
pub mod relay;
pub mod send;
pub mod serve;
pub mod session;
mod store;
mod sys;
mod take;
pub mod verify;

pub use error::{Error, ExitCode, Result};
pub use events::{Event, Events, Kind, Mode, Transfer};
pub use fingerprint::{Fingerprint, Pin};
pub use give::{Links, Paths, Source, UpdateMode};
pub use identity::Identity;
pub use net::endpoint::Listen;
pub use send::{SendOptions, SendReport, send, send_raw};
pub use serve::{Keep, Output, Received, ServeOptions, ServeSummary, Server, ShutdownHandle};
pub use verify::Allow;
pub use verify::ca::{CaAllow, CaRoots};

/// Reads a secret from the environment variable `var` and removes it from
/// the environment (no program started later inherits it). Call it before
/// starting threads.
pub fn take_env_secret(var: &str) -> Option<std::ffi::OsString> {
    sys::take_env(var.as_ref())
}

/// One line of standard input (without its newline, at most `max` bytes),
/// read a byte at a time from the descriptor so that nothing after it is
/// consumed: for a secret that comes before the data on stdin.
pub fn read_stdin_line(max: usize) -> std::io::Result<String> {
    let fd = sys::stdio().0;
    let mut bytes = Vec::new();
    let mut b = [0u8; 1];
    while bytes.len() < max {
        match sys::read_fd(fd, &mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => bytes.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Tunes the allocator for bulk transfers (keeps freed buffers instead of
/// returning them to the OS after every record). For a binary to call first
/// thing, before it starts threads.
pub fn tune_allocator() {
    sys::tune_allocator();
}
