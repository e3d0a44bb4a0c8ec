//! Hostile peers that pass the pin check: a receiver that withholds or forges
//! the receipt, and senders that lie about sizes or send dangerous names.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use pincat::protocol::{self, FrameType};

use crate::util::peers::{ServerTls, connect_pinned, fake_receiver, fake_sender};
use crate::util::wire::{files_offer, frame, offer_data_end, read_frame, read_preamble, stream};
use crate::util::{Server, random_bytes, send, text};

fn refused_with(frames: &[(FrameType, Vec<u8>)], t: FrameType) -> String {
    let (ft, p) = frames.first().unwrap_or_else(|| panic!("no answer"));
    assert_eq!(*ft, t, "{frames:?}");
    protocol::decode_reject(p).1
}

#[test]
fn dangerous_names_are_refused_and_nothing_is_written_outside() {
    let base = tempfile::tempdir().unwrap();
    let out = base.path().join("inbox");
    fs::create_dir(&out).unwrap();
    fs::create_dir(base.path().join("elsewhere")).unwrap();
    let long = "n".repeat(300);
    let deep = vec!["d"; 3000].join("/");
    let names: Vec<&str> = vec![
        "../escape",
        "a/../../escape",
        "/tmp/pincat-absolute",
        "C:evil",
        "nul\0byte",
        "esc\x1b[2Jclear",
        "bell\x07",
        "new\nline",
        "back\\slash",
        "",
        ".",
        long.as_str(),
        deep.as_str(),
    ];
    let mut srv = Server::start(base.path(), &["--keep-open", "--out", "inbox"]);
    for name in names {
        let script = offer_data_end(&files_offer(&[(name, 4)]), b"evil", 1, 4);
        let frames = fake_sender(&srv.addr, &srv.fingerprint, &script);
        let msg = refused_with(&frames, FrameType::Reject);
        assert!(!msg.chars().any(|c| c.is_control()), "unescaped: {msg:?}");
        let ev = srv.wait_event("refused");
        assert_eq!(ev["reason"], "bad-name", "{name:?}: {ev}");
        assert!(!ev["message"].as_str().unwrap().contains('\x1b'));
    }
    // A symlink in the target directory is never followed.
    std::os::unix::fs::symlink(base.path().join("elsewhere"), out.join("link")).unwrap();
    let script = offer_data_end(&files_offer(&[("link/planted", 4)]), b"evil", 1, 4);
    let frames = fake_sender(&srv.addr, &srv.fingerprint, &script);
    refused_with(&frames, FrameType::Reject);

    assert_eq!(
        fs::read_dir(base.path().join("elsewhere")).unwrap().count(),
        0
    );
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1, "only the symlink");
    assert!(!std::path::Path::new("/tmp/pincat-absolute").exists());
    assert!(!base.path().join("escape").exists());
    assert!(srv.is_running());
}

#[test]
fn lying_about_sizes_stores_nothing() {
    let base = tempfile::tempdir().unwrap();
    let mut srv = Server::start(base.path(), &["--keep-open", "--out", "inbox"]);
    fs::create_dir(base.path().join("inbox")).unwrap();
    // More bytes than announced.
    let more = offer_data_end(&files_offer(&[("a", 4)]), b"12345678", 1, 8);
    // Fewer bytes than announced, END claiming the full size.
    let fewer = offer_data_end(&files_offer(&[("b", 8)]), b"1234", 1, 8);
    // Right bytes, END lying about them.
    let end_lies = offer_data_end(&files_offer(&[("c", 4)]), b"1234", 1, 3);
    // A stream whose END claims more than was sent.
    let stream = offer_data_end(&stream().encode(), b"xy", 0, 3);
    for script in [more, fewer, end_lies] {
        let frames = fake_sender(&srv.addr, &srv.fingerprint, &script);
        assert_eq!(frames.first().map(|f| f.0), Some(FrameType::Accept));
        assert_eq!(
            frames.last().map(|f| f.0),
            Some(FrameType::Error),
            "{frames:?}"
        );
        srv.wait_event("error");
    }
    assert_eq!(fs::read_dir(base.path().join("inbox")).unwrap().count(), 0);
    let frames = fake_sender(&srv.addr, &srv.fingerprint, &stream);
    // The keep-open receiver has a directory: a stream is refused outright.
    assert_eq!(frames.first().map(|f| f.0), Some(FrameType::Reject));
    assert!(srv.is_running());
}

#[test]
fn a_huge_announced_size_is_refused_up_front() {
    let base = tempfile::tempdir().unwrap();
    let mut srv = Server::start(base.path(), &["--out", "inbox"]);
    let script = frame(FrameType::Offer, &files_offer(&[("huge", u64::MAX / 2)]));
    let frames = fake_sender(&srv.addr, &srv.fingerprint, &script);
    let msg = refused_with(&frames, FrameType::Reject);
    assert!(msg.contains("free"), "{msg}");
    assert_eq!(srv.wait_event("refused")["reason"], "no-space");
    assert!(
        !base.path().join("inbox").exists(),
        "refusal created the directory"
    );
    // Oversized control frames are refused by their header alone.
    let mut big = vec![FrameType::Offer as u8];
    big.extend_from_slice(&(64u32 << 20).to_be_bytes());
    let frames = fake_sender(&srv.addr, &srv.fingerprint, &big);
    assert!(frames.is_empty() || frames[0].0 == FrameType::Reject);
    assert!(srv.is_running());
}

#[test]
fn another_protocol_version_gets_a_clear_error() {
    let base = tempfile::tempdir().unwrap();
    let mut srv = Server::start(base.path(), &[]);
    let mut tls = connect_pinned(&srv.addr, &srv.fingerprint);
    let _ = tls.write_all(b"PINCAT\x00\x63\x01");
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got);
    assert_eq!(
        &got[..protocol::PREAMBLE_LEN],
        &protocol::preamble_of(protocol::Role::Taker)
    );
    let ev = srv.wait_event("refused");
    assert!(
        ev["message"].as_str().unwrap().contains("version 99"),
        "{ev}"
    );
}

/// A pinned receiver that accepts, swallows everything, then misbehaves:
/// after END it sends a RECEIPT for `forge` bytes, or none at all.
fn misbehaving_receiver(forge: Option<u64>) -> (String, String, thread::JoinHandle<u64>) {
    fake_receiver(move |tls: &mut ServerTls| {
        read_preamble(tls).unwrap();
        let mut got = 0u64;
        let mut accepted = false;
        loop {
            let Ok((t, p)) = read_frame(tls) else {
                return got;
            };
            match t {
                FrameType::Offer if !accepted => {
                    accepted = true;
                    let mut out = protocol::preamble_of(protocol::Role::Taker).to_vec();
                    out.extend(frame(FrameType::Accept, &[]));
                    tls.write_all(&out).unwrap();
                }
                FrameType::Data => got += p.len() as u64,
                FrameType::End => {
                    if let Some(claim) = forge {
                        tls.write_all(&frame(
                            FrameType::Receipt,
                            &protocol::encode_counts(0, claim),
                        ))
                        .unwrap();
                        let _ = tls.flush();
                    }
                    // Then say nothing more and wait for the sender to leave.
                    let mut rest = Vec::new();
                    let _ = tls.read_to_end(&mut rest);
                    return got;
                }
                _ => {}
            }
        }
    })
}

#[test]
fn a_receiver_that_never_sends_the_receipt_makes_send_time_out() {
    let (addr, pin, h) = misbehaving_receiver(None);
    let r = send(
        &addr,
        &pin,
        &["--idle-timeout", "1s"],
        b"payload that is never confirmed",
    );
    assert_eq!(r.status.code(), Some(6), "{}", text(&r.stderr));
    let err = text(&r.stderr);
    assert!(
        err.contains("receipt") && err.contains("not confirmed"),
        "{err}"
    );
    assert_eq!(h.join().unwrap(), 31);
}

#[test]
fn a_forged_receipt_for_fewer_bytes_is_detected() {
    let (addr, pin, h) = misbehaving_receiver(Some(10));
    let r = send(&addr, &pin, &[], &random_bytes(100_000, 61));
    assert_eq!(r.status.code(), Some(7), "{}", text(&r.stderr));
    let err = text(&r.stderr);
    assert!(err.contains("10 bytes") && err.contains("100000"), "{err}");
    assert_eq!(h.join().unwrap(), 100_000);
}

#[test]
fn a_peer_trickling_its_handshake_is_cut_off_at_the_deadline() {
    let base = tempfile::tempdir().unwrap();
    let mut srv = Server::start(base.path(), &["--handshake-timeout", "1s"]);
    let mut sock = TcpStream::connect(&srv.addr).unwrap();
    // A plausible TLS record header, then one byte every 200 ms.
    let start = std::time::Instant::now();
    let _ = sock.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]);
    let mut cut = false;
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(200));
        if sock.write_all(&[0x01]).is_err() {
            cut = true;
            break;
        }
    }
    let ev = srv.wait_event("refused");
    assert_eq!(ev["reason"], "timeout", "{ev}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(cut || start.elapsed() < Duration::from_secs(9));
}
