//! Identity and certificate file parsing (PEM or DER) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pincat::Identity::from_pem(data);
    let _ = pincat::identity::fingerprint_of_bytes(data);
    if data.len() > 2 {
        let split = data[0] as usize % data.len();
        let _ = pincat::Identity::from_der(data[1..split.max(1)].to_vec(), data[split.max(1)..].to_vec());
    }
});
