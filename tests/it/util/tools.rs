//! Standard tools the interop tests talk to (openssl, ncat, socat): whether
//! one is installed, and openssl's certificates and fingerprints.

use std::path::Path;
use std::process::{Command, Stdio};

use super::text;

/// Whether `tool` can be run here; says so on stderr when it cannot, since
/// the caller then skips its test.
pub fn cmd_exists(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg(if tool == "openssl" { "version" } else { "-h" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("{tool} not installed; skipping");
    }
    ok
}

/// A P-256 key and self-signed certificate made by openssl in `dir`
/// (`key.pem`, `cert.pem`); returns the fingerprint line openssl prints.
pub fn openssl_cert(dir: &Path) -> String {
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=peer",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("openssl")
        .args([
            "x509",
            "-in",
            "cert.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

/// The hex digest in a line `openssl x509 -fingerprint` printed
/// (`sha256 Fingerprint=AB:CD:...`), lowercase and without colons, as
/// pincat prints it.
pub fn openssl_fingerprint_hex(line: &str) -> String {
    line.split('=')
        .nth(1)
        .expect("openssl printed a fingerprint")
        .trim()
        .replace(':', "")
        .to_lowercase()
}
