//! pincat: move data between two machines over TLS 1.3, where the only trust
//! is a pinned SHA-256 certificate fingerprint. The `pincat` binary is a thin
//! layer over this library.
//!
//! Receive with [`Server`], send with [`send`]; identities are [`Identity`],
//! pins are [`Fingerprint`]. The pin is decided in [`verify`].

pub mod error;
pub mod events;
pub mod fingerprint;
pub mod fsutil;
pub mod identity;
pub mod protocol;
pub mod send;
pub mod serve;
pub mod sys;
pub mod verify;
pub mod wire;

pub use error::{Error, ExitCode, Result};
pub use events::{Event, Events, Mode};
pub use fingerprint::Fingerprint;
pub use identity::Identity;
pub use send::{SendOptions, SendReport, Source, send, send_raw};
pub use serve::{Output, Received, ServeOptions, ServeSummary, Server, ShutdownHandle};
