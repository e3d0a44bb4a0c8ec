//! A receiver that lies about its handler's reply never makes the sender
//! succeed: more than 16 MiB of REPLY is a broken protocol (exit 7), and
//! KEEPALIVE while it "runs" is waited through.

use std::io::{Read, Write};

use pincat::protocol::{self, FrameType};

use crate::util::peers::{ServerTls, fake_receiver};
use crate::util::wire::{frame, read_frame, read_preamble};
use crate::util::{send, text};

/// A receiver that accepts a stream, and after its END sends `keepalives`
/// KEEPALIVE frames, `reply` as REPLY frames of 1 MiB, then a RECEIPT.
fn lying_receiver(keepalives: usize, reply: usize) -> (String, String) {
    let (addr, pin, _h) = fake_receiver(move |tls: &mut ServerTls| {
        read_preamble(tls).unwrap();
        let mut got = 0u64;
        loop {
            let Ok((t, p)) = read_frame(tls) else { return };
            match t {
                FrameType::Offer => {
                    let mut out = protocol::preamble_of(protocol::Role::Taker).to_vec();
                    out.extend(frame(FrameType::Accept, &[]));
                    tls.write_all(&out).unwrap();
                }
                FrameType::Data => got += p.len() as u64,
                FrameType::End => break,
                _ => return,
            }
        }
        for _ in 0..keepalives {
            let _ = tls.write_all(&frame(FrameType::Keepalive, &[]));
        }
        let mut left = reply;
        while left > 0 {
            let n = left.min(1 << 20);
            if tls
                .write_all(&frame(FrameType::Reply, &vec![b'r'; n]))
                .is_err()
            {
                return;
            }
            left -= n;
        }
        let receipt = frame(FrameType::Receipt, &protocol::encode_counts(0, got));
        let _ = tls.write_all(&receipt);
        let _ = tls.flush();
        let _ = tls.read_to_end(&mut Vec::new());
    });
    (addr, pin)
}

#[test]
fn a_reply_past_16_mib_is_a_broken_protocol() {
    let (addr, pin) = lying_receiver(0, (16 << 20) + 1);
    let o = send(&addr, &pin, &[], b"request");
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("16 MiB"), "{}", text(&o.stderr));
    assert!(o.stdout.len() <= 16 << 20);
}

#[test]
fn keepalives_then_a_reply_then_the_receipt_is_success() {
    let (addr, pin) = lying_receiver(3, 5);
    let o = send(&addr, &pin, &[], b"request");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(o.stdout, b"rrrrr");
}
