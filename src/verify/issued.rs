//! The name a client certificate admitted by the private CA carries
//! (`PINCAT_PEER_NAME` for `serve --exec`): the `--allow-name` it matched,
//! else the first DNS name or address it was issued for. Kept per thread,
//! as [`super::Presented`] is, for the connection that thread serves.

use std::cell::RefCell;

use rustls::pki_types::ServerName;

thread_local! {
    static ISSUED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The CA-issued name of the client certificate this thread's last
/// handshake admitted through the CA (`None`: admitted otherwise, or it
/// names nothing).
pub fn issued_name() -> Option<String> {
    ISSUED.with(|c| c.borrow().clone())
}

/// Forgets it, before a new handshake on this thread.
pub(super) fn forget() {
    ISSUED.with(|c| *c.borrow_mut() = None);
}

/// Records the name of `der`, which the CA just admitted: `matched` (the
/// allowed name it was checked against), else its first subject
/// alternative name.
pub(super) fn record(der: &[u8], matched: Option<&ServerName<'_>>) {
    let name = match matched {
        Some(n) => Some(n.to_str().into_owned()),
        None => first_san(der),
    };
    ISSUED.with(|c| *c.borrow_mut() = name);
}

fn first_san(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|g| match g {
        GeneralName::DNSName(d) => Some(d.to_string()),
        GeneralName::IPAddress(ip) => match ip.len() {
            4 => <[u8; 4]>::try_from(*ip)
                .ok()
                .map(|b| std::net::Ipv4Addr::from(b).to_string()),
            16 => <[u8; 16]>::try_from(*ip)
                .ok()
                .map(|b| std::net::Ipv6Addr::from(b).to_string()),
            _ => None,
        },
        _ => None,
    })
}
