//! Where the pin is decided: the rustls verifiers that accept exactly one
//! end-entity certificate (by SHA-256 fingerprint) and really check the
//! handshake signature, plus the TLS 1.3-only client and server configs.

use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::NoServerSessionStorage;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
};

use crate::fingerprint::{Fingerprint, Pin, spki_of_der};
use crate::identity::Identity;

pub mod ca;

use ca::{CaAllow, CaRoots, CaServerCheck, TrustingServerVerifier};

/// Who may connect to a listener: a client presenting a certificate that
/// matches one of `pins`, or one issued by the CA of `ca`.
#[derive(Clone, Debug, Default)]
pub struct Allow {
    /// Certificate or public-key pins.
    pub pins: std::collections::HashSet<Pin>,
    /// A private CA whose (named) certificates are admitted.
    pub ca: Option<CaAllow>,
}

impl Allow {
    /// Admits exactly these pins.
    pub fn pins(pins: impl IntoIterator<Item = Pin>) -> Self {
        Allow {
            pins: pins.into_iter().collect(),
            ca: None,
        }
    }

    /// True when nobody could ever be admitted.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty() && self.ca.is_none()
    }
}

/// The fixed, meaningless SNI name pincat sends; the pin, not a name, is the identity.
pub const SERVER_NAME: &str = "pincat.invalid";

/// The process-wide crypto provider (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider, kx_group};
        // AES-128-GCM with SHA-256 first: faster bulk encryption and a much
        // cheaper key schedule (SHA-NI) than the default AES-256/SHA-384,
        // which showed up as the top symbol (SHA-512 blocks) under load.
        let mut p = default_provider();
        p.cipher_suites = vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        // Hybrid post-quantum key exchange first (recorded traffic stays
        // private against a future quantum computer, as OpenSSH 10 and the
        // browsers default to); the client's hybrid share carries an X25519
        // part that a classical-only peer (openssl 3.0, ncat) picks directly.
        p.kx_groups = vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
        ];
        Arc::new(p)
    })
    .clone()
}

/// What a peer presented, recorded by a verifier so callers can report it
/// after a refusal (rustls only hands back an opaque error).
///
/// Either a shared slot (one verifier per connection), or a thread-local one
/// ([`Presented::per_thread`]), so one server config can serve every
/// connection: rustls runs the verifier on the thread driving the handshake.
#[derive(Debug, Clone)]
pub struct Presented(Option<Arc<Mutex<Option<Seen>>>>);

/// One presented end-entity certificate: its fingerprint and its public
/// key's pin digest (when the certificate parses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    cert: Fingerprint,
    spki: Option<Fingerprint>,
    /// The certificate passed the trust check (pin or CA): a failure after
    /// that is the handshake signature, the proof of its key.
    accepted: bool,
}

thread_local! {
    static THREAD_PRESENTED: std::cell::Cell<Option<Seen>> = const { std::cell::Cell::new(None) };
}

impl Default for Presented {
    fn default() -> Self {
        Presented(Some(Arc::default()))
    }
}

impl Presented {
    /// Records into the current thread's slot instead of a shared one.
    pub fn per_thread() -> Self {
        Presented(None)
    }

    fn set(&self, seen: Option<Seen>) {
        match &self.0 {
            Some(m) => {
                if let Ok(mut g) = m.lock() {
                    *g = seen;
                }
            }
            None => THREAD_PRESENTED.with(|c| c.set(seen)),
        }
    }

    fn seen(&self) -> Option<Seen> {
        match &self.0 {
            Some(m) => m.lock().ok().and_then(|g| *g),
            None => THREAD_PRESENTED.with(|c| c.get()),
        }
    }

    /// Forgets what was recorded (before reusing a thread for a new handshake).
    pub fn clear(&self) {
        self.set(None);
    }

    /// Records `end_entity` as what the peer presented (not yet trusted);
    /// returns its fingerprint.
    fn record(&self, end_entity: &[u8]) -> Fingerprint {
        let cert = Fingerprint::of_der(end_entity);
        self.set(Some(Seen {
            cert,
            spki: spki_of_der(end_entity),
            accepted: false,
        }));
        cert
    }

    /// Marks what was presented as trusted (before the signature check).
    fn accept(&self) {
        if let Some(seen) = self.seen() {
            self.set(Some(Seen {
                accepted: true,
                ..seen
            }));
        }
    }

    /// Whether the presented certificate passed the trust check: a failed
    /// handshake after that means the peer could not prove its key.
    pub fn accepted(&self) -> bool {
        self.seen().is_some_and(|s| s.accepted)
    }

    /// The fingerprint of the end-entity certificate the peer presented, if any.
    pub fn get(&self) -> Option<Fingerprint> {
        self.seen().map(|s| s.cert)
    }

    /// The public-key pin (`sha256//BASE64`) of what the peer presented, if
    /// it presented a certificate whose key can be read.
    pub fn spki(&self) -> Option<Pin> {
        self.seen().and_then(|s| s.spki).map(Pin::Spki)
    }

    /// Whether what the peer presented matches one of `pins`.
    pub fn matches(&self, pins: &[Pin]) -> bool {
        let Some(seen) = self.seen() else {
            return false;
        };
        pins.iter().any(|p| match p {
            Pin::Cert(c) => *c == seen.cert,
            Pin::Spki(k) => seen.spki == Some(*k),
        })
    }
}

/// Whether any of `pins` matches the certificate `der` (fingerprint `fp`):
/// each compared in full, never a prefix.
fn any_pin(pins: &[Pin], fp: &Fingerprint, der: &[u8]) -> bool {
    pins.iter().any(|p| p.matches(fp, der))
}

/// Checks the chain shape and the pin; records what was presented.
fn check_pin(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    allowed: &dyn Fn(&Fingerprint, &[u8]) -> bool,
    presented: &Presented,
) -> Result<(), Error> {
    let fp = presented.record(end_entity);
    // The pin must be the leaf, alone: accepting it anywhere in the chain
    // would let an attacker append the public genuine certificate to its own.
    if !intermediates.is_empty() {
        return Err(Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ));
    }
    if allowed(&fp, end_entity.as_ref()) {
        Ok(())
    } else {
        Err(Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }
}

/// Client side: accepts only a server certificate that matches one of the
/// pins (its fingerprint, or its public key's). With no pin, it records
/// what was presented and refuses (used by `fingerprint --remote`, which
/// must send nothing), unless made for a first use.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    pins: Vec<Pin>,
    first_use: bool,
    presented: Presented,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    /// A verifier for one pinned server certificate.
    pub fn new(pin: Option<Fingerprint>, presented: Presented) -> Self {
        Self::with_pins(pin.map(Pin::Cert).into_iter().collect(), presented)
    }

    /// A verifier accepting any of `pins` (rotation: old and new key).
    pub fn with_pins(pins: Vec<Pin>, presented: Presented) -> Self {
        PinnedServerVerifier {
            pins,
            first_use: false,
            presented,
            algs: provider().signature_verification_algorithms,
        }
    }

    /// Trust on first use: accepts any single certificate whose public key
    /// can be read, and records it. Only the pin comparison is skipped: the
    /// handshake signature is checked as always, so the server has proven
    /// it holds the key the caller then records.
    pub fn first_use(presented: Presented) -> Self {
        PinnedServerVerifier {
            first_use: true,
            ..Self::with_pins(Vec::new(), presented)
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let first_use = |_: &Fingerprint, der: &[u8]| spki_of_der(der).is_some();
        let pinned = |fp: &Fingerprint, der: &[u8]| any_pin(&self.pins, fp, der);
        let allowed: &dyn Fn(&Fingerprint, &[u8]) -> bool =
            if self.first_use { &first_use } else { &pinned };
        check_pin(end_entity, intermediates, allowed, &self.presented)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // The certificate is public; this signature is the proof of the key.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Server side: requires a client certificate that matches a pin in
/// `allowed` (certificate or public-key pins).
#[derive(Debug)]
pub struct AllowListClientVerifier {
    allowed: Arc<Vec<Pin>>,
    ca: Option<CaAllow>,
    presented: Presented,
    algs: WebPkiSupportedAlgorithms,
    /// Asks for a certificate but admits a client without one, and any
    /// client that proves the key of the one it presents (its fingerprint
    /// is then recorded): for listeners that admit by code, whose
    /// confirmation covers this fingerprint.
    optional: bool,
}

impl AllowListClientVerifier {
    /// A verifier admitting only the listed client certificates.
    pub fn new(allowed: Arc<Vec<Pin>>, presented: Presented) -> Self {
        AllowListClientVerifier {
            allowed,
            ca: None,
            presented,
            algs: provider().signature_verification_algorithms,
            optional: false,
        }
    }

    /// A verifier that admits any client, with or without a certificate,
    /// and records the fingerprint of the one it presents and proves.
    pub fn any(presented: Presented) -> Self {
        AllowListClientVerifier {
            optional: true,
            ..Self::new(Arc::new(Vec::new()), presented)
        }
    }

    /// A verifier admitting what `allow` lists: pins, or the CA's certificates.
    pub fn from_allow(allow: &Allow, presented: Presented) -> Self {
        AllowListClientVerifier {
            ca: allow.ca.clone(),
            ..Self::new(Arc::new(allow.pins.iter().copied().collect()), presented)
        }
    }
}

impl ClientCertVerifier for AllowListClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let pinned = check_pin(
            end_entity,
            intermediates,
            &|fp, der| self.optional || any_pin(&self.allowed, fp, der),
            &self.presented,
        );
        match (pinned, &self.ca) {
            (Ok(()), _) => {}
            (Err(_), Some(ca)) => ca.verify(end_entity, now)?,
            (Err(e), None) => return Err(e),
        }
        self.presented.accept();
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A TLS 1.3-only client config pinned to `pin` (or recording only, with no pin),
/// presenting `identity` as client certificate when given. No resumption, no early data.
pub fn client_config(
    pin: Option<Fingerprint>,
    identity: Option<&Identity>,
    presented: Presented,
) -> Result<Arc<ClientConfig>> {
    client_config_pins(
        pin.map(Pin::Cert).into_iter().collect(),
        identity,
        presented,
    )
}

/// As [`client_config`], accepting a server that matches any of `pins`.
pub fn client_config_pins(
    pins: Vec<Pin>,
    identity: Option<&Identity>,
    presented: Presented,
) -> Result<Arc<ClientConfig>> {
    client_config_trust(pins, None, identity, presented)
}

/// As [`client_config_pins`], also accepting (with `ca`) a server whose
/// certificate chains to the CA, is valid now and carries the given name.
pub fn client_config_trust(
    pins: Vec<Pin>,
    ca: Option<(&CaRoots, ServerName<'static>)>,
    identity: Option<&Identity>,
    presented: Presented,
) -> Result<Arc<ClientConfig>> {
    let pinned = PinnedServerVerifier::with_pins(pins, presented.clone());
    let verifier: Arc<dyn ServerCertVerifier> = match ca {
        Some((roots, name)) => Arc::new(TrustingServerVerifier {
            pins: pinned,
            ca: CaServerCheck::new(roots, name)?,
            presented,
        }),
        None => Arc::new(pinned),
    };
    client_config_with(verifier, identity)
}

/// As [`client_config`] for a first use ([`PinnedServerVerifier::first_use`]):
/// any server that proves it holds the key of the one certificate it
/// presents; the caller records that key from `presented`.
pub fn client_config_first_use(
    identity: Option<&Identity>,
    presented: Presented,
) -> Result<Arc<ClientConfig>> {
    client_config_with(
        Arc::new(PinnedServerVerifier::first_use(presented)),
        identity,
    )
}

/// The TLS 1.3-only client config around `verifier`: no resumption (a
/// resumed handshake would skip the verifier), no early data, no SNI.
fn client_config_with(
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available in the crypto provider")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => {
            let (chain, key) = id.chain_and_key();
            builder
                .with_client_auth_cert(chain, key)
                .context("cannot use the identity as a client certificate")?
        }
        None => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    config.enable_sni = false;
    // The session takes over the record layer after the handshake.
    config.enable_secret_extraction = true;
    // The pairing code binds to the session's exporter.
    config.key_log = crate::session::exporter::key_log();
    Ok(Arc::new(config))
}

/// A TLS 1.3-only server config for `identity`, requiring an admitted client
/// certificate when `allowed` is given. No tickets, no session cache.
pub fn server_config(
    identity: &Identity,
    allowed: Option<&Allow>,
    presented: Presented,
) -> Result<Arc<ServerConfig>> {
    let verifier = allowed.map(|a| AllowListClientVerifier::from_allow(a, presented));
    server_config_with(identity, verifier)
}

/// As [`server_config`] with no allow list, asking for an optional client
/// certificate and recording the one presented (see
/// [`AllowListClientVerifier::any`]): a code's confirmation then covers
/// the dialer's key too.
pub fn server_config_any_client(
    identity: &Identity,
    presented: Presented,
) -> Result<Arc<ServerConfig>> {
    server_config_with(identity, Some(AllowListClientVerifier::any(presented)))
}

fn server_config_with(
    identity: &Identity,
    verifier: Option<AllowListClientVerifier>,
) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available in the crypto provider")?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(Arc::new(v)),
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = identity.chain_and_key();
    let mut config = builder
        .with_single_cert(chain, key)
        .context("cannot use the identity as a server certificate")?;
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.max_early_data_size = 0;
    // The session takes over the record layer after the handshake.
    config.enable_secret_extraction = true;
    // The pairing code binds to the session's exporter.
    config.key_log = crate::session::exporter::key_log();
    Ok(Arc::new(config))
}

/// Two rustls endpoints wired together in memory: the handshake and
/// record traffic without sockets, for unit tests and `benches/hot.rs`.
pub mod memory {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, Error, ServerConfig, ServerConnection};

    use super::SERVER_NAME;

    /// A client and a server after their handshake, with its outcome.
    pub struct Pair {
        /// The client side.
        pub client: ClientConnection,
        /// The server side.
        pub server: ServerConnection,
        /// The client's handshake result.
        pub client_result: Result<(), Error>,
        /// The server's handshake result.
        pub server_result: Result<(), Error>,
    }

    impl Pair {
        /// Runs the handshake between these configurations.
        pub fn new(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Result<Pair, Error> {
            let name = ServerName::try_from(SERVER_NAME)
                .map_err(|_| Error::General("bad server name".into()))?;
            let mut p = Pair {
                client: ClientConnection::new(client, name)?,
                server: ServerConnection::new(server)?,
                client_result: Ok(()),
                server_result: Ok(()),
            };
            for _ in 0..20 {
                let (c, s) = p.shuttle();
                p.client_result = c;
                p.server_result = s;
                let done = !p.client.is_handshaking()
                    && !p.server.is_handshaking()
                    && !p.client.wants_write()
                    && !p.server.wants_write();
                if p.client_result.is_err() || p.server_result.is_err() || done {
                    break;
                }
            }
            Ok(p)
        }

        /// Moves every pending record client -> server, then server ->
        /// client; returns what processing them gave on each side.
        pub fn shuttle(&mut self) -> (Result<(), Error>, Result<(), Error>) {
            let s = move_records(&mut self.client, &mut self.server);
            let c = move_records(&mut self.server, &mut self.client);
            (c, s)
        }
    }

    fn move_records<A, B, SA, SB>(from: &mut A, to: &mut B) -> Result<(), Error>
    where
        A: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SA>>,
        B: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SB>>,
    {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf)
                .map_err(|e| Error::General(e.to_string()))?;
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd)
                .map_err(|e| Error::General(e.to_string()))?;
            to.process_new_packets()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives an in-memory handshake; returns the client and server results.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
    ) -> (Result<(), Error>, Result<(), Error>) {
        let p = memory::Pair::new(client, server).unwrap();
        (p.client_result, p.server_result)
    }

    #[test]
    fn accepts_only_the_pinned_server() {
        let id = Identity::generate().unwrap();
        let server = server_config(&id, None, Presented::default()).unwrap();
        let seen = Presented::default();
        let ok = client_config(Some(id.fingerprint()), None, seen.clone()).unwrap();
        let (c, s) = handshake(ok, server.clone());
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        assert_eq!(seen.get(), Some(id.fingerprint()));

        let other = Identity::generate().unwrap();
        let seen = Presented::default();
        let wrong = client_config(Some(other.fingerprint()), None, seen.clone()).unwrap();
        let (c, _) = handshake(wrong, server);
        assert!(c.is_err());
        assert_eq!(seen.get(), Some(id.fingerprint()));
    }

    #[test]
    fn no_pin_records_and_refuses() {
        let id = Identity::generate().unwrap();
        let server = server_config(&id, None, Presented::default()).unwrap();
        let seen = Presented::default();
        let (c, _) = handshake(client_config(None, None, seen.clone()).unwrap(), server);
        assert!(c.is_err());
        assert_eq!(seen.get(), Some(id.fingerprint()));
    }

    #[test]
    fn first_use_accepts_a_proven_key_and_records_its_pin() {
        let id = Identity::generate().unwrap();
        let server = server_config(&id, None, Presented::default()).unwrap();
        let seen = Presented::default();
        let (c, s) = handshake(client_config_first_use(None, seen.clone()).unwrap(), server);
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        assert_eq!(seen.get(), Some(id.fingerprint()));
        let spki = seen.spki().unwrap();
        assert_eq!(spki, Pin::Spki(spki_of_der(id.cert_der()).unwrap()));
        assert!(seen.matches(&[spki]) && seen.matches(&[Pin::Cert(id.fingerprint())]));
        assert!(!seen.matches(&[Pin::Spki(Fingerprint::of_der(b"other"))]));
        // The chain rule holds for a first use too.
        let other = Identity::generate().unwrap();
        let v = PinnedServerVerifier::first_use(Presented::default());
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let chain = [other.cert_der().clone()];
        assert!(
            v.verify_server_cert(id.cert_der(), &chain, &name, &[], UnixTime::now())
                .is_err()
        );
        // Garbage is not a certificate whose key could be recorded.
        let junk = CertificateDer::from(&b"junk"[..]);
        assert!(
            v.verify_server_cert(&junk, &[], &name, &[], UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn mutual_pinning_admits_listed_client_only() {
        let server_id = Identity::generate().unwrap();
        let client_id = Identity::generate().unwrap();
        let stranger = Identity::generate().unwrap();
        let allowed = Allow::pins([Pin::Cert(client_id.fingerprint())]);
        let pin = Some(server_id.fingerprint());

        let seen = Presented::default();
        let server = server_config(&server_id, Some(&allowed), seen.clone()).unwrap();
        let client = client_config(pin, Some(&client_id), Presented::default()).unwrap();
        let (c, s) = handshake(client, server);
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        assert_eq!(seen.get(), Some(client_id.fingerprint()));

        let seen = Presented::default();
        let server = server_config(&server_id, Some(&allowed), seen.clone()).unwrap();
        let client = client_config(pin, Some(&stranger), Presented::default()).unwrap();
        let (_, s) = handshake(client, server);
        assert!(s.is_err());
        assert_eq!(seen.get(), Some(stranger.fingerprint()));

        let server = server_config(&server_id, Some(&allowed), Presented::default()).unwrap();
        let client = client_config(pin, None, Presented::default()).unwrap();
        let (_, s) = handshake(client, server);
        assert!(s.is_err(), "a client without a certificate got through");
    }

    #[test]
    fn a_code_listener_admits_any_client_and_records_the_key_it_proved() {
        let server_id = Identity::generate().unwrap();
        let client_id = Identity::generate().unwrap();
        let pin = Some(server_id.fingerprint());
        let seen = Presented::default();
        let server = server_config_any_client(&server_id, seen.clone()).unwrap();
        let client = client_config(pin, Some(&client_id), Presented::default()).unwrap();
        let (c, s) = handshake(client, server);
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        assert_eq!(seen.get(), Some(client_id.fingerprint()));

        let seen = Presented::default();
        let server = server_config_any_client(&server_id, seen.clone()).unwrap();
        let client = client_config(pin, None, Presented::default()).unwrap();
        let (c, s) = handshake(client, server);
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        assert_eq!(seen.get(), None);
    }

    #[test]
    fn intermediates_are_refused_even_if_leaf_matches() {
        let id = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let seen = Presented::default();
        let v = PinnedServerVerifier::new(Some(id.fingerprint()), seen);
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let now = UnixTime::now();
        assert!(
            v.verify_server_cert(id.cert_der(), &[], &name, &[], now)
                .is_ok()
        );
        assert!(
            v.verify_server_cert(id.cert_der(), &[other.cert_der().clone()], &name, &[], now)
                .is_err()
        );
        // The genuine certificate behind another leaf: refused.
        assert!(
            v.verify_server_cert(other.cert_der(), &[id.cert_der().clone()], &name, &[], now)
                .is_err()
        );
    }
}
