//! The sending side: connect, pin the server, offer, stream, and succeed only
//! on a receipt that matches what was sent.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConnection};

use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::fingerprint::Fingerprint;
use crate::identity::Identity;
use crate::protocol::{self, FrameType, HEADER_LEN, Offer, RejectCode, TransferKind};
use crate::verify::{self, Presented};
use crate::wire::{Session, WireError};

mod files;
use files::{FileSeq, plan};

/// Bytes read from the source per DATA frame.
pub const CHUNK: usize = 256 * 1024;

/// How to reach and trust the receiver.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// `HOST:PORT` as the user gave it.
    pub addr: String,
    /// The receiver's certificate fingerprint.
    pub pin: Fingerprint,
    /// Client certificate to present (mutual pinning).
    pub identity: Option<Identity>,
    /// Limit for each TCP connect attempt.
    pub connect_timeout: Duration,
    /// Keep retrying refused/unreachable connects this long.
    pub retry_for: Option<Duration>,
    /// Limit for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Limit for any single read or write once connected (receipt included).
    pub idle_timeout: Duration,
}

impl SendOptions {
    /// Options with the documented defaults.
    pub fn new(addr: impl Into<String>, pin: Fingerprint) -> Self {
        SendOptions {
            addr: addr.into(),
            pin,
            identity: None,
            connect_timeout: Duration::from_secs(10),
            retry_for: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl SendOptions {
    /// Zero durations are mistakes, as on the command line.
    fn check(&self) -> Result<()> {
        let zero = [
            ("connect_timeout", self.connect_timeout.is_zero()),
            ("handshake_timeout", self.handshake_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("retry_for", self.retry_for.is_some_and(|d| d.is_zero())),
        ];
        match zero.iter().find(|(_, z)| *z) {
            Some((name, _)) => Err(anyhow!(
                "SendOptions::{name} must not be zero (leave it at its default instead)"
            )
            .into()),
            None => Ok(()),
        }
    }
}

/// What to send.
pub enum Source {
    /// Standard input, as a stream.
    Stdin,
    /// Any reader, as a stream.
    Reader(Box<dyn Read + Send>),
    /// Files and directories (recursively), by path.
    Paths(Vec<PathBuf>),
}

/// What a confirmed transfer moved.
#[derive(Debug, Clone)]
pub struct SendReport {
    /// The receiver's address.
    pub peer: SocketAddr,
    /// Files confirmed.
    pub files: u32,
    /// Payload bytes confirmed.
    pub bytes: u64,
    /// Handshake to receipt.
    pub duration: Duration,
}

/// Sends `source` to the pinned receiver; `Ok` only after a matching receipt.
///
/// ```
/// use pincat::{send, Events, Output, SendOptions, ServeOptions, Server, Source};
/// let dir = std::env::temp_dir().join(format!("pincat-doc-{}", std::process::id()));
/// let mut serve = ServeOptions::new("127.0.0.1:0".parse().unwrap());
/// serve.output = Output::Path(dir.join("hello.txt"));
/// std::fs::create_dir_all(&dir).unwrap();
/// let server = Server::bind(serve, Events::silent()).unwrap();
/// let opts = SendOptions::new(server.local_addr().to_string(), server.fingerprint());
/// let receiver = std::thread::spawn(move || server.run());
///
/// let data: &'static [u8] = b"hello";
/// let report = send(&opts, Source::Reader(Box::new(data)), &Events::silent()).unwrap();
/// assert_eq!(report.bytes, 5);
/// receiver.join().unwrap().unwrap();
/// assert_eq!(std::fs::read(dir.join("hello.txt")).unwrap(), b"hello");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn send(opts: &SendOptions, source: Source, events: &Events) -> Result<SendReport> {
    opts.check()?;
    // Everything local is settled before the receiver is contacted.
    let (offer, reader) = prepare(source, events)?;
    let mut s = connect(opts, events)?;
    let start = Instant::now();
    let peer = s.peer;
    let mut buf = Vec::new();
    open_transfer(&mut s, &offer, opts, &mut buf)?;
    events.emit(Event::TransferStarted {
        peer,
        kind: kind_name(offer.kind),
        names: top_names(&offer),
        files: offer.file_count(),
        bytes: announced(&offer),
    });
    let sent = stream_all(&mut s, reader, &mut buf, &offer, opts, events)?;
    let (files, bytes) = await_receipt(&mut s, &mut buf, &offer, sent, opts)?;
    s.close();
    let duration = start.elapsed();
    events.emit(Event::TransferDone {
        peer,
        kind: kind_name(offer.kind),
        files,
        bytes,
        duration,
    });
    Ok(SendReport {
        peer,
        files,
        bytes,
        duration,
    })
}

/// The offer and the reader of its data. For paths this is the plan, which
/// finds missing, unreadable and special files without any connection.
fn prepare(source: Source, events: &Events) -> Result<(Offer, Box<dyn Read + Send>)> {
    Ok(match source {
        Source::Stdin => (stream_offer(), Box::new(io::stdin())),
        Source::Reader(r) => (stream_offer(), r),
        Source::Paths(paths) => {
            let planned = plan(&paths, events)?;
            let offer = Offer {
                kind: TransferKind::Files,
                entries: planned.iter().map(|p| p.entry.clone()).collect(),
            };
            if offer.encode().len() > protocol::MAX_CONTROL {
                return Err(anyhow!("too many files or names for one transfer; split it").into());
            }
            (offer, Box::new(FileSeq::new(&planned)))
        }
    })
}

/// Sends the preamble and the offer; `Ok` once the receiver accepted it.
fn open_transfer(
    s: &mut Session<ClientConnection>,
    offer: &Offer,
    opts: &SendOptions,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let peer = s.peer;
    let map = |e: WireError| classify(e, opts, peer, "during the transfer");
    let mut hello = protocol::preamble().to_vec();
    hello.extend_from_slice(&protocol::frame(FrameType::Offer, &offer.encode()));
    s.write_all(&hello).map_err(map)?;
    s.read_preamble().map_err(map)?;
    match s.read_frame(buf).map_err(map)? {
        FrameType::Accept => Ok(()),
        FrameType::Reject | FrameType::Error => {
            let (code, message) = protocol::decode_reject(buf);
            Err(Error::Refused {
                code: code.as_str(),
                message,
            })
        }
        t => Err(unexpected(t, "ACCEPT")),
    }
}

/// Streams all data and the END frame; returns the bytes sent. A failure
/// (of the source or the connection) is reported to the receiver.
fn stream_all(
    s: &mut Session<ClientConnection>,
    reader: Box<dyn Read + Send>,
    buf: &mut Vec<u8>,
    offer: &Offer,
    opts: &SendOptions,
    events: &Events,
) -> Result<u64> {
    let total = announced(offer);
    // Small sources (a 100-byte message) need no 256 KiB buffer.
    let chunk = match total {
        Some(t) => (t as usize).clamp(4096, CHUNK),
        None => 16 * 1024,
    };
    buf.resize(HEADER_LEN + chunk, 0);
    let mut sent: u64 = 0;
    if let Err(e) = pump(s, reader, buf, &mut sent, total, events) {
        return Err(after_write_failure(s, e, opts, sent));
    }
    s.write_frame(
        FrameType::End,
        &protocol::encode_counts(offer.file_count(), sent),
    )
    .map_err(|e| after_write_failure(s, SendFail::Wire(e), opts, sent))?;
    Ok(sent)
}

/// Waits for the receipt and checks it confirms exactly what was sent.
fn await_receipt(
    s: &mut Session<ClientConnection>,
    buf: &mut Vec<u8>,
    offer: &Offer,
    sent: u64,
    opts: &SendOptions,
) -> Result<(u32, u64)> {
    let peer = s.peer;
    let receipt = s.read_frame(buf).map_err(|e| match e {
        WireError::Timeout => Error::Timeout(format!(
            "waiting for the receipt from {peer}: all {sent} bytes were sent but delivery is not confirmed"
        )),
        e => classify(e, opts, peer, "while waiting for the receipt"),
    })?;
    match receipt {
        FrameType::Receipt => {}
        FrameType::Error => {
            let (code, message) = protocol::decode_reject(buf);
            return Err(receiver_failed(code, message));
        }
        t => return Err(unexpected(t, "RECEIPT")),
    }
    let (files, bytes) =
        protocol::decode_counts(buf, "RECEIPT").map_err(|e| Error::Incomplete(e.to_string()))?;
    if files != offer.file_count() || bytes != sent {
        return Err(Error::Incomplete(format!(
            "the receiver confirmed {files} file(s) and {bytes} bytes, but {} file(s) and {sent} bytes were sent",
            offer.file_count()
        )));
    }
    Ok((files, bytes))
}

/// The bytes an offer announces; a stream announces none.
fn announced(offer: &Offer) -> Option<u64> {
    (offer.kind == TransferKind::Files).then(|| offer.total_bytes())
}

fn stream_offer() -> Offer {
    Offer {
        kind: TransferKind::Stream,
        entries: vec![],
    }
}

fn kind_name(k: TransferKind) -> &'static str {
    match k {
        TransferKind::Stream => "stream",
        TransferKind::Files => "files",
    }
}

/// Top-level names of an offer, escaped for display.
pub(crate) fn top_names(offer: &Offer) -> Vec<String> {
    offer
        .entries
        .iter()
        .filter(|e| !e.name.contains('/'))
        .map(|e| protocol::escape_text(&e.name))
        .collect()
}

fn unexpected(t: FrameType, expected: &'static str) -> Error {
    Error::Incomplete(format!(
        "the receiver broke the protocol: {}",
        protocol::ProtocolError::Unexpected {
            got: t.name(),
            expected
        }
    ))
}

fn receiver_failed(code: RejectCode, message: String) -> Error {
    Error::Refused {
        code: code.as_str(),
        message: format!("the receiver failed to store the data: {message}"),
    }
}

/// Why pumping data stopped.
enum SendFail {
    Wire(WireError),
    Source(anyhow::Error),
}

/// Sends everything `r` yields as DATA frames.
///
/// Reading on this same thread is deliberate: a read-ahead thread (and a
/// write-behind thread on the receiver) were measured on 2 cores and cost
/// about 10% throughput through extra CPU for the hand-offs.
fn pump(
    s: &mut Session<ClientConnection>,
    mut r: Box<dyn Read + Send>,
    buf: &mut Vec<u8>,
    sent: &mut u64,
    total: Option<u64>,
    events: &Events,
) -> std::result::Result<(), SendFail> {
    loop {
        // A source that keeps filling the buffer gets a larger one.
        if buf.len() < HEADER_LEN + CHUNK && *sent >= (buf.len() as u64) * 4 {
            buf.resize(HEADER_LEN + CHUNK, 0);
        }
        // Files (known total) fill each frame across file boundaries, so
        // many small files travel in few records; a stream sends what it
        // has at once, so interactive input is not held back.
        let n = match fill(&mut *r, &mut buf[HEADER_LEN..], total.is_some()) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if files::names_its_file(&e) => {
                return Err(SendFail::Source(anyhow::Error::new(e)));
            }
            Err(e) => {
                return Err(SendFail::Source(
                    anyhow::Error::new(e).context("cannot read the input"),
                ));
            }
        };
        send_data(s, &mut buf[..HEADER_LEN + n], sent, total, events)?;
    }
}

/// One read, or (with `full`) reads until `buf` is full or the source ends.
fn fill(r: &mut dyn Read, buf: &mut [u8], full: bool) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && n > 0 => continue,
            Err(e) if n > 0 && !files::names_its_file(&e) => return Ok(n),
            Err(e) => return Err(e),
        }
        if !full {
            break;
        }
    }
    Ok(n)
}

/// Frames and sends one DATA payload that sits at `frame[HEADER_LEN..]`.
fn send_data(
    s: &mut Session<ClientConnection>,
    frame: &mut [u8],
    sent: &mut u64,
    total: Option<u64>,
    events: &Events,
) -> std::result::Result<(), SendFail> {
    let n = frame.len() - HEADER_LEN;
    frame[..HEADER_LEN].copy_from_slice(&protocol::encode_header(FrameType::Data, n));
    s.write_all(frame).map_err(SendFail::Wire)?;
    *sent += n as u64;
    events.emit(Event::Progress {
        peer: s.peer,
        bytes: *sent,
        total,
    });
    Ok(())
}

/// Turns a failure while streaming into the most useful error: the receiver's
/// own ERROR frame when it sent one, else what happened locally.
fn after_write_failure(
    s: &mut Session<ClientConnection>,
    fail: SendFail,
    opts: &SendOptions,
    sent: u64,
) -> Error {
    let peer = s.peer;
    match fail {
        SendFail::Source(e) => {
            let msg = format!("{e:#}");
            let _ = s.write_frame(FrameType::Abort, msg.as_bytes());
            s.close();
            Error::Other(e)
        }
        SendFail::Wire(e) => {
            // The receiver may have explained itself before closing.
            // Read it without flushing our own pending output first: that
            // flush is what just failed.
            if let Some((FrameType::Error, buf)) = s.read_pending_frame(Duration::from_secs(2)) {
                let (code, message) = protocol::decode_reject(&buf);
                return receiver_failed(code, message);
            }
            match e {
                WireError::Closed | WireError::Reset => Error::Incomplete(format!(
                    "the receiver at {peer} closed the connection after {sent} bytes; delivery is not confirmed"
                )),
                e => classify(e, opts, peer, "during the transfer"),
            }
        }
    }
}

/// Connects (retrying within `retry_for`) and completes the pinned handshake.
fn connect(opts: &SendOptions, events: &Events) -> Result<Session<ClientConnection>> {
    let deadline = opts.retry_for.map(|d| Instant::now() + d);
    let mut delay = Duration::from_millis(50);
    let sock = loop {
        match connect_once(opts) {
            Ok(sock) => break sock,
            Err(e) => {
                let retryable = matches!(&e, Error::Connect { .. } | Error::Timeout(_));
                match deadline {
                    Some(d) if retryable && Instant::now() + delay < d => {
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_millis(500));
                    }
                    _ => return Err(e),
                }
            }
        }
    };
    let peer = sock
        .peer_addr()
        .context("cannot read the peer address")
        .map_err(Error::Other)?;
    let presented = Presented::default();
    let config = verify::client_config(Some(opts.pin), opts.identity.as_ref(), presented.clone())?;
    let name =
        ServerName::try_from(verify::SERVER_NAME).map_err(|e| anyhow!("bad server name: {e}"))?;
    let conn = ClientConnection::new(config, name).context("cannot start TLS")?;
    let s = Session::handshake(conn, sock, opts.handshake_timeout).map_err(|e| match e {
        WireError::Tls(ref tls) => match presented.get() {
            Some(fp) if fp != opts.pin => Error::PinMismatch {
                addr: peer,
                expected: opts.pin,
                presented: fp,
            },
            Some(_) => Error::Impostor {
                addr: peer,
                detail: tls.to_string(),
            },
            None => handshake_failure(e, opts, peer, "--handshake-timeout"),
        },
        e => handshake_failure(e, opts, peer, "--handshake-timeout"),
    })?;
    s.set_idle_timeout(opts.idle_timeout)
        .context("cannot set socket timeouts")?;
    events.emit(Event::Connected {
        peer,
        fingerprint: presented.get(),
    });
    Ok(s)
}

fn connect_once(opts: &SendOptions) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = opts
        .addr
        .to_socket_addrs()
        .map_err(|e| Error::Connect {
            addr: opts.addr.clone(),
            source: e,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for a in &addrs {
        match TcpStream::connect_timeout(a, opts.connect_timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    if matches!(
        last.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        return Err(Error::Timeout(format!(
            "connecting to {} (see --connect-timeout)",
            opts.addr
        )));
    }
    Err(Error::Connect {
        addr: opts.addr.clone(),
        source: last,
    })
}

/// A handshake failure that is not about the pin. A timeout names `flag`,
/// the one that bounds the handshake: --idle-timeout only starts after it.
fn handshake_failure(e: WireError, opts: &SendOptions, peer: SocketAddr, flag: &str) -> Error {
    match e {
        WireError::Timeout => Error::Timeout(format!(
            "during the TLS handshake with {peer}: it did not complete within {:?}; is a pincat receiver listening there? (see {flag})",
            opts.handshake_timeout
        )),
        e => classify(e, opts, peer, "during the TLS handshake"),
    }
}

/// Maps a session failure to the error a user can act on.
fn classify(e: WireError, opts: &SendOptions, peer: SocketAddr, when: &str) -> Error {
    match e {
        WireError::Tls(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::AccessDenied
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::DecryptError,
        )) => Error::NotAllowed {
            addr: peer,
            fingerprint: opts.identity.as_ref().map(|i| i.fingerprint()),
        },
        WireError::Tls(rustls::Error::AlertReceived(AlertDescription::ProtocolVersion))
        | WireError::Tls(rustls::Error::PeerIncompatible(_)) => Error::Other(anyhow!(
            "the server at {peer} does not speak TLS 1.3 (pincat accepts nothing older)"
        )),
        WireError::Tls(t) => Error::Incomplete(format!("TLS failure with {peer} {when}: {t}")),
        WireError::Timeout => Error::Timeout(format!(
            "{when} with {peer}: nothing arrived for {:?}; it may be stuck or gone (see --idle-timeout)",
            opts.idle_timeout
        )),
        WireError::Closed | WireError::Reset => Error::Incomplete(format!(
            "the peer at {peer} closed the connection {when}; nothing is confirmed (is it a pincat receiver?)"
        )),
        WireError::Protocol(p) => Error::Incomplete(format!("the receiver at {peer}: {p}")),
        WireError::Io(io) => Error::Incomplete(format!("connection to {peer} failed {when}: {io}")),
    }
}

/// Connects to `addr`, completes enough of a TLS 1.3 handshake to see the
/// server's certificate, and returns its fingerprint. No application byte
/// is ever sent: the handshake is aborted by the verifier itself.
pub fn remote_fingerprint(addr: &str, timeout: Duration) -> Result<Fingerprint> {
    let mut opts = SendOptions::new(addr, Fingerprint::from_bytes([0; 32]));
    opts.connect_timeout = timeout;
    opts.handshake_timeout = timeout;
    let sock = connect_once(&opts)?;
    let peer = sock.peer_addr().context("cannot read the peer address")?;
    let presented = Presented::default();
    let config = verify::client_config(None, None, presented.clone())?;
    let name =
        ServerName::try_from(verify::SERVER_NAME).map_err(|e| anyhow!("bad server name: {e}"))?;
    let conn = ClientConnection::new(config, name).context("cannot start TLS")?;
    let outcome = Session::handshake(conn, sock, timeout);
    match (presented.get(), outcome) {
        (Some(fp), _) => Ok(fp),
        (None, Err(e)) => Err(handshake_failure(e, &opts, peer, "--connect-timeout")),
        (None, Ok(_)) => Err(anyhow!("the server at {peer} presented no certificate").into()),
    }
}

/// Copies the peer's raw reply to `output` until its close_notify.
fn copy_reply(
    s: &mut Session<ClientConnection>,
    buf: &mut [u8],
    output: &mut dyn io::Write,
    opts: &SendOptions,
) -> Result<()> {
    let peer = s.peer;
    let outcome = loop {
        match s.read(buf) {
            Ok(0) => break Ok(()),
            Ok(n) => output
                .write_all(&buf[..n])
                .context("cannot write the peer's reply")?,
            // Anyone on the path can forge a TCP FIN at a record boundary;
            // only close_notify says the reply is complete.
            Err(WireError::Closed) => {
                break Err(Error::Incomplete(format!(
                    "the peer at {peer} closed the connection without TLS close_notify: its reply may be truncated"
                )));
            }
            Err(e) => {
                break Err(classify(
                    e,
                    opts,
                    peer,
                    "while waiting for the peer to close",
                ));
            }
        }
    };
    let _ = output.flush();
    outcome
}

/// Raw mode: the same pinned TLS 1.3 session, but no pincat framing: `input`
/// is sent as plain bytes, then close_notify; whatever the peer sends back is
/// copied to `output` until it closes. For talking to `openssl s_server`,
/// `ncat --ssl`, `socat OPENSSL-LISTEN` or `pincat serve --raw`. There is no
/// receipt: success means every byte was handed to TLS and the peer ended
/// its reply with close_notify (a bare TCP close or a reset is an error:
/// the reply may be truncated).
pub fn send_raw(
    opts: &SendOptions,
    mut input: Box<dyn Read + Send>,
    output: &mut dyn io::Write,
    events: &Events,
) -> Result<SendReport> {
    opts.check()?;
    let mut s = connect(opts, events)?;
    let peer = s.peer;
    let start = Instant::now();
    events.emit(Event::TransferStarted {
        peer,
        kind: "raw",
        names: vec![],
        files: 0,
        bytes: None,
    });
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                s.close();
                return Err(anyhow::Error::new(e)
                    .context("cannot read the input")
                    .into());
            }
        };
        s.write_all(&buf[..n])
            .map_err(|e| classify(e, opts, peer, "while sending"))?;
        sent += n as u64;
        events.emit(Event::Progress {
            peer,
            bytes: sent,
            total: None,
        });
    }
    s.conn.send_close_notify();
    s.write_all(&[])
        .map_err(|e| classify(e, opts, peer, "while closing"))?;
    copy_reply(&mut s, &mut buf, output, opts)?;
    let duration = start.elapsed();
    events.emit(Event::TransferDone {
        peer,
        kind: "raw",
        files: 0,
        bytes: sent,
        duration,
    });
    Ok(SendReport {
        peer,
        files: 0,
        bytes: sent,
        duration,
    })
}
