//! In-process peers a test drives by hand: a pinned TLS client and a sender
//! that writes frames of its choosing, a one-connection TLS listener (fake
//! receivers, impostors), a certificate paired with a key that is not its
//! own, and a TCP relay that can hold traffic back.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use pincat::Identity;
use pincat::protocol::{self, FrameType, Offer};
use pincat::verify::{self, PinnedServerVerifier, Presented};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ClientConnection, ServerConfig, ServerConnection, SupportedProtocolVersion,
};

use super::wire::{self, frame, read_frame, read_preamble};
use super::{Server, WAIT};

/// The client side of a TLS connection over TCP.
pub type ClientTls = rustls::StreamOwned<ClientConnection, TcpStream>;
/// The server side of a TLS connection over TCP.
pub type ServerTls = rustls::StreamOwned<ServerConnection, TcpStream>;

/// How long an in-process peer waits on its socket before giving up.
const PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to `addr` as a TLS client with `config`; the handshake runs on
/// the first read or write.
pub fn connect(addr: &str, config: Arc<ClientConfig>) -> ClientTls {
    let conn = ClientConnection::new(config, verify::SERVER_NAME.try_into().unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(PEER_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(PEER_TIMEOUT)).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Connects to `addr` as pincat's own client would, pinned to `pin` and
/// with no client certificate.
/// When the listener a test started there has a code, the client proves it
/// first, as pincat's own dialer does.
pub fn connect_pinned(addr: &str, pin: &str) -> ClientTls {
    let config =
        verify::client_config(Some(pin.parse().unwrap()), None, Presented::default()).unwrap();
    let mut tls = connect(addr, config);
    if let Some(code) = super::server::code_for(addr) {
        prove_code(&mut tls, pin, &code).expect("the code is confirmed");
    }
    tls
}

/// Completes the handshake and proves `code` to the listener whose
/// certificate fingerprint is `pin`.
pub fn prove_code(
    tls: &mut ClientTls,
    pin: &str,
    code: &str,
) -> Result<(), pincat::pair::DialFailure> {
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| pincat::pair::DialFailure::Wire(pincat::session::WireError::Io(e)))?;
    }
    let binding = channel_binding(tls);
    prove_code_over(tls, &binding, pin, code)
}

/// The session's RFC 9266 `tls-exporter` value, which the code exchange
/// binds to.
pub fn channel_binding(tls: &ClientTls) -> [u8; 32] {
    tls.conn
        .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
        .unwrap()
}

/// Runs the dialer's side of the code exchange over `io` (the session, or
/// a wrapper that misbehaves on purpose), bound to `binding`.
pub fn prove_code_over(
    io: &mut (impl Read + Write),
    binding: &[u8; 32],
    pin: &str,
    code: &str,
) -> Result<(), pincat::pair::DialFailure> {
    let ends = pincat::pair::Ends {
        listener: pin.parse().unwrap(),
        dialer: None,
    };
    let code = pincat::pair::Code::parse(code).unwrap();
    pincat::pair::prove_io(io, binding, &code, &ends)
}

/// A TCP echo service (echoes each connection until the client half-closes,
/// then closes) for at most `max` connections; returns its address and how
/// many connections it accepted so far.
pub fn echo_service(max: usize) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    thread::spawn(move || {
        for s in l.incoming().take(max) {
            let Ok(mut s) = s else { break };
            seen.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = io::copy(&mut r, &mut s);
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    (addr, count)
}

/// A sender driven frame by frame over a pinned connection, so a test can
/// lie, stall, or interleave two transfers exactly.
pub struct HandSender {
    pub tls: ClientTls,
}

impl HandSender {
    /// Connects and sends the preamble followed by `script`.
    pub fn open(addr: &str, pin: &str, script: &[u8]) -> HandSender {
        let mut h = HandSender {
            tls: connect_pinned(addr, pin),
        };
        h.write(&[&protocol::preamble()[..], script].concat())
            .unwrap();
        h
    }

    /// Connects, sends `offer` and returns the receiver's answer.
    pub fn offer(srv: &Server, offer: &Offer) -> (HandSender, FrameType, Vec<u8>) {
        let mut h = Self::open(
            &srv.addr,
            &srv.fingerprint,
            &frame(FrameType::Offer, &offer.encode()),
        );
        read_preamble(&mut h.tls).expect("receiver preamble");
        let (t, p) = h.read_frame();
        (h, t, p)
    }

    /// Writes and flushes `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// Reads the receiver's preamble and first frame; `None` if it closed
    /// (or sent nonsense) first.
    pub fn first_frame(&mut self) -> Option<(FrameType, Vec<u8>)> {
        read_preamble(&mut self.tls).ok()?;
        read_frame(&mut self.tls).ok()
    }

    /// Reads the receiver's next frame.
    pub fn read_frame(&mut self) -> (FrameType, Vec<u8>) {
        read_frame(&mut self.tls).expect("frame from the receiver")
    }

    /// Sends `bytes` as DATA frames.
    pub fn data(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(256 << 10) {
            self.tls.write_all(&frame(FrameType::Data, chunk)).unwrap();
        }
        self.tls.flush().unwrap();
    }

    /// Sends END and returns the answer (RECEIPT, or ERROR with its message).
    pub fn end(mut self, files: u32, bytes: u64) -> (FrameType, String) {
        let end = frame(FrameType::End, &protocol::encode_counts(files, bytes));
        self.write(&end).unwrap();
        let (mut t, mut p) = self.read_frame();
        // The digests of what was stored come before the receipt.
        while t == FrameType::Digests {
            (t, p) = self.read_frame();
        }
        let msg = match t {
            FrameType::Error | FrameType::Reject => protocol::decode_reject(&p).1,
            _ => String::new(),
        };
        (t, msg)
    }

    /// Gives up (ABORT frame) and closes.
    pub fn give_up(mut self) {
        let _ = self.write(&frame(FrameType::Abort, b"test gives up"));
        self.tls.conn.send_close_notify();
        let _ = self.tls.flush();
    }
}

/// Sends the preamble and `script` to a pincat server as a hand-driven
/// sender (write errors ignored: the server may hang up midway), and
/// returns every frame it answered before closing.
pub fn fake_sender(addr: &str, pin: &str, script: &[u8]) -> Vec<(FrameType, Vec<u8>)> {
    let mut tls = connect_pinned(addr, pin);
    let _ = tls.write_all(&[&protocol::preamble()[..], script].concat());
    let _ = tls.flush();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got);
    got.get(protocol::PREAMBLE_LEN..)
        .map(wire::frames_in)
        .unwrap_or_default()
}

/// Accepts one connection on a fresh loopback port and runs `serve` on it
/// as the TLS server of `config`; returns the address and what `serve`
/// returned.
pub fn tls_listener<T: Send + 'static>(
    config: Arc<ServerConfig>,
    serve: impl FnOnce(&mut ServerTls) -> T + Send + 'static,
) -> (String, thread::JoinHandle<T>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(PEER_TIMEOUT)).unwrap();
        let conn = ServerConnection::new(config).unwrap();
        serve(&mut rustls::StreamOwned::new(conn, sock))
    });
    (addr, h)
}

/// A receiver in this process with a fresh identity and pincat's own server
/// config, for one connection run by `serve`; returns its address, its
/// fingerprint, and what `serve` returned.
pub fn fake_receiver<T: Send + 'static>(
    serve: impl FnOnce(&mut ServerTls) -> T + Send + 'static,
) -> (String, String, thread::JoinHandle<T>) {
    let id = Identity::generate().unwrap();
    let config = verify::server_config(&id, None, Presented::default()).unwrap();
    let (addr, h) = tls_listener(config, serve);
    (addr, id.fingerprint().to_string(), h)
}

/// `chain` (someone's certificates) with `key_owner`'s private key: what a
/// thief who copied a certificate, but not its key, can present.
pub fn forged(chain: Vec<CertificateDer<'static>>, key_owner: &Identity) -> Arc<CertifiedKey> {
    let key = PrivateKeyDer::from_pem_slice(key_owner.to_pem().as_bytes()).unwrap();
    let signer = provider().key_provider.load_private_key(key).unwrap();
    Arc::new(CertifiedKey::new(chain, signer))
}

/// Presents one fixed certificate and key, as a server or as a client.
#[derive(Debug)]
struct Present(Arc<CertifiedKey>);

impl ResolvesServerCert for Present {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for Present {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// rustls' stock provider: unlike pincat's, it still speaks TLS 1.2, which
/// an impostor may want to.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server config that presents `cert` whatever it is asked, speaking only
/// `versions`.
pub fn presenting_server(
    cert: Arc<CertifiedKey>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Present(cert)));
    Arc::new(config)
}

/// A TLS 1.3 listener for one connection that presents `chain` (someone's
/// certificates) with `key_owner`'s key; returns its address and how many
/// application bytes the client sent.
pub fn impostor(
    chain: Vec<CertificateDer<'static>>,
    key_owner: &Identity,
) -> (String, thread::JoinHandle<usize>) {
    let config = presenting_server(forged(chain, key_owner), &[&rustls::version::TLS13]);
    tls_listener(config, |s: &mut ServerTls| {
        let mut got = 0usize;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            got += n;
        }
        got
    })
}

/// A TLS 1.3 client config pinned to `pin` that presents `cert` as its
/// client certificate.
pub fn presenting_client(pin: &str, cert: Arc<CertifiedKey>) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(
            Some(pin.parse().unwrap()),
            Presented::default(),
        )))
        .with_client_cert_resolver(Arc::new(Present(cert)));
    Arc::new(config)
}

/// A TCP relay to `upstream` for one connection. Once `after` bytes from
/// the client have been relayed it runs `meddle`, relaying nothing
/// meanwhile, so the client is then at most its buffers ahead.
pub fn relay(upstream: &str, after: u64, meddle: impl FnOnce() + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let upstream = upstream.to_string();
    thread::spawn(move || {
        let (mut client, _) = l.accept().unwrap();
        let mut meddle = Some(meddle);
        if after == 0 {
            (meddle.take().unwrap())();
        }
        let mut server = TcpStream::connect(&upstream).unwrap();
        for s in [&client, &server] {
            s.set_read_timeout(Some(WAIT)).unwrap();
        }
        let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let back = thread::spawn(move || {
            let _ = io::copy(&mut s2, &mut c2);
            let _ = c2.shutdown(Shutdown::Write);
        });
        let mut buf = vec![0u8; 64 << 10];
        let mut relayed = 0u64;
        while let Ok(n @ 1..) = client.read(&mut buf) {
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
            relayed += n as u64;
            if relayed >= after
                && let Some(m) = meddle.take()
            {
                m();
            }
        }
        let _ = server.shutdown(Shutdown::Write);
        let _ = back.join();
    });
    addr
}
