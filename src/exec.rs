//! `serve --exec`: each transfer handed to a program the receiver runs,
//! whose exit status is the sender's receipt and whose output its reply.
//!
//! This file holds the options, a handler's [`Status`] and what it is told
//! about the peer; the work is split by job:
//! - `env.rs`: its environment, an allowlist plus the verified peer;
//! - `spool.rs`: a message held (memory, then an unnamed file) until it
//!   ended, and the reply, bounded;
//! - `run.rs`: starting it, feeding it, its stderr, its end (timeouts);
//! - `serial.rs`: `--serial`'s queue, in arrival order.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::fingerprint::{Fingerprint, Pin};
use crate::protocol::Refusal;

mod env;
mod run;
mod serial;
mod spool;

pub(crate) use run::{Input, Running};
pub(crate) use serial::{Queue, Ticket};
pub(crate) use spool::Spool;

/// Most bytes of a handler's reply (its stdout); more is a failure.
pub const REPLY_MAX: u64 = 16 << 20;

/// Most bytes of a message (or reply) held in memory; past it, it goes
/// to an unnamed file in the private state directory.
pub const SPOOL_MEMORY: usize = 1 << 20;

/// How long a handler has between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// The program `serve --exec` runs for each transfer, and how.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The program (found on the PATH when it has no slash).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables of pincat's environment passed on besides the basic ones
    /// (names starting with `PINCAT_` are never taken from it).
    pub env: Vec<String>,
    /// Start it at once and feed it the data as it arrives
    /// (`--exec-stream`); a cut message ends it with SIGTERM.
    pub stream: bool,
    /// Kill it (SIGTERM, then SIGKILL) when it runs longer.
    pub timeout: Option<Duration>,
    /// One at a time, in arrival order.
    pub serial: bool,
    /// Known peers' names by pin, for `PINCAT_PEER_NAME`.
    pub names: Vec<(Pin, String)>,
}

/// A server's handler: its options, `--serial`'s queue, where it spools.
pub(crate) struct Exec {
    pub(crate) opts: ExecOptions,
    pub(crate) queue: Arc<Queue>,
    /// The private state directory (spooled messages, files lists).
    pub(crate) dir: PathBuf,
    /// `--out`: files are taken into it and handed over; streams refused.
    pub(crate) out: Option<PathBuf>,
    /// The sink of the handler's events.
    pub(crate) events: Arc<crate::events::Events>,
    /// Set as the receiver shuts down: running handlers are ended.
    pub(crate) stop: Arc<AtomicBool>,
    /// Handlers started and not yet reaped.
    pub(crate) live: Arc<AtomicUsize>,
}

impl Exec {
    /// A handler for a server writing files into `out` (or taking
    /// streams, without it).
    pub(crate) fn new(
        opts: ExecOptions,
        out: Option<PathBuf>,
        events: Arc<crate::events::Events>,
        stop: Arc<AtomicBool>,
    ) -> crate::Result<Exec> {
        Ok(Exec {
            opts,
            queue: Default::default(),
            dir: state_dir()?,
            out,
            events,
            stop,
            live: Default::default(),
        })
    }

    /// Waits (at most `limit`) until no handler runs: after a shutdown,
    /// each is being ended by the thread that started it.
    pub(crate) fn wait_ended(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.live.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Who is at `addr`: the certificate it proved (`client`), its key's
    /// pin as this thread's verifier recorded it for that certificate, and
    /// its name when a known peer has that pin.
    pub(crate) fn peer(&self, addr: SocketAddr, client: Option<Fingerprint>) -> Peer {
        let presented = crate::verify::Presented::per_thread();
        let spki = presented
            .spki()
            .filter(|_| client.is_some() && presented.get() == client);
        let name = self.opts.names.iter().find_map(|(pin, name)| {
            let hit = match pin {
                Pin::Cert(c) => Some(*c) == client,
                Pin::Spki(_) => Some(*pin) == spki,
            };
            hit.then(|| name.clone())
        });
        // Else the name the CA issued its certificate for, if the CA
        // admitted it on this thread's handshake.
        let name = name.or_else(|| client.and(crate::verify::issued_name()));
        Peer {
            addr,
            fingerprint: client,
            spki,
            name,
        }
    }

    /// Starts the handler for `peer` with `input`.
    pub(crate) fn start(
        &self,
        peer: &Peer,
        about: &About,
        input: Input,
    ) -> Result<Running, Status> {
        let lookup = |k: &str| std::env::var_os(k);
        let env = env::handler_env(&lookup, &self.opts.env, peer, about);
        let cwd = about.files_list.as_ref().and(self.out.as_deref());
        run::start(self, env, cwd, input, peer)
    }
}

/// Who sent a message, from the verified handshake only.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) spki: Option<Pin>,
    pub(crate) name: Option<String>,
}

/// What a handler is told about the message.
#[derive(Debug, Clone, Default)]
pub(crate) struct About {
    /// The validated name of a named stream (`send --as NAME`).
    pub(crate) name: Option<String>,
    /// Its size, once known (a spooled message).
    pub(crate) bytes: Option<u64>,
    /// The list of received files (files mode).
    pub(crate) files_list: Option<PathBuf>,
}

/// How a handler ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// It ran past `--exec-timeout` and was killed.
    Timeout(Duration),
    /// It could not be started.
    NotStarted(String),
    /// Its reply went past [`REPLY_MAX`]; it was killed.
    ReplyTooLarge,
    /// Something else went wrong around it (its input, its output).
    Failed(String),
}

impl Status {
    /// Whether the sender gets its receipt.
    pub fn ok(&self) -> bool {
        *self == Status::Exited(0)
    }

    /// The stable token of JSON `handler_status` (and of the ERROR frame):
    /// `exit:N`, `signal:N`, `timeout`, `not-started`, `reply-too-large`,
    /// `failed`.
    pub fn token(&self) -> String {
        match self {
            Status::Exited(c) => format!("exit:{c}"),
            Status::Signaled(s) => format!("signal:{s}"),
            Status::Timeout(_) => "timeout".into(),
            Status::NotStarted(_) => "not-started".into(),
            Status::ReplyTooLarge => "reply-too-large".into(),
            Status::Failed(_) => "failed".into(),
        }
    }

    /// One line for a person, said of the receiver's handler.
    pub fn message(&self) -> String {
        match self {
            Status::Exited(c) => format!("the receiver's handler exited with status {c}"),
            Status::Signaled(s) => format!("the receiver's handler was ended by signal {s}"),
            Status::Timeout(d) => format!(
                "the receiver's handler ran past its timeout (--exec-timeout {}) and was killed",
                humantime::format_duration(*d)
            ),
            Status::NotStarted(e) => format!("cannot start handler: {e}"),
            Status::ReplyTooLarge => format!(
                "the receiver's handler wrote more than {} MiB of reply and was killed",
                REPLY_MAX >> 20
            ),
            Status::Failed(e) => format!("the receiver's handler failed: {e}"),
        }
    }

    /// The ERROR (or REJECT) that tells the sender: its token, a space,
    /// its message.
    pub(crate) fn refusal(&self) -> Refusal {
        let text = format!("{} {}", self.token(), self.message());
        Refusal::new(crate::protocol::RejectCode::Handler, text)
    }
}

/// The sender's error for a receiver's handler failure (REJECT or ERROR
/// with code `handler`): its status token split off the message.
pub(crate) fn handler_error(r: Refusal) -> Error {
    let token_like = |t: &str| {
        !t.is_empty()
            && t.len() <= 24
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'-')
    };
    match r.message.split_once(' ') {
        Some((t, m)) if token_like(t) => Error::Handler {
            status: t.to_string(),
            message: m.to_string(),
        },
        _ => Error::Handler {
            status: "failed".into(),
            message: r.message,
        },
    }
}

impl Error {
    /// The receiver's handler status, for an error that is its failure.
    pub fn handler_status(&self) -> Option<&str> {
        match self {
            Error::Handler { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// The sender's side of a reply: REPLY frames written to its stdout as
/// they come, never more than [`REPLY_MAX`] bytes in all.
#[derive(Default)]
pub(crate) struct ReplyOut {
    written: u64,
}

impl ReplyOut {
    /// Writes one REPLY frame's bytes to stdout.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> crate::Result<()> {
        use std::io::Write;
        self.written += bytes.len() as u64;
        if self.written > REPLY_MAX {
            return Err(Error::Incomplete(format!(
                "the receiver broke the protocol: a reply of more than {} MiB",
                REPLY_MAX >> 20
            )));
        }
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(|e| anyhow::anyhow!("cannot write the reply to stdout: {e}").into())
    }
}

/// Where spooled messages and files lists go: the private state
/// directory (`PINCAT_STATE_DIR`, else `$XDG_STATE_HOME/pincat`, else
/// `~/.local/state/pincat`), made private when missing.
pub fn state_dir() -> crate::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = crate::pair::state_dir()?.join("exec");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| anyhow::anyhow!("cannot make the state directory {}: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RejectCode;

    #[test]
    fn a_status_travels_as_its_token_and_message() {
        for st in [
            Status::Exited(3),
            Status::Signaled(9),
            Status::Timeout(Duration::from_secs(2)),
            Status::NotStarted("No such file or directory".into()),
            Status::ReplyTooLarge,
        ] {
            let r = st.refusal();
            assert_eq!(r.code, RejectCode::Handler);
            match handler_error(r) {
                Error::Handler { status, message } => {
                    assert_eq!(status, st.token());
                    assert_eq!(message, st.message());
                }
                e => panic!("{e:?}"),
            }
        }
        assert!(Status::Exited(3).message().contains("status 3"));
        assert!(Status::Exited(0).ok() && !Status::Exited(1).ok());
        let e = handler_error(Refusal::new(RejectCode::Handler, "\u{202e}odd"));
        assert_eq!(e.handler_status(), Some("failed"));
        assert_eq!(e.exit_code(), crate::ExitCode::Handler);
    }
}
