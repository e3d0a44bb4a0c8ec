//! The SHA-256 certificate fingerprint: computing it, parsing what users paste,
//! printing it canonically (64 lower-case hex characters), comparing it.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// SHA-256 digest of a certificate's DER encoding: the only identity pincat trusts.
///
/// ```
/// use pincat::Fingerprint;
/// let a: Fingerprint = "SHA256 Fingerprint=9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08"
///     .parse()
///     .unwrap();
/// assert_eq!(a, Fingerprint::of_der(b"test"));
/// assert_eq!(a.to_string(), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
/// assert!("9f86d081".parse::<Fingerprint>().is_err()); // never a prefix
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

/// Why a string is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// A character that is not hex, `:` or a recognised prefix.
    #[error("not a SHA-256 fingerprint: {0:?} is not a hex digit")]
    BadChar(char),
    /// The hex digits do not make exactly 32 bytes.
    #[error("not a SHA-256 fingerprint: expected 64 hex digits (32 bytes), got {0}")]
    BadLength(usize),
}

impl Fingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Wraps 32 raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Colon-separated upper-case form, as `openssl x509 -fingerprint` prints it.
    pub fn to_openssl(&self) -> String {
        let hex = hex::encode_upper(self.0);
        let pairs: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
        pairs.join(":")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Accepts any case, with or without `:` (or space, `-`) separators,
    /// optionally prefixed `sha256:`, `SHA256:` or pasted whole from openssl
    /// (`SHA256 Fingerprint=AB:CD:...` / `sha256 Fingerprint=...`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut s = s.trim();
        if let Some(eq) = s.find('=') {
            let (head, tail) = s.split_at(eq);
            if head.trim().to_ascii_lowercase().ends_with("fingerprint") {
                s = &tail[1..];
            }
        }
        let lower = s.trim_start().to_ascii_lowercase();
        let s = if lower.starts_with("sha256:") {
            &s.trim_start()["sha256:".len()..]
        } else {
            s
        };
        let mut bytes = [0u8; 32];
        let mut digits = 0usize;
        for c in s.chars() {
            if matches!(c, ':' | ' ' | '-') {
                continue;
            }
            let v = c.to_digit(16).ok_or(FingerprintError::BadChar(c))? as u8;
            if digits < 64 {
                bytes[digits / 2] |= if digits.is_multiple_of(2) { v << 4 } else { v };
            }
            digits += 1;
        }
        if digits != 64 {
            return Err(FingerprintError::BadLength(digits));
        }
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn digest_of_der_matches_known_sha256() {
        // SHA-256("test")
        assert_eq!(Fingerprint::of_der(b"test").to_string(), HEX);
    }

    #[test]
    fn parses_every_pasted_form() {
        let want: Fingerprint = HEX.parse().unwrap();
        let upper_colons = want.to_openssl();
        assert_eq!(upper_colons.len(), 95);
        for form in [
            HEX.to_uppercase(),
            upper_colons.clone(),
            format!("sha256:{HEX}"),
            format!("SHA256:{upper_colons}"),
            format!("SHA256 Fingerprint={upper_colons}"),
            format!("sha256 Fingerprint={upper_colons}\n"),
            format!("  {HEX}  "),
        ] {
            assert_eq!(form.parse::<Fingerprint>(), Ok(want), "{form}");
        }
    }

    #[test]
    fn rejects_short_long_and_garbage() {
        assert_eq!(
            HEX[..62].parse::<Fingerprint>(),
            Err(FingerprintError::BadLength(62))
        );
        assert_eq!(
            format!("{HEX}00").parse::<Fingerprint>(),
            Err(FingerprintError::BadLength(66))
        );
        assert_eq!(
            "".parse::<Fingerprint>(),
            Err(FingerprintError::BadLength(0))
        );
        let mut bad = HEX.to_string();
        bad.replace_range(10..11, "g");
        assert_eq!(
            bad.parse::<Fingerprint>(),
            Err(FingerprintError::BadChar('g'))
        );
        assert!("sha1:abcd".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn comparison_uses_all_32_bytes() {
        let a: Fingerprint = HEX.parse().unwrap();
        let mut last = *a.as_bytes();
        last[31] ^= 1;
        assert_ne!(a, Fingerprint::from_bytes(last));
    }
}
