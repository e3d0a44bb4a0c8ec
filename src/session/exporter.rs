//! The TLS exporter (RFC 8446 section 7.5) of a session on rustls's
//! unbuffered API, which hands out traffic keys but no exporter: rustls
//! reports the exporter secret to its `KeyLog` on the thread that runs the
//! handshake, and the exporter is expanded here with the suite's own HKDF.
//! The pairing code binds to it (RFC 9266 `tls-exporter`).

use std::cell::RefCell;
use std::sync::Arc;

use rustls::crypto::tls13::OkmBlock;
use rustls::{KeyLog, SupportedCipherSuite};

/// The RFC 9266 label for channel binding.
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

thread_local! {
    /// The exporter secret of the handshake running on this thread.
    static SECRET: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The `KeyLog` that keeps only the exporter secret, for this thread.
#[derive(Debug)]
struct ExporterLog;

impl KeyLog for ExporterLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == "EXPORTER_SECRET" {
            SECRET.with(|s| *s.borrow_mut() = Some(secret.to_vec()));
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == "EXPORTER_SECRET"
    }
}

/// The key log every pincat TLS config carries.
pub fn key_log() -> Arc<dyn KeyLog> {
    Arc::new(ExporterLog)
}

/// Forgets any secret left on this thread (before a handshake starts).
pub(crate) fn clear() {
    SECRET.with(|s| *s.borrow_mut() = None);
}

/// Takes the exporter secret the handshake just finished on this thread
/// reported; `None` if it reported none.
pub(crate) fn take() -> Option<Vec<u8>> {
    SECRET.with(|s| s.borrow_mut().take())
}

/// TLS-Exporter(label, context, out.len()) from the exporter secret:
/// HKDF-Expand-Label(Derive-Secret(secret, label, ""), "exporter",
/// Hash(context), length), with the suite's hash and HKDF.
pub fn export(
    suite: SupportedCipherSuite,
    secret: &[u8],
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Option<()> {
    let suite = suite.tls13()?;
    let hash = suite.common.hash_provider;
    let expander = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(secret));
    let mut derived = vec![0u8; hash.output_len()];
    let empty = hash.hash(&[]);
    expand_label(expander.as_ref(), label, empty.as_ref(), &mut derived)?;
    let expander = suite
        .hkdf_provider
        .expander_for_okm(&OkmBlock::new(&derived));
    let h_context = hash.hash(context);
    expand_label(expander.as_ref(), b"exporter", h_context.as_ref(), out)
}

/// HKDF-Expand-Label (RFC 8446 section 7.1).
fn expand_label(
    expander: &dyn rustls::crypto::tls13::HkdfExpander,
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Option<()> {
    let len = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).ok()?];
    let context_len = [u8::try_from(context.len()).ok()?];
    let info: [&[u8]; 6] = [&len, &label_len, b"tls13 ", label, &context_len, context];
    expander.expand_slice(&info, out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{self, Presented, memory::Pair};

    /// Our exporter equals rustls's own (buffered API) for every suite
    /// pincat offers, from the secret its key log reported.
    #[test]
    fn the_exporter_matches_rustls_for_every_suite() {
        let id = crate::identity::Identity::generate().unwrap();
        for suite in verify::provider().cipher_suites.clone() {
            let client = verify::client_config(Some(id.fingerprint()), None, Presented::default());
            let mut server =
                (*verify::server_config(&id, None, Presented::default()).unwrap()).clone();
            let mut only = (**server.crypto_provider()).clone();
            only.cipher_suites = vec![suite];
            server = rustls::ServerConfig::builder_with_provider(Arc::new(only))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(id.chain_and_key().0, id.chain_and_key().1)
                .unwrap();
            server.key_log = key_log();
            clear();
            let p = Pair::new(client.unwrap(), Arc::new(server)).unwrap();
            assert!(p.client_result.is_ok() && p.server_result.is_ok());
            let secret = take().expect("the key log saw the exporter secret");
            let theirs = p
                .client
                .export_keying_material([0u8; 32], CHANNEL_BINDING_LABEL, None)
                .unwrap();
            let served = p
                .server
                .export_keying_material([0u8; 32], CHANNEL_BINDING_LABEL, Some(b"ctx"))
                .unwrap();
            let mut ours = [0u8; 32];
            export(suite, &secret, CHANNEL_BINDING_LABEL, &[], &mut ours).unwrap();
            assert_eq!(ours, theirs, "{suite:?}");
            export(suite, &secret, CHANNEL_BINDING_LABEL, b"ctx", &mut ours).unwrap();
            assert_eq!(ours, served, "{suite:?}");
            assert_eq!(p.client.negotiated_cipher_suite(), Some(suite));
        }
    }
}
