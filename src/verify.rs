//! Where the pin is decided: the rustls verifiers that accept exactly one
//! end-entity certificate (by SHA-256 fingerprint) and really check the
//! handshake signature. The TLS 1.3-only client and server configs around
//! them are built in `config`; a private CA's checks live in [`ca`].

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use crate::fingerprint::{Fingerprint, Pin, spki_of_der};

pub mod ca;
mod config;
mod issued;
pub mod memory;

pub use config::{
    client_config, client_config_first_use, client_config_pins, client_config_trust, provider,
    server_config, server_config_any_client,
};

use ca::CaAllow;
pub use issued::issued_name;

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
        issued::forget();
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

/// The handshake-signature methods every verifier has: the certificate is
/// public, so this signature (checked with `$algs`) is the proof of its key.
macro_rules! signature_checks {
    ($self:ident => $algs:expr) => {
        $crate::verify::signature_checks!(@one $self, verify_tls12_signature, $algs);
        $crate::verify::signature_checks!(@one $self, verify_tls13_signature, $algs);

        fn supported_verify_schemes(&$self) -> Vec<SignatureScheme> {
            $algs.supported_schemes()
        }
    };
    (@one $self:ident, $name:ident, $algs:expr) => {
        fn $name(
            &$self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::$name(message, cert, dss, $algs)
        }
    };
}
pub(crate) use signature_checks;

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

    signature_checks!(self => &self.algs);
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

    signature_checks!(self => &self.algs);
}

#[cfg(test)]
mod tests;
