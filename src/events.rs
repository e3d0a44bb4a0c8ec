//! What pincat tells people and scripts: events rendered as human lines or as
//! one JSON object per line (stable schema, documented in the README), on stderr.
//! The event types and the sink are here; how each event reads is in `render`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fingerprint::{Fingerprint, Pin};
use crate::protocol::{RejectCode, TransferKind};

mod handler;
mod render;

pub(crate) use render::list_names;
pub use render::{human_bytes, rate};

/// What kind of transfer: the one vocabulary for events and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One byte stream of unknown length (framed).
    Stream,
    /// Named files and directories.
    Files,
    /// Raw mode: the TLS plaintext is the data.
    Raw,
}

impl Kind {
    /// The framed kind an offer announces.
    pub fn of(k: TransferKind) -> Kind {
        match k {
            TransferKind::Stream => Kind::Stream,
            TransferKind::Files => Kind::Files,
        }
    }

    /// Stable lower-case name (JSON `kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Files => "files",
            Kind::Raw => "raw",
        }
    }
}

/// Why a connection or an offer was refused (JSON `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client certificate is not allowed, missing, or not proven.
    NotAllowed,
    /// No handshake, preamble or offer in time.
    Timeout,
    /// The TLS handshake failed for another reason.
    Handshake,
    /// `--max-conns` connections are established already.
    MaxConns,
    /// `--max-handshakes` were in progress: the oldest was cut.
    MaxHandshakes,
    /// The peer broke the protocol before an offer.
    Protocol,
    /// The connection ended before an offer.
    Closed,
    /// The dialer did not prove the listener's code.
    Code,
    /// The offer was refused with this code.
    Offer(RejectCode),
    /// A relay connection waited for its partner longer than allowed.
    Unpaired,
}

impl Reason {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAllowed => "not-allowed",
            Reason::Timeout => "timeout",
            Reason::Handshake => "handshake",
            Reason::MaxConns => "max-conns",
            Reason::MaxHandshakes => "max-handshakes",
            Reason::Protocol => "protocol",
            Reason::Closed => "closed",
            Reason::Code => "code",
            Reason::Offer(code) => code.as_str(),
            Reason::Unpaired => "unpaired",
        }
    }
}

/// The negotiated TLS parameters of a session, by their IANA names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version (`TLSv1_3`).
    pub version: String,
    /// Cipher suite (`TLS13_AES_128_GCM_SHA256`).
    pub suite: String,
    /// Key-exchange group (`X25519MLKEM768`, or `X25519` with a classical peer).
    pub group: String,
}

impl TlsInfo {
    /// What `conn` negotiated.
    pub fn of(conn: &rustls::CommonState) -> TlsInfo {
        let name = |o: Option<String>| o.unwrap_or_default();
        TlsInfo {
            version: name(conn.protocol_version().map(|v| format!("{v:?}"))),
            suite: name(
                conn.negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite())),
            ),
            group: name(
                conn.negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name())),
            ),
        }
    }
}

/// What one confirmed transfer moved, the same report on both sides.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The other side.
    pub peer: SocketAddr,
    /// Stream, files or raw.
    pub kind: Kind,
    /// Files confirmed (0 for streams).
    pub files: u32,
    /// Payload bytes confirmed (what crossed the wire).
    pub bytes: u64,
    /// Bytes of the offered files the receiver already had and kept (a
    /// resumed partial file, chunks `--update` found unchanged): not sent.
    pub resumed: u64,
    /// Files left as they were because the quick check (same size and
    /// modification time) found them unchanged: their content was not
    /// compared (`send --update` without `--checksum`).
    pub unverified: u32,
    /// From the offer to the receipt (raw: from the first byte to the
    /// peer's close_notify).
    pub duration: Duration,
}

/// Something that happened, for a person or a script.
#[derive(Debug, Clone)]
pub enum Event {
    /// The server socket is bound.
    Listening {
        /// Bound address.
        addr: SocketAddr,
        /// The server certificate's fingerprint.
        fingerprint: Fingerprint,
        /// `HOST:PORT` forms another machine can dial (interface
        /// addresses when bound to a wildcard, then the host name).
        dial_addrs: Vec<String>,
        /// A paste-ready command for the other machine (the first address).
        command: String,
        /// The same with the code alone, to read aloud (listeners with a code).
        short_command: Option<String>,
        /// The code the dialer must prove; this event exists to hand it
        /// over, and no other event or log line ever carries it.
        code: Option<String>,
        /// Anyone who connects first is served (`--allow-any`).
        open: bool,
        /// What the other machine does, for people ("sending", "fetching").
        hint: &'static str,
        /// The relay that also reaches this listener, as `RELAY/RENDEZVOUS`
        /// (the rendezvous is in `command` too).
        via: Option<String>,
    },
    /// A TLS session was established (the pin check passed).
    Connected {
        /// The other side.
        peer: SocketAddr,
        /// The peer certificate's fingerprint, when it presented one.
        fingerprint: Option<Fingerprint>,
        /// What was negotiated.
        tls: TlsInfo,
    },
    /// Trust on first use: a known peer with no pin yet proved it holds
    /// this key, which is now recorded in the peers file (shown even with
    /// `--quiet`: it is a trust decision the user must check).
    FirstUse {
        /// The other side.
        peer: SocketAddr,
        /// The peer's name.
        name: String,
        /// The peers file the key was recorded in.
        file: String,
        /// The recorded public-key pin.
        pin: Pin,
        /// The fingerprint of the certificate it came in.
        fingerprint: Fingerprint,
    },
    /// A transfer began.
    TransferStarted {
        /// The other side.
        peer: SocketAddr,
        /// Whether this side gives the data (`send`, `offer`) rather than
        /// takes it (`serve`, `get`): what people read ("sending" or
        /// "receiving"); JSON leaves it out, the verb says it.
        giving: bool,
        /// Stream, files or raw.
        kind: Kind,
        /// Names of top-level entries (escaped).
        names: Vec<String>,
        /// Number of files.
        files: u32,
        /// Announced bytes, when known.
        bytes: Option<u64>,
        /// What the giver found in the offered directories and does not
        /// send (symbolic links, special files), by name.
        skipped: Vec<String>,
    },
    /// Bytes moved so far (throttled to a few per second).
    Progress {
        /// The other side.
        peer: SocketAddr,
        /// Bytes so far.
        bytes: u64,
        /// Expected total, when known.
        total: Option<u64>,
    },
    /// A transfer finished and was confirmed.
    TransferDone(Transfer),
    /// A relayed connection opened (`forward`).
    Opened {
        /// The other side.
        peer: SocketAddr,
        /// Where it is carried to.
        to: String,
    },
    /// A relayed session ended (`pipe`, `forward`).
    Closed {
        /// The other side.
        peer: SocketAddr,
        /// Bytes from our side to the peer.
        sent: u64,
        /// Bytes from the peer to our side.
        received: u64,
        /// From opening to closing.
        duration: Duration,
        /// `ok` (both directions ended with close_notify), `truncated` or
        /// `error`.
        outcome: &'static str,
    },
    /// A connection was refused (handshake, allow list, offer).
    Refused {
        /// The other side.
        peer: SocketAddr,
        /// Why, as a stable code.
        reason: Reason,
        /// The certificate the peer presented, if any.
        fingerprint: Option<Fingerprint>,
        /// Human explanation.
        message: String,
    },
    /// Something failed.
    Error {
        /// The other side, if the error concerns one connection.
        peer: Option<SocketAddr>,
        /// Stable error code.
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// Something the user should know but that does not stop the transfer.
    Warning {
        /// Human explanation.
        message: String,
    },
    /// A receiver's handler (`serve --exec`) ended: on the receiver after
    /// each run, on the sender when it failed (JSON `handler`, or `error`
    /// with code `handler` when it failed; both with `handler_status`).
    Handler {
        /// The other side, if known.
        peer: Option<SocketAddr>,
        /// Its status token: `exit:N`, `signal:N`, `timeout`, ...
        status: String,
        /// Whether it succeeded (exit 0).
        ok: bool,
        /// What happened, for a person.
        message: String,
        /// Bytes of its reply (its stdout).
        reply_bytes: u64,
    },
    /// One line a handler wrote on its stderr (escaped, capped).
    HandlerOutput {
        /// The peer whose message it handles.
        peer: SocketAddr,
        /// That peer's certificate fingerprint.
        fingerprint: Option<Fingerprint>,
        /// The line, without its newline.
        line: String,
    },
    /// `pincat relay` is bound.
    RelayListening {
        /// Bound address.
        addr: SocketAddr,
    },
    /// The relay paired two connections (the one that waited first is
    /// `peer`).
    Paired {
        /// The one that came first.
        peer: SocketAddr,
        /// The one that came second.
        partner: SocketAddr,
    },
    /// A pair the relay spliced has ended (JSON `closed`, with both
    /// addresses and the bytes each sent).
    RelayClosed {
        /// The one that came first.
        peer: SocketAddr,
        /// The one that came second.
        partner: SocketAddr,
        /// Bytes `peer` sent through the relay.
        from_peer: u64,
        /// Bytes `partner` sent through the relay.
        from_partner: u64,
        /// From pairing to the end of both directions.
        duration: Duration,
        /// `ok` (both ends closed) or `cut` (an error or the byte cap).
        outcome: &'static str,
    },
}

/// How events are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lines for people.
    Human,
    /// One JSON object per line.
    Json,
    /// Only errors and warnings, as human lines.
    Quiet,
}

type Hook = Box<dyn Fn(&Event) + Send + Sync>;

/// The event sink shared by a server or sender and its threads.
pub struct Events {
    mode: Mode,
    verbose: bool,
    out: Mutex<Box<dyn Write + Send>>,
    hook: Option<Hook>,
    last_progress: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("mode", &self.mode).finish()
    }
}

impl Events {
    /// Events rendered in `mode` to stderr.
    pub fn stderr(mode: Mode) -> Self {
        Self::to_writer(mode, Box::new(std::io::stderr()))
    }

    /// Events rendered in `mode` to any writer.
    pub fn to_writer(mode: Mode, out: Box<dyn Write + Send>) -> Self {
        Events {
            mode,
            verbose: false,
            out: Mutex::new(out),
            hook: None,
            last_progress: Mutex::new(None),
        }
    }

    /// No output at all (library use).
    pub fn silent() -> Self {
        Self::to_writer(Mode::Quiet, Box::new(std::io::sink()))
    }

    /// Also calls `hook` with every event, progress included and unthrottled.
    pub fn with_hook(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// With `on`, people also see each connection's TLS parameters (the
    /// `connected` event, which JSON always has), in human and quiet modes.
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    /// The rendering mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Emits one event.
    pub fn emit(&self, e: Event) {
        if let Some(h) = &self.hook {
            h(&e);
        }
        if let Event::Progress { .. } = e {
            // Progress is for scripts only, and at most a few lines a second.
            if self.mode != Mode::Json {
                return;
            }
            let mut last = self.last_progress.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < Duration::from_millis(250)) {
                return;
            }
            *last = Some(now);
        }
        let shown = match (&e, self.mode) {
            (_, Mode::Json) => true,
            (Event::Connected { .. }, _) => self.verbose,
            (Event::Error { .. } | Event::Warning { .. } | Event::FirstUse { .. }, _) => true,
            (Event::HandlerOutput { .. } | Event::Handler { ok: false, .. }, _) => true,
            (_, Mode::Human) => true,
            (_, Mode::Quiet) => false,
        };
        let line = match (shown, self.mode) {
            (false, _) => return,
            (true, Mode::Json) => e.to_json().to_string(),
            (true, _) => match e.to_human() {
                Some(l) => l,
                None => return,
            },
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // One write per event, so a reader never sees half a line.
        // Nothing useful can be done if stderr is gone.
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        let _ = out.write_all(&bytes);
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests;
