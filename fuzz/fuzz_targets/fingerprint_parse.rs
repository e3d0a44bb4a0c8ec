//! Fingerprint parsing: never panics, accepts exactly 32 bytes, and what it
//! accepts prints back to a form that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pincat::Fingerprint;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(fp) = s.parse::<Fingerprint>() {
        assert_eq!(fp.to_string().parse::<Fingerprint>(), Ok(fp));
        assert_eq!(fp.to_openssl().parse::<Fingerprint>(), Ok(fp));
    }
});
