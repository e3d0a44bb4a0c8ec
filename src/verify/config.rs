//! The TLS 1.3-only client and server configs built around the verifiers:
//! no resumption, no tickets, no early data; and the crypto provider they share.

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use rustls::client::Resumption;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};

use super::ca::{CaRoots, CaServerCheck, TrustingServerVerifier};
use super::{Allow, AllowListClientVerifier, PinnedServerVerifier, Presented};
use crate::fingerprint::{Fingerprint, Pin};
use crate::identity::Identity;

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
