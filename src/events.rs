//! What pincat tells people and scripts: events rendered as human lines or as
//! one JSON object per line (stable schema, documented in the README), on stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fingerprint::{Fingerprint, Pin};
use crate::protocol::{RejectCode, TransferKind};

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
    /// Payload bytes confirmed.
    pub bytes: u64,
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
        /// Stream, files or raw.
        kind: Kind,
        /// Names of top-level entries (escaped).
        names: Vec<String>,
        /// Number of files.
        files: u32,
        /// Announced bytes, when known.
        bytes: Option<u64>,
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
}

impl Event {
    /// The JSON form (one object, `event` first).
    pub fn to_json(&self) -> Value {
        match self {
            Event::Listening {
                addr,
                fingerprint,
                dial_addrs,
                command,
                short_command,
                code,
                open,
                ..
            } => json!({"event": "listening", "addr": addr.to_string(),
                "fingerprint": fingerprint.to_string(), "dial_addrs": dial_addrs,
                "command": command, "send_command": command, "short_command": short_command,
                "code": code, "open": open}),
            Event::Connected {
                peer,
                fingerprint,
                tls,
            } => json!({"event": "connected", "peer": peer.to_string(),
                "fingerprint": fingerprint.map(|f| f.to_string()), "tls_version": tls.version,
                "cipher_suite": tls.suite, "key_exchange": tls.group}),
            Event::FirstUse {
                peer,
                name,
                file,
                pin,
                fingerprint,
            } => json!({"event": "first-use", "peer": peer.to_string(), "name": shown(name),
                "file": shown(file), "pin": pin.to_string(),
                "fingerprint": fingerprint.to_string()}),
            Event::TransferStarted {
                peer,
                kind,
                names,
                files,
                bytes,
            } => {
                json!({"event": "transfer-started", "peer": peer.to_string(), "kind": kind.as_str(),
                "names": names.iter().map(|n| shown(n)).collect::<Vec<_>>(), "files": files,
                "bytes": bytes})
            }
            Event::Progress { peer, bytes, total } => json!({"event": "progress",
                "peer": peer.to_string(), "bytes": bytes, "total": total}),
            Event::TransferDone(t) => json!({"event": "transfer-done", "peer": t.peer.to_string(),
                "kind": t.kind.as_str(), "files": t.files, "bytes": t.bytes,
                "duration_ms": t.duration.as_secs_f64() * 1000.0, "outcome": "ok"}),
            Event::Refused {
                peer,
                reason,
                fingerprint,
                message,
            } => json!({"event": "refused", "peer": peer.to_string(), "reason": reason.as_str(),
                "fingerprint": fingerprint.map(|f| f.to_string()), "message": shown(message)}),
            Event::Error {
                peer,
                code,
                message,
            } => json!({"event": "error", "peer": peer.map(|p| p.to_string()), "code": code,
                "message": shown(message)}),
            Event::Warning { message } => json!({"event": "warning", "message": shown(message)}),
            Event::Opened { peer, to } => json!({"event": "opened", "peer": peer.to_string(),
                "to": to}),
            Event::Closed {
                peer,
                sent,
                received,
                duration,
                outcome,
            } => json!({"event": "closed", "peer": peer.to_string(), "sent": sent,
                "received": received, "duration_ms": duration.as_secs_f64() * 1000.0,
                "outcome": outcome}),
        }
    }

    /// The human form, or `None` for events people do not need to see.
    pub fn to_human(&self) -> Option<String> {
        Some(match self {
            Event::Listening { .. } | Event::Connected { .. } | Event::FirstUse { .. } => {
                return self.trust_line();
            }
            Event::Progress { .. } | Event::Opened { .. } => return None,
            Event::Closed {
                peer,
                sent,
                received,
                outcome,
                ..
            } => format!(
                "pincat: closed {peer} ({outcome}): sent {}, received {}",
                human_bytes(*sent),
                human_bytes(*received)
            ),
            Event::TransferStarted {
                peer,
                kind,
                files,
                bytes,
                ..
            } => match kind {
                Kind::Files => format!(
                    "pincat: receiving {files} file(s), {} from {peer}",
                    human_bytes(bytes.unwrap_or(0))
                ),
                _ => format!("pincat: receiving a {} from {peer}", kind.as_str()),
            },
            Event::TransferDone(t) => {
                let what = if t.kind == Kind::Files {
                    format!("{} file(s), ", t.files)
                } else {
                    String::new()
                };
                format!(
                    "pincat: done: {what}{} in {:.2} s ({}/s) with {}",
                    human_bytes(t.bytes),
                    t.duration.as_secs_f64(),
                    human_bytes(rate(t.bytes, t.duration)),
                    t.peer
                )
            }
            Event::Refused { peer, message, .. } => {
                format!("pincat: refused {peer}: {}", shown(message))
            }
            Event::Error { peer, message, .. } => match peer {
                Some(p) => format!("pincat: error: {p}: {}", shown(message)),
                None => format!("pincat: error: {}", shown(message)),
            },
            Event::Warning { message } => format!("pincat: warning: {}", shown(message)),
        })
    }

    /// The human lines of the events about whom we talk to: listening,
    /// connected, and a first use.
    fn trust_line(&self) -> Option<String> {
        Some(match self {
            Event::Listening {
                addr,
                fingerprint,
                dial_addrs,
                command,
                short_command,
                open,
                hint,
                ..
            } => {
                let mut s = format!(
                    "pincat: listening on {addr}\npincat: fingerprint sha256:{fingerprint}\n\
                     pincat: on the {hint} machine run:\n  {command}"
                );
                if let Some(short) = short_command {
                    s.push_str(&format!(
                        "\npincat: or, to read aloud (the code alone checks both ends):\n  {short}"
                    ));
                }
                if *open {
                    s.push_str(
                        "\npincat: warning: --allow-any: anyone who connects first is served",
                    );
                }
                if dial_addrs.len() > 1 {
                    s.push_str(&format!(
                        "\npincat: (or with any of: {})",
                        dial_addrs[1..].join(", ")
                    ));
                }
                s
            }
            Event::Connected {
                peer,
                fingerprint,
                tls,
            } => {
                let cert = fingerprint
                    .map(|f| format!(", certificate sha256:{f}"))
                    .unwrap_or_default();
                format!(
                    "pincat: connected to {peer} ({}, {}, {}){cert}",
                    tls.version.replace('_', "."),
                    tls.suite,
                    tls.group
                )
            }
            Event::FirstUse {
                peer,
                name,
                file,
                pin,
                fingerprint,
            } => format!(
                "pincat: warning: FIRST USE of peer {} ({peer}): trusted the key it presented without a pin, and recorded it in {}:\n\
                 pincat:   {pin}  (certificate sha256:{fingerprint})\n\
                 pincat: check it with the peer's owner (`pincat fingerprint --spki` on their identity); from now on, another key is refused",
                shown(name),
                shown(file)
            ),
            _ => return None,
        })
    }
}

/// Free text as it may be shown: messages and names often quote a peer, and
/// whoever built them may have missed an escape. Escaping is idempotent, so
/// text escaped earlier is shown unchanged.
pub(crate) fn shown(text: &str) -> String {
    crate::protocol::escape_text(text)
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

/// Bytes per second.
pub fn rate(bytes: u64, d: Duration) -> u64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        (bytes as f64 / s) as u64
    } else {
        0
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_are_single_objects_with_event_first_field() {
        let buf = Buf::default();
        let ev = Events::to_writer(Mode::Json, Box::new(buf.clone()));
        let fp = Fingerprint::of_der(b"x");
        ev.emit(Event::Listening {
            addr: "127.0.0.1:9".parse().unwrap(),
            fingerprint: fp,
            dial_addrs: vec!["a:9".into()],
            command: "pincat send a:9 --pin x".into(),
            short_command: None,
            code: None,
            open: false,
            hint: "sending",
        });
        ev.emit(Event::Error {
            peer: None,
            code: "timeout",
            message: "line\nbreak".into(),
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["event"], "listening");
        assert_eq!(v["fingerprint"], fp.to_string());
        assert!(
            lines[0].starts_with(r#"{"event":"listening""#),
            "{}",
            lines[0]
        );
        let v: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["code"], "timeout");
    }

    #[test]
    fn progress_is_throttled_and_hidden_from_people() {
        let buf = Buf::default();
        let ev = Events::to_writer(Mode::Json, Box::new(buf.clone()));
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for i in 0..100 {
            ev.emit(Event::Progress {
                peer,
                bytes: i,
                total: None,
            });
        }
        let n = String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .count();
        assert_eq!(n, 1);
        let human = Buf::default();
        let ev = Events::to_writer(Mode::Human, Box::new(human.clone()));
        ev.emit(Event::Progress {
            peer,
            bytes: 1,
            total: None,
        });
        assert!(human.0.lock().unwrap().is_empty());
    }

    #[test]
    fn peer_text_in_events_is_escaped_in_both_forms() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let nasty = "exe.\u{202E}txt\u{200B}\u{2028}\u{1b}[2J";
        let events = [
            Event::Error {
                peer: Some(peer),
                code: "exists",
                message: nasty.into(),
            },
            Event::Refused {
                peer,
                reason: Reason::Offer(RejectCode::BadName),
                fingerprint: None,
                message: nasty.into(),
            },
            Event::Warning {
                message: nasty.into(),
            },
            Event::TransferStarted {
                peer,
                kind: Kind::Files,
                names: vec![nasty.into()],
                files: 1,
                bytes: Some(1),
            },
        ];
        for mode in [Mode::Json, Mode::Human] {
            let buf = Buf::default();
            let ev = Events::to_writer(mode, Box::new(buf.clone()));
            for e in events.clone() {
                ev.emit(e);
            }
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            for bad in ['\u{202E}', '\u{200B}', '\u{2028}', '\u{1b}'] {
                assert!(!text.contains(bad), "{mode:?}: {text:?}");
            }
            assert!(text.contains("\\u{202e}"), "{mode:?}: {text}");
            if mode == Mode::Json {
                for line in text.lines() {
                    let v: Value = serde_json::from_str(line).unwrap();
                    let s = v["message"].as_str().or(v["names"][0].as_str()).unwrap();
                    assert_eq!(s, "exe.\\u{202e}txt\\u{200b}\\u{2028}\\u{1b}[2J");
                }
            }
        }
    }

    #[test]
    fn connected_needs_verbose_and_first_use_is_never_quiet() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let fp = Fingerprint::of_der(b"c");
        let connected = Event::Connected {
            peer,
            fingerprint: Some(fp),
            tls: TlsInfo {
                version: "TLSv1_3".into(),
                suite: "TLS13_AES_128_GCM_SHA256".into(),
                group: "X25519MLKEM768".into(),
            },
        };
        let first = Event::FirstUse {
            peer,
            name: "box\u{1b}[2J".into(),
            file: "peers".into(),
            pin: Pin::Spki(Fingerprint::of_der(b"k")),
            fingerprint: fp,
        };
        let out = |mode: Mode, verbose: bool| {
            let buf = Buf::default();
            let ev = Events::to_writer(mode, Box::new(buf.clone())).verbose(verbose);
            ev.emit(connected.clone());
            ev.emit(first.clone());
            String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
        };
        let line = format!(
            "pincat: connected to {peer} (TLSv1.3, TLS13_AES_128_GCM_SHA256, X25519MLKEM768), certificate sha256:{fp}"
        );
        for mode in [Mode::Human, Mode::Quiet] {
            let plain = out(mode, false);
            assert!(
                !plain.contains("connected") && plain.contains("FIRST USE"),
                "{plain}"
            );
            assert!(!plain.contains('\u{1b}'), "{plain:?}");
            assert!(out(mode, true).starts_with(&line), "{mode:?}");
        }
        let json = out(Mode::Json, false);
        assert!(json.contains("\"event\":\"first-use\""), "{json}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }
}
