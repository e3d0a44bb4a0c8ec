//! The sending side: connect, pin the server, offer, stream, and succeed only
//! on a receipt that matches what was sent.

use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConnection};

use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::fingerprint::Fingerprint;
use crate::identity::Identity;
use crate::protocol::{self, Entry, FrameType, HEADER_LEN, Offer, RejectCode, TransferKind};
use crate::verify::{self, Presented};
use crate::wire::{Session, WireError};

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

/// One planned file: where it is here and what it is called there.
struct Planned {
    local: Option<PathBuf>,
    entry: Entry,
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
    let (offer, planned, mut stream): (Offer, Vec<Planned>, Option<Box<dyn Read + Send>>) =
        match source {
            Source::Stdin => (stream_offer(), vec![], Some(Box::new(io::stdin()))),
            Source::Reader(r) => (stream_offer(), vec![], Some(r)),
            Source::Paths(paths) => {
                let planned = plan(&paths, events)?;
                let offer = Offer {
                    kind: TransferKind::Files,
                    entries: planned.iter().map(|p| p.entry.clone()).collect(),
                };
                if offer.encode().len() > protocol::MAX_CONTROL {
                    return Err(
                        anyhow!("too many files or names for one transfer; split it").into(),
                    );
                }
                (offer, planned, None)
            }
        };

    let mut s = connect(opts, events)?;
    let start = Instant::now();
    let peer = s.peer;
    let map = |e: WireError| classify(e, opts, peer, "during the transfer");

    let mut hello = protocol::preamble().to_vec();
    hello.extend_from_slice(&protocol::frame(FrameType::Offer, &offer.encode()));
    s.write_all(&hello).map_err(map)?;
    s.read_preamble().map_err(map)?;
    let mut buf = Vec::new();
    match s.read_frame(&mut buf).map_err(map)? {
        FrameType::Accept => {}
        FrameType::Reject | FrameType::Error => {
            let (code, message) = protocol::decode_reject(&buf);
            return Err(Error::Refused {
                code: code.as_str(),
                message,
            });
        }
        t => return Err(unexpected(t, "ACCEPT")),
    }
    let total = match offer.kind {
        TransferKind::Files => Some(offer.total_bytes()),
        TransferKind::Stream => None,
    };
    events.emit(Event::TransferStarted {
        peer,
        kind: kind_name(offer.kind),
        names: top_names(&offer),
        files: offer.file_count(),
        bytes: total,
    });

    let mut sent: u64 = 0;
    // Small sources (a 100-byte message) need no 256 KiB buffer.
    let chunk = match total {
        Some(t) => (t as usize).clamp(4096, CHUNK),
        None => 16 * 1024,
    };
    buf.resize(HEADER_LEN + chunk, 0);
    let reader: Box<dyn Read + Send> = match stream.take() {
        Some(r) => r,
        None => Box::new(FileSeq::new(&planned)),
    };
    let result = pump(&mut s, reader, &mut buf, &mut sent, total, events);
    if let Err(e) = result {
        return Err(after_write_failure(&mut s, e, opts, sent));
    }

    s.write_frame(
        FrameType::End,
        &protocol::encode_counts(offer.file_count(), sent),
    )
    .map_err(|e| after_write_failure(&mut s, SendFail::Wire(e), opts, sent))?;
    let receipt = s.read_frame(&mut buf).map_err(|e| match e {
        WireError::Timeout => Error::Timeout(format!(
            "waiting for the receipt from {peer}: all {sent} bytes were sent but delivery is not confirmed"
        )),
        e => classify(e, opts, peer, "while waiting for the receipt"),
    })?;
    match receipt {
        FrameType::Receipt => {}
        FrameType::Error => {
            let (code, message) = protocol::decode_reject(&buf);
            return Err(receiver_failed(code, message));
        }
        t => return Err(unexpected(t, "RECEIPT")),
    }
    let (files, bytes) =
        protocol::decode_counts(&buf, "RECEIPT").map_err(|e| Error::Incomplete(e.to_string()))?;
    if files != offer.file_count() || bytes != sent {
        return Err(Error::Incomplete(format!(
            "the receiver confirmed {files} file(s) and {bytes} bytes, but {} file(s) and {sent} bytes were sent",
            offer.file_count()
        )));
    }
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
        let n = match r.read(&mut buf[HEADER_LEN..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(SendFail::Source(
                    anyhow::Error::new(e).context("cannot read the input"),
                ));
            }
        };
        send_data(s, &mut buf[..HEADER_LEN + n], sent, total, events)?;
    }
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

/// The planned files' contents back to back, exactly as announced: a file
/// that shrank or grew since it was measured is an error, not a silent
/// mismatch.
struct FileSeq {
    files: std::vec::IntoIter<(PathBuf, u64)>,
    cur: Option<(File, PathBuf)>,
    left: u64,
}

impl FileSeq {
    fn new(planned: &[Planned]) -> Self {
        let files: Vec<(PathBuf, u64)> = planned
            .iter()
            .filter_map(|p| p.local.clone().map(|l| (l, p.entry.size)))
            .collect();
        FileSeq {
            files: files.into_iter(),
            cur: None,
            left: 0,
        }
    }
}

impl Read for FileSeq {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((f, path)) = self.cur.as_mut() {
                if self.left > 0 {
                    let want = (out.len() as u64).min(self.left) as usize;
                    let n = f.read(&mut out[..want])?;
                    if n == 0 {
                        return Err(io::Error::other(format!(
                            "{} shrank while it was being sent; nothing was stored, send it again",
                            path.display()
                        )));
                    }
                    self.left -= n as u64;
                    return Ok(n);
                }
                let mut probe = [0u8; 1];
                if f.read(&mut probe)? > 0 {
                    return Err(io::Error::other(format!(
                        "{} grew while it was being sent; nothing was stored, send it again",
                        path.display()
                    )));
                }
                self.cur = None;
            }
            let Some((path, size)) = self.files.next() else {
                return Ok(0);
            };
            let f = File::open(&path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
            self.cur = Some((f, path));
            self.left = size;
        }
    }
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
            let _ = s.sock.tcp.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            if let Ok(FrameType::Error) = s.read_frame(&mut buf) {
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

/// Walks the given paths into an ordered plan of directories and files.
fn plan(paths: &[PathBuf], events: &Events) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).with_context(|| format!("cannot send {}", p.display()))?;
        let name = top_name(p)?;
        if meta.is_dir() {
            out.push(dir_entry(name.clone(), &meta));
            walk(p, &name, &mut out, events)?;
        } else if meta.is_file() {
            out.push(file_entry(p.clone(), name, &meta));
        } else {
            return Err(anyhow!(
                "cannot send {}: not a regular file or directory (pipe it on stdin instead)",
                p.display()
            )
            .into());
        }
    }
    let mut seen = std::collections::HashSet::new();
    for p in &out {
        protocol::validate_name(&p.entry.name)
            .map_err(|e| anyhow!("cannot send this name: {e}"))?;
        if !seen.insert(p.entry.name.as_str()) {
            return Err(anyhow!(
                "two of the given paths are both named {}; send them separately",
                protocol::escape_name(&p.entry.name)
            )
            .into());
        }
    }
    Ok(out)
}

fn top_name(p: &Path) -> Result<String> {
    let abs = fs::canonicalize(p).with_context(|| format!("cannot resolve {}", p.display()))?;
    let name = abs.file_name().ok_or_else(|| {
        anyhow!(
            "cannot send {} as a whole; send what it contains",
            p.display()
        )
    })?;
    utf8_name(name, p)
}

fn utf8_name(name: &std::ffi::OsStr, p: &Path) -> Result<String> {
    name.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("cannot send {}: its name is not UTF-8", p.display()).into())
}

fn dir_entry(name: String, meta: &fs::Metadata) -> Planned {
    use std::os::unix::fs::PermissionsExt;
    Planned {
        local: None,
        entry: Entry {
            name,
            is_dir: true,
            mode: meta.permissions().mode() & 0o7777,
            size: 0,
        },
    }
}

fn file_entry(local: PathBuf, name: String, meta: &fs::Metadata) -> Planned {
    use std::os::unix::fs::PermissionsExt;
    Planned {
        local: Some(local),
        entry: Entry {
            name,
            is_dir: false,
            mode: meta.permissions().mode() & 0o7777,
            size: meta.len(),
        },
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Planned>, events: &Events) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let meta = fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let name = format!("{prefix}/{}", utf8_name(&child.file_name(), &path)?);
        if meta.is_dir() {
            out.push(dir_entry(name.clone(), &meta));
            walk(&path, &name, out, events)?;
        } else if meta.is_file() {
            out.push(file_entry(path, name, &meta));
        } else {
            events.emit(Event::Warning {
                message: format!(
                    "skipping {}: symbolic links and special files are not sent",
                    path.display()
                ),
            });
        }
    }
    Ok(())
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
