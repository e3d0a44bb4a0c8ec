//! Trust anchored in a private CA instead of a pin: the certificates of
//! the CA ([`CaRoots`]), the dialing side's check of a server (chains to the
//! CA, valid now, carries the expected name) and the listening side's check
//! of a client (chains to the CA, valid now, optionally carries one of the
//! allowed names). rustls's WebPKI verifiers do the path, validity and
//! usage checks; the handshake signature is checked as for pins, so a
//! leaf issued by the CA but presented without its key is refused.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use super::{Presented, provider};
use crate::fingerprint::Fingerprint;

/// The certificates of one or more private CAs, trusted to issue identities.
#[derive(Clone)]
pub struct CaRoots {
    anchors: Vec<Anchor>,
}

/// One CA certificate: trusted only while it is itself valid (WebPKI does
/// not check a trust anchor's dates).
#[derive(Clone)]
struct Anchor {
    roots: Arc<RootCertStore>,
    fingerprint: Fingerprint,
    validity: Validity,
}

/// A certificate's validity period, in seconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The first second it is valid.
    pub not_before: i64,
    /// The last second it is valid.
    pub not_after: i64,
}

impl Validity {
    /// Whether `now` lies within the period.
    pub fn contains(&self, now: UnixTime) -> bool {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.not_before <= now && now <= self.not_after
    }
}

/// The validity of a CA certificate; an error if it is not one: a CA has
/// basic constraints CA:TRUE and, if it states key usages, keyCertSign.
/// (Any certificate's key could otherwise sign identities for any name.)
pub fn ca_validity(der: &[u8]) -> Result<Validity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("cannot read the certificate: {e}"))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    let may_sign = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    if !is_ca || !may_sign {
        bail!(
            "certificate sha256:{} is not a CA certificate (no CA:TRUE basic constraint or no keyCertSign usage); make a CA with pincat identity new --ca",
            Fingerprint::of_der(der)
        );
    }
    let v = cert.validity();
    Ok(Validity {
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
    })
}

/// Largest CA file read: a few certificates, never a device or a dump.
const MAX_CA_FILE: u64 = 1 << 20;

impl std::fmt::Debug for CaRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaRoots")
            .field("fingerprints", &self.fingerprints())
            .finish()
    }
}

impl CaRoots {
    /// Parses CA certificates: PEM (every `CERTIFICATE` block) or one DER
    /// certificate, each a CA certificate (see [`ca_validity`]). A file
    /// holding a private key is refused: the CA's key belongs only where
    /// identities are issued, never on every peer.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.windows(11).any(|w| w == b"PRIVATE KEY") {
            bail!(
                "it holds a private key: give the CA's certificate only (pincat identity cert CA.id > ca.pem)"
            );
        }
        let mut certs: Vec<CertificateDer<'static>> = Vec::new();
        for c in CertificateDer::pem_slice_iter(bytes) {
            certs.push(c.map_err(|e| anyhow!("bad CERTIFICATE block: {e}"))?);
        }
        if certs.is_empty() && bytes.first() == Some(&0x30) {
            certs.push(CertificateDer::from(bytes.to_vec()));
        }
        if certs.is_empty() {
            bail!("no certificate found (expected PEM with CERTIFICATE blocks, or DER)");
        }
        let mut anchors = Vec::new();
        for c in certs {
            let validity = ca_validity(&c)?;
            let mut roots = RootCertStore::empty();
            let fingerprint = Fingerprint::of_der(&c);
            roots
                .add(c)
                .map_err(|e| anyhow!("not usable as a CA certificate: {e}"))?;
            anchors.push(Anchor {
                roots: Arc::new(roots),
                fingerprint,
                validity,
            });
        }
        Ok(CaRoots { anchors })
    }

    /// Reads a CA certificate file (a regular file of at most 1 MiB; see
    /// [`CaRoots::from_bytes`]).
    pub fn load(path: &Path) -> Result<Self> {
        use std::io::Read;
        let shown = path.display();
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot read CA file {shown}"))?;
        let meta = f
            .metadata()
            .with_context(|| format!("cannot read CA file {shown}"))?;
        if !meta.is_file() {
            bail!("CA file {shown} is not a regular file");
        }
        let mut bytes = Vec::new();
        f.take(MAX_CA_FILE + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read CA file {shown}"))?;
        if bytes.len() as u64 > MAX_CA_FILE {
            bail!("CA file {shown} is larger than {MAX_CA_FILE} bytes");
        }
        Self::from_bytes(&bytes).with_context(|| format!("bad CA file {shown}"))
    }

    /// The fingerprints of the CA certificates, in file order.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.anchors.iter().map(|a| a.fingerprint).collect()
    }
}

/// The CA certificates are all outside their own validity.
#[derive(Debug)]
struct CaNotValid;

impl std::fmt::Display for CaNotValid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the CA certificate is expired or not valid yet")
    }
}

impl std::error::Error for CaNotValid {}

/// Runs `check` against every anchor valid at `now`: the first success
/// wins; else the first failure, or [`CaNotValid`] if no anchor is valid.
fn any_anchor<V>(
    checks: &[(Validity, V)],
    now: UnixTime,
    check: impl Fn(&V) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut first = None;
    for (validity, v) in checks {
        if !validity.contains(now) {
            continue;
        }
        match check(v) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_else(|| {
        Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            CaNotValid,
        ))))
    }))
}

/// A subject name as rustls and WebPKI take it: a DNS name or an IP address.
pub fn subject_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_string())
        .map_err(|_| anyhow!("{name:?} is not a DNS name or an IP address"))
}

/// The host part of `HOST:PORT` (brackets of an IPv6 literal removed):
/// the name a CA-issued server certificate must carry by default.
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The dialing side's CA check: what [`super::PinnedServerVerifier`] does
/// for a pin, done by path validation to the CA for `name`. Only a leaf the
/// CA signed directly passes: certificates sent with it are ignored.
#[derive(Debug)]
pub(super) struct CaServerCheck {
    anchors: Vec<(Validity, Arc<WebPkiServerVerifier>)>,
    name: ServerName<'static>,
}

impl CaServerCheck {
    pub(super) fn new(roots: &CaRoots, name: ServerName<'static>) -> Result<Self> {
        let mut anchors = Vec::new();
        for a in &roots.anchors {
            let v = WebPkiServerVerifier::builder_with_provider(a.roots.clone(), provider())
                .build()
                .context("cannot build the CA verifier")?;
            anchors.push((a.validity, v));
        }
        Ok(CaServerCheck { anchors, name })
    }

    /// Path, validity (the CA's too), server usage and name; the name rustls
    /// was given is pincat's fixed one, so the expected name is ours.
    pub(super) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<(), Error> {
        any_anchor(&self.anchors, now, |v| {
            v.verify_server_cert(end_entity, &[], &self.name, &[], now)
                .map(drop)
        })
    }
}

/// The listening side's CA check: signed directly by the CA (client
/// usage, valid now, the CA too) and, when names are given, carries one of
/// them.
#[derive(Debug, Clone)]
pub struct CaAllow {
    anchors: Vec<(Validity, Arc<dyn ClientCertVerifier>)>,
    names: Vec<ServerName<'static>>,
    roots: CaRoots,
}

impl CaAllow {
    /// Admits certificates issued by `roots`; with `names`, only those that
    /// carry one of them (a DNS name or IP address in the certificate).
    pub fn new(roots: CaRoots, names: &[String]) -> Result<Self> {
        let names = names
            .iter()
            .map(|n| subject_name(n))
            .collect::<Result<Vec<_>>>()?;
        let mut anchors = Vec::new();
        for a in &roots.anchors {
            let v = WebPkiClientVerifier::builder_with_provider(a.roots.clone(), provider())
                .clear_root_hint_subjects()
                .build()
                .context("cannot build the CA verifier")?;
            anchors.push((a.validity, v));
        }
        Ok(CaAllow {
            anchors,
            names,
            roots,
        })
    }

    /// The CA certificates.
    pub fn roots(&self) -> &CaRoots {
        &self.roots
    }

    pub(super) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<(), Error> {
        any_anchor(&self.anchors, now, |v| {
            v.verify_client_cert(end_entity, &[], now).map(drop)
        })?;
        if self.names.is_empty() {
            super::issued::record(end_entity, None);
            return Ok(());
        }
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        match self
            .names
            .iter()
            .find(|n| cert.verify_is_valid_for_subject_name(n).is_ok())
        {
            Some(n) => {
                super::issued::record(end_entity, Some(n));
                Ok(())
            }
            None => Err(Error::InvalidCertificate(CertificateError::NotValidForName)),
        }
    }
}

/// Client side with a CA: accepts a server that matches one of `pins` (as
/// [`super::PinnedServerVerifier`]) or whose certificate passes the CA
/// check; records what was presented either way.
#[derive(Debug)]
pub(super) struct TrustingServerVerifier {
    pub(super) pins: super::PinnedServerVerifier,
    pub(super) ca: CaServerCheck,
    pub(super) presented: Presented,
}

impl ServerCertVerifier for TrustingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if !self.pins.pins.is_empty()
            && self
                .pins
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .is_ok()
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.presented.record(end_entity);
        self.ca.verify(end_entity, now)?;
        // A failure from here on is the key proof, not the CA check.
        self.presented.accept();
        Ok(ServerCertVerified::assertion())
    }

    super::signature_checks!(self => &self.pins.algs);
}

/// Why a certificate failed the CA check, as a person reads it.
pub fn explain(e: &Error) -> Option<String> {
    let Error::InvalidCertificate(c) = e else {
        return None;
    };
    Some(match c {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "its certificate has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "its certificate is not valid yet (check both clocks)".into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "its certificate does not carry the expected name".into()
        }
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            "its certificate was not issued by the trusted CA".into()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "its certificate is not issued for this use (extended key usage)".into()
        }
        CertificateError::ApplicationVerificationFailure => "its certificate matches no pin".into(),
        CertificateError::Other(o) if o.0.downcast_ref::<CaNotValid>().is_some() => {
            "the CA certificate itself is expired or not valid yet".into()
        }
        _ => "its certificate is not an identity the CA issued (for instance a CA certificate)"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("example.org:7878"), "example.org");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7878"), "::1");
        assert_eq!(host_of("name"), "name");
    }

    #[test]
    fn a_private_key_is_not_a_ca_file() {
        let id = crate::Identity::generate().unwrap();
        let err = CaRoots::from_bytes(id.to_pem().as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("private key"), "{err:#}");
        // A certificate that is not a CA's is no anchor: its key could
        // sign identities for any name.
        let err = CaRoots::from_bytes(id.cert_pem().as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("not a CA"), "{err:#}");
        let ca = crate::Identity::generate_ca(std::time::Duration::from_secs(60)).unwrap();
        let ok = CaRoots::from_bytes(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(ok.fingerprints(), [ca.fingerprint()]);
        assert!(CaRoots::from_bytes(b"junk").is_err());
        let encrypted =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(CaRoots::from_bytes(encrypted).is_err());
    }
}
