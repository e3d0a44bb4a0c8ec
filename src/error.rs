//! The errors a caller or script must tell apart, and their process exit codes.

use std::net::SocketAddr;

use thiserror::Error;

use crate::fingerprint::{Fingerprint, Pin};

/// Process exit codes; each is documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything was delivered and confirmed.
    Success = 0,
    /// Any other failure (local I/O, a file that changed while being read,
    /// unexpected TLS error).
    Failure = 1,
    /// Bad command line.
    Usage = 2,
    /// The server presented a certificate other than the pinned one.
    PinMismatch = 3,
    /// The receiver refused the transfer (file exists, bad name, no space, busy).
    Refused = 4,
    /// The receiver did not accept our client certificate (mutual pinning).
    NotAllowed = 5,
    /// A timeout: connecting, handshake, idle peer, or waiting for a sender.
    Timeout = 6,
    /// The peer broke off or broke the protocol; delivery is not confirmed.
    Incomplete = 7,
    /// Could not connect to the address at all.
    Connect = 8,
    /// The pairing code was not confirmed (a wrong code, someone in the
    /// middle, or a listener that takes no more codes); nothing was sent.
    CodeNotConfirmed = 9,
    /// A listener ended after its failed code attempts; nothing was given
    /// or stored.
    CodeAttempts = 10,
    /// `--strict`: something in the offered directories would have been
    /// skipped (a symbolic link, a special file); nothing was sent.
    Skipped = 11,
    /// The receiver's handler (`serve --exec`) failed: a non-zero exit, a
    /// signal, its timeout, or it could not start.
    Handler = 12,
    /// Stopped by SIGINT/SIGTERM.
    Interrupted = 130,
}

/// A pincat failure, classified for exit codes and JSON error events.
#[derive(Debug, Error)]
pub enum Error {
    /// The server's certificate does not match the pin.
    #[error(
        "the server at {addr} presented certificate sha256:{presented} but you pinned {expected}; someone may be impersonating it, or it restarted with a new identity"
    )]
    PinMismatch {
        /// Where we connected.
        addr: SocketAddr,
        /// The pins the user gave, as they print (`sha256:HEX` or `sha256//BASE64`, comma-separated).
        expected: String,
        /// What the server presented.
        presented: Fingerprint,
    },
    /// A known peer presented a key other than the one its entry records
    /// (or, on a first use, another pincat recorded another key meanwhile).
    #[error("{0}")]
    PeerKeyChanged(Box<KeyChanged>),
    /// The TLS handshake with the pinned server failed its signature check or
    /// otherwise could not prove the pinned identity.
    #[error(
        "the server at {addr} presented the pinned certificate but could not prove it holds its key ({detail}); someone may be impersonating it"
    )]
    Impostor {
        /// Where we connected.
        addr: SocketAddr,
        /// TLS detail.
        detail: String,
    },
    /// The server's certificate failed the private-CA check (`--ca`).
    #[error(
        "the server at {addr} is not trusted by the CA: {why} (it presented sha256:{presented}; expected a certificate issued by the CA for {name:?}, valid now)"
    )]
    Untrusted {
        /// Where we connected.
        addr: SocketAddr,
        /// What the server presented.
        presented: Fingerprint,
        /// Why the CA check refused it.
        why: String,
        /// The name its certificate had to carry.
        name: String,
    },
    /// The receiver refused the offer (or, on a receiver, the transfer was
    /// refused here).
    #[error("{message}")]
    Refused {
        /// Stable reason code.
        code: &'static str,
        /// One sentence: who refused, and the explanation (escaped).
        message: String,
    },
    /// The receiver refused our client certificate.
    #[error("the receiver at {addr} refused this sender's certificate{}: give it this sender's fingerprint with --allow (or its CA with --allow-ca), or send with an --identity it admits (its refused event says why)", match .fingerprint { Some(f) => format!(" sha256:{f}"), None => " (none was presented)".to_string() })]
    NotAllowed {
        /// Where we connected.
        addr: SocketAddr,
        /// Our fingerprint, if we presented one.
        fingerprint: Option<Fingerprint>,
    },
    /// A timeout.
    #[error("timed out {0}")]
    Timeout(String),
    /// The transfer did not complete or could not be confirmed.
    #[error("{0}")]
    Incomplete(String),
    /// Could not connect.
    #[error(
        "cannot connect to {addr}: {source}; is {listener} running there and the port reachable? (--retry-for waits for one that is still starting)"
    )]
    Connect {
        /// The address as given.
        addr: String,
        /// The last OS error.
        source: std::io::Error,
        /// What should listen there (`` `pincat serve` ``, the relay...).
        listener: &'static str,
    },
    /// The pairing code was not confirmed by the other end.
    #[error("{0}")]
    CodeNotConfirmed(String),
    /// The listener's code attempts are used up.
    #[error("{0}")]
    CodeAttempts(String),
    /// `--strict` and something would be skipped.
    #[error("{0}")]
    Skipped(String),
    /// The receiver's handler failed (`serve --exec`).
    #[error("{message}")]
    Handler {
        /// Its status token (`exit:3`, `signal:9`, `timeout`...).
        status: String,
        /// What happened, for a person.
        message: String,
    },
    /// Stopped by a signal.
    #[error("interrupted")]
    Interrupted,
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
    /// An error a listener already reported as an event about the
    /// connection it ended (`error`, with the peer): people are not shown
    /// it a second time (JSON still ends with its `error` event). The exit
    /// code and JSON code are the inner error's.
    #[error(transparent)]
    Shown(Box<Error>),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::PinMismatch { .. }
            | Error::PeerKeyChanged(_)
            | Error::Impostor { .. }
            | Error::Untrusted { .. } => ExitCode::PinMismatch,
            Error::Refused { code, .. } if *code == "code-required" => ExitCode::CodeNotConfirmed,
            Error::Refused { code, .. } if *code == "handler" => ExitCode::Handler,
            Error::Handler { .. } => ExitCode::Handler,
            Error::Refused { .. } => ExitCode::Refused,
            Error::CodeNotConfirmed(_) => ExitCode::CodeNotConfirmed,
            Error::CodeAttempts(_) => ExitCode::CodeAttempts,
            Error::Skipped(_) => ExitCode::Skipped,
            Error::NotAllowed { .. } => ExitCode::NotAllowed,
            Error::Timeout(_) => ExitCode::Timeout,
            Error::Incomplete(_) => ExitCode::Incomplete,
            Error::Connect { .. } => ExitCode::Connect,
            Error::Interrupted => ExitCode::Interrupted,
            Error::Other(_) => ExitCode::Failure,
            Error::Shown(e) => e.exit_code(),
        }
    }

    /// A failure to connect names `listener` as what should listen there
    /// (the dialing verbs other than `send` expect another verb).
    pub(crate) fn expecting(self, listener: &'static str) -> Error {
        match self {
            Error::Connect { addr, source, .. } if !addr.starts_with("the relay") => {
                Error::Connect {
                    addr,
                    source,
                    listener,
                }
            }
            e => e,
        }
    }

    /// Stable code used in JSON `error` events.
    pub fn code(&self) -> &'static str {
        match self {
            Error::PinMismatch { .. } | Error::PeerKeyChanged(_) => "pin-mismatch",
            Error::Impostor { .. } => "impostor",
            Error::Untrusted { .. } => "untrusted",
            Error::Refused { code, .. } => code,
            Error::NotAllowed { .. } => "not-allowed",
            Error::Timeout(_) => "timeout",
            Error::Incomplete(_) => "incomplete",
            Error::Connect { .. } => "connect",
            Error::CodeNotConfirmed(_) => "code-not-confirmed",
            Error::CodeAttempts(_) => "code-attempts",
            Error::Skipped(_) => "skipped",
            Error::Handler { .. } => "handler",
            Error::Interrupted => "interrupted",
            Error::Other(_) => "failure",
            Error::Shown(e) => e.code(),
        }
    }

    /// Whether people were already shown this error (see [`Error::Shown`]).
    pub fn shown(&self) -> bool {
        matches!(self, Error::Shown(_))
    }
}

/// What a known peer presented instead of its recorded key, and how to
/// update the entry once the new key is confirmed.
#[derive(Debug)]
pub struct KeyChanged {
    /// The peer's name.
    pub name: String,
    /// The peers file.
    pub file: String,
    /// Where we connected.
    pub addr: SocketAddr,
    /// `HOST:PORT` as the entry has it.
    pub dial: String,
    /// The recorded pins, as they print.
    pub recorded: String,
    /// The public-key pin of what the server presented.
    pub presented: Pin,
    /// The certificate fingerprint of what the server presented.
    pub cert: Fingerprint,
}

impl std::fmt::Display for KeyChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let KeyChanged {
            name,
            file,
            addr,
            dial,
            recorded,
            presented,
            cert,
        } = self;
        write!(
            f,
            "the key of peer {name} has changed: the server at {addr} presented {presented} (certificate sha256:{cert}) but {file} records {recorded}; someone may be impersonating it, or it has a new key. Nothing was sent. Only if its owner confirms the new key: pincat peers add {name} {dial} --pin {presented} --replace"
        )
    }
}

/// Result with a pincat [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
