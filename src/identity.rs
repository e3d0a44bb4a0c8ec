//! A TLS identity: a private key and its self-signed certificate. Ephemeral
//! ones are generated in memory with rcgen; persistent ones are PEM files
//! holding both (the key alone would re-sign to a new fingerprint).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::fingerprint::Fingerprint;
use crate::sys;
use std::os::fd::AsFd;

/// A private key plus the certificate that carries its public half.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    fingerprint: Fingerprint,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint,
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh ECDSA P-256 key and a self-signed certificate, in memory only.
    ///
    /// ```
    /// let id = pincat::Identity::generate().unwrap();
    /// assert_eq!(id.fingerprint().to_string().len(), 64);
    /// ```
    pub fn generate() -> Result<Self> {
        let key = new_key()?;
        let mut params = rcgen::CertificateParams::new(vec![crate::verify::SERVER_NAME.into()])
            .context("cannot build certificate parameters")?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pincat");
        let cert = params
            .self_signed(&key)
            .context("cannot self-sign the certificate")?;
        Ok(Self::from_parts(cert.der().clone(), pkcs8(&key)))
    }

    /// Generates a CA identity: a new key and a self-signed CA certificate
    /// valid for `valid` from now, allowed to sign only end-entity
    /// certificates (path length 0). Issue identities from it with
    /// [`Identity::issue`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let ca = pincat::Identity::generate_ca(Duration::from_secs(3600)).unwrap();
    /// let id = pincat::Identity::issue(&ca, &["host.example".into()], Duration::from_secs(600)).unwrap();
    /// assert_ne!(id.fingerprint(), ca.fingerprint());
    /// ```
    pub fn generate_ca(valid: Duration) -> Result<Self> {
        let key = new_key()?;
        let spki = Fingerprint::of_der(key.public_key_pem().as_bytes()).to_string();
        let mut params = rcgen::CertificateParams::default();
        // A distinct name per CA: path building matches issuers by name.
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("pincat CA {}", &spki[..16]),
        );
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let now = SystemTime::now();
        set_validity(&mut params, now - CLOCK_SKEW, later(now, valid)?)?;
        let cert = params
            .self_signed(&key)
            .context("cannot self-sign the CA certificate")?;
        Ok(Self::from_parts(cert.der().clone(), pkcs8(&key)))
    }

    /// Issues a new identity signed by the CA identity `issuer`, carrying
    /// `names` (DNS names or IP addresses; the first is also its common
    /// name), for TLS servers and clients, valid from now (less a few
    /// minutes of clock skew) for `valid`.
    pub fn issue(issuer: &Identity, names: &[String], valid: Duration) -> Result<Self> {
        let now = SystemTime::now();
        Self::issue_between(issuer, names, now - CLOCK_SKEW, later(now, valid)?)
    }

    /// As [`Identity::issue`], valid exactly from `not_before` to `not_after`.
    pub fn issue_between(
        issuer: &Identity,
        names: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self> {
        let ca_valid = crate::verify::ca::ca_validity(&issuer.cert).context(
            "the issuer is not a CA identity (make one with: pincat identity new --ca CA.id)",
        )?;
        if !ca_valid.contains(rustls::pki_types::UnixTime::now()) {
            bail!("the issuer's CA certificate is expired or not valid yet");
        }
        // Nothing outlives its CA: peers stop trusting it then anyway.
        let ca_end = SystemTime::UNIX_EPOCH + Duration::from_secs(ca_valid.not_after.max(0) as u64);
        let not_after = not_after.min(ca_end);
        let Some(first) = names.first() else {
            bail!("an issued identity needs a name (--name)");
        };
        for n in names {
            crate::verify::ca::subject_name(n)?;
        }
        let ca_key =
            rcgen::KeyPair::try_from(&issuer.key).context("cannot use the issuer's private key")?;
        let ca = rcgen::Issuer::from_ca_cert_der(&issuer.cert, ca_key)
            .context("cannot read the issuer's certificate")?;
        let key = new_key()?;
        let mut params =
            rcgen::CertificateParams::new(names.to_vec()).context("bad certificate name")?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before, not_after)?;
        let cert = params
            .signed_by(&key, &ca)
            .context("cannot sign the certificate")?;
        Ok(Self::from_parts(cert.der().clone(), pkcs8(&key)))
    }

    fn from_parts(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Self {
        let fingerprint = Fingerprint::of_der(&cert);
        Identity {
            cert,
            key,
            fingerprint,
        }
    }

    /// Builds an identity from DER bytes, checking that the key matches the certificate.
    pub fn from_der(cert: Vec<u8>, key: Vec<u8>) -> Result<Self> {
        let key = PrivateKeyDer::try_from(key)
            .map_err(|e| anyhow!("not a DER private key (PKCS#8, PKCS#1 or SEC1): {e}"))?;
        let id = Self::from_parts(CertificateDer::from(cert), key);
        id.check()?;
        Ok(id)
    }

    /// Parses PEM text holding one `PRIVATE KEY` block and one `CERTIFICATE` block.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let cert = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or_else(|| anyhow!("no CERTIFICATE block found"))?
            .map_err(|e| anyhow!("bad CERTIFICATE block: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => anyhow!("no PRIVATE KEY block found"),
            e => anyhow!("bad PRIVATE KEY block: {e}"),
        })?;
        let id = Self::from_parts(cert, key);
        id.check()?;
        Ok(id)
    }

    /// Reads an identity file written by [`Identity::save`] (or by openssl:
    /// key and certificate PEM concatenated). A file that group or others
    /// can read is refused, as OpenSSH refuses an unprotected key: whoever
    /// reads it *is* this identity.
    pub fn load(path: &Path) -> Result<Self> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let mut f = fs::File::open(path)
            .with_context(|| format!("cannot read identity {}", path.display()))?;
        let mode = f
            .metadata()
            .with_context(|| format!("cannot read identity {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "identity {} is readable by others (mode {:04o}): its private key is not private; run chmod 600 on it",
                path.display(),
                mode & 0o7777
            );
        }
        let mut pem = Vec::new();
        f.read_to_end(&mut pem)
            .with_context(|| format!("cannot read identity {}", path.display()))?;
        Self::from_pem(&pem).with_context(|| format!("bad identity file {}", path.display()))
    }

    /// Reads an identity from where `spec` says: `env:VAR` (the PEM in an
    /// environment variable, for containers and CI secrets that cannot be
    /// written to a file), else a file path (see [`Identity::load`]).
    pub fn load_spec(spec: &std::ffi::OsStr) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        if let Some(var) = spec.as_bytes().strip_prefix(b"env:") {
            let var = std::str::from_utf8(var).context("bad environment variable name")?;
            // The key leaves the environment: no program pincat starts
            // (pipe --exec) inherits it.
            let pem = crate::sys::take_env(var.as_ref())
                .ok_or_else(|| anyhow!("--identity env:{var}: the variable is not set"))?;
            return Self::from_pem(pem.as_bytes())
                .with_context(|| format!("bad identity in environment variable {var}"));
        }
        Self::load(Path::new(spec))
    }

    /// The identity as PEM: the private key, then the certificate.
    pub fn to_pem(&self) -> String {
        let mut out = pem_block("PRIVATE KEY", self.key.secret_der());
        out.push_str(&pem_block("CERTIFICATE", &self.cert));
        out
    }

    /// Writes the identity to a new file with mode 0600. Never overwrites.
    pub fn save(&self, path: &Path) -> Result<()> {
        let pem = self.to_pem();
        write_new_private(path, pem.as_bytes())
    }

    /// SHA-256 of the certificate's DER.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The certificate, DER-encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.cert)
    }

    /// The one-certificate chain and a copy of the key, for rustls builders.
    pub(crate) fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![self.cert.clone()], self.key.clone_key())
    }

    /// The key and certificate ready for rustls; fails if they do not match.
    pub(crate) fn certified_key(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>> {
        let ck = CertifiedKey::from_der(vec![self.cert.clone()], self.key.clone_key(), provider)
            .map_err(|e| anyhow!("the private key does not fit the certificate: {e}"))?;
        Ok(Arc::new(ck))
    }

    fn check(&self) -> Result<()> {
        self.certified_key(&crate::verify::provider()).map(drop)
    }
}

/// How far back an issued certificate's validity starts, for peers whose
/// clocks are a little behind.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

fn new_key() -> Result<rcgen::KeyPair> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("cannot generate an ECDSA P-256 key")
}

fn pkcs8(key: &rcgen::KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// `now + valid`, for validities a certificate can express.
fn later(now: SystemTime, valid: Duration) -> Result<SystemTime> {
    const MAX: Duration = Duration::from_secs(100 * 366 * 24 * 3600);
    if valid > MAX {
        bail!("the validity is too long (at most 100 years)");
    }
    Ok(now + valid)
}

fn set_validity(
    params: &mut rcgen::CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<()> {
    if not_after <= not_before {
        bail!("the validity period is empty");
    }
    let range = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .is_ok_and(|d| d.as_secs() < 253_402_300_799)
    };
    if !range(not_before) || !range(not_after) {
        bail!("the validity must lie between 1970 and 9999");
    }
    params.not_before = time::OffsetDateTime::from(not_before);
    params.not_after = time::OffsetDateTime::from(not_after);
    Ok(())
}

/// Fingerprint of a certificate or identity file: PEM (first CERTIFICATE block) or DER.
pub fn fingerprint_of_bytes(bytes: &[u8]) -> Result<Fingerprint> {
    if let Some(first) = CertificateDer::pem_slice_iter(bytes).next() {
        let cert = first.map_err(|e| anyhow!("bad CERTIFICATE block: {e}"))?;
        return Ok(Fingerprint::of_der(&cert));
    }
    // DER X.509 starts with a SEQUENCE tag; anything else is not a certificate.
    if bytes.first() == Some(&0x30)
        && rustls::server::ParsedCertificate::try_from(&CertificateDer::from(bytes)).is_ok()
    {
        return Ok(Fingerprint::of_der(bytes));
    }
    bail!("no certificate found (expected PEM with a CERTIFICATE block, or DER)")
}

/// The public-key pin (`sha256//BASE64` of the SubjectPublicKeyInfo) of
/// the certificate in `bytes` (PEM or DER, as [`fingerprint_of_bytes`]).
pub fn spki_pin_of_bytes(bytes: &[u8]) -> Result<crate::fingerprint::Pin> {
    let der = match CertificateDer::pem_slice_iter(bytes).next() {
        Some(first) => first
            .map_err(|e| anyhow!("bad CERTIFICATE block: {e}"))?
            .to_vec(),
        None => bytes.to_vec(),
    };
    crate::fingerprint::spki_of_der(&der)
        .map(crate::fingerprint::Pin::Spki)
        .ok_or_else(|| {
            anyhow!("no certificate found (expected PEM with a CERTIFICATE block, or DER)")
        })
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = crate::fingerprint::base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes `bytes` to a new file at `path` with mode 0600: an unnamed file is
/// written and synced, then linked to its name, which never replaces
/// anything; a failure leaves nothing under the name.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let exists = || anyhow::anyhow!("{} already exists; not overwriting it", path.display());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} is not a file name", path.display()))?;
    let dfd = sys::open_dir(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    if sys::stat_at(dfd.as_fd(), name)?.is_some() {
        return Err(exists());
    }
    let mut f = sys::tmpfile_in(dfd.as_fd(), 0o600)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    match sys::link_unnamed(&f, dfd.as_fd(), name) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists()),
        r => r.with_context(|| format!("cannot create {}", path.display()))?,
    }
    let _ = sys::fsync(dfd.as_fd());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_private_is_0600_and_refuses_existing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.pem");
        write_new_private(&p, b"secret").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_new_private(&p, b"other").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"secret");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn pem_round_trip_keeps_fingerprint() {
        let id = Identity::generate().unwrap();
        let back = Identity::from_pem(id.to_pem().as_bytes()).unwrap();
        assert_eq!(back.fingerprint(), id.fingerprint());
        assert_eq!(
            fingerprint_of_bytes(id.to_pem().as_bytes()).unwrap(),
            id.fingerprint()
        );
        assert_eq!(
            fingerprint_of_bytes(id.cert_der()).unwrap(),
            id.fingerprint()
        );
    }

    #[test]
    fn two_identities_differ() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn mismatched_key_and_cert_are_refused() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        let mixed = format!(
            "{}{}",
            pem_block("PRIVATE KEY", a.key.secret_der()),
            b.cert_pem()
        );
        let err = Identity::from_pem(mixed.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(fingerprint_of_bytes(b"hello").is_err());
        assert!(fingerprint_of_bytes(&[0x30, 0x03, 0x01, 0x01, 0x00]).is_err());
        assert!(
            Identity::from_pem(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }
}
