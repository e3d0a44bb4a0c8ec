//! Hostile peers that pass the pin check: a receiver that withholds or forges
//! the receipt, and senders that lie about sizes or send dangerous names.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use pincat::Identity;
use pincat::protocol::{self, Entry, FrameType, Offer, TransferKind};
use pincat::verify::{self, Presented};
use rustls::{ClientConnection, ServerConnection, StreamOwned};

fn frame(t: FrameType, p: &[u8]) -> Vec<u8> {
    protocol::frame(t, p)
}

fn files_offer(entries: &[(&str, u64)]) -> Vec<u8> {
    Offer {
        kind: TransferKind::Files,
        entries: entries
            .iter()
            .map(|(n, s)| Entry {
                name: n.to_string(),
                is_dir: false,
                mode: 0o644,
                size: *s,
            })
            .collect(),
    }
    .encode()
}

/// Connects to a pincat server as a hand-driven sender, writes `script`
/// after the preamble, and returns the frames the server answered.
fn fake_sender(addr: &str, pin: &str, script: &[u8]) -> Vec<(FrameType, Vec<u8>)> {
    let config =
        verify::client_config(Some(pin.parse().unwrap()), None, Presented::default()).unwrap();
    let conn = ClientConnection::new(config, verify::SERVER_NAME.try_into().unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    let mut out = protocol::preamble().to_vec();
    out.extend_from_slice(script);
    let _ = tls.write_all(&out);
    let _ = tls.flush();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got);
    let mut frames = Vec::new();
    if got.len() >= 8 {
        let mut rest = &got[8..];
        while rest.len() >= 5 {
            let (t, len) = protocol::decode_header(rest[..5].try_into().unwrap()).unwrap();
            frames.push((t, rest[5..5 + len].to_vec()));
            rest = &rest[5 + len..];
        }
    }
    frames
}

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
        let mut script = frame(FrameType::Offer, &files_offer(&[(name, 4)]));
        script.extend(frame(FrameType::Data, b"evil"));
        script.extend(frame(FrameType::End, &protocol::encode_counts(1, 4)));
        let frames = fake_sender(&srv.addr, &srv.fingerprint, &script);
        let msg = refused_with(&frames, FrameType::Reject);
        assert!(!msg.chars().any(|c| c.is_control()), "unescaped: {msg:?}");
        let ev = srv.wait_event("refused");
        assert_eq!(ev["reason"], "bad-name", "{name:?}: {ev}");
        assert!(!ev["message"].as_str().unwrap().contains('\x1b'));
    }
    // A symlink in the target directory is never followed.
    std::os::unix::fs::symlink(base.path().join("elsewhere"), out.join("link")).unwrap();
    let mut script = frame(FrameType::Offer, &files_offer(&[("link/planted", 4)]));
    script.extend(frame(FrameType::Data, b"evil"));
    script.extend(frame(FrameType::End, &protocol::encode_counts(1, 4)));
    let frames = fake_sender(&srv.addr, &srv.fingerprint, &script);
    refused_with(&frames, FrameType::Reject);

    assert_eq!(
        fs::read_dir(base.path().join("elsewhere")).unwrap().count(),
        0
    );
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1, "only the symlink");
    assert!(!std::path::Path::new("/tmp/pincat-absolute").exists());
    assert!(!base.path().join("escape").exists());
    assert!(srv.child.try_wait().unwrap().is_none());
}

#[test]
fn lying_about_sizes_stores_nothing() {
    let base = tempfile::tempdir().unwrap();
    let mut srv = Server::start(base.path(), &["--keep-open", "--out", "inbox"]);
    fs::create_dir(base.path().join("inbox")).unwrap();
    // More bytes than announced.
    let mut more = frame(FrameType::Offer, &files_offer(&[("a", 4)]));
    more.extend(frame(FrameType::Data, b"12345678"));
    more.extend(frame(FrameType::End, &protocol::encode_counts(1, 8)));
    // Fewer bytes than announced, END claiming the full size.
    let mut fewer = frame(FrameType::Offer, &files_offer(&[("b", 8)]));
    fewer.extend(frame(FrameType::Data, b"1234"));
    fewer.extend(frame(FrameType::End, &protocol::encode_counts(1, 8)));
    // Right bytes, END lying about them.
    let mut end_lies = frame(FrameType::Offer, &files_offer(&[("c", 4)]));
    end_lies.extend(frame(FrameType::Data, b"1234"));
    end_lies.extend(frame(FrameType::End, &protocol::encode_counts(1, 3)));
    // A stream whose END claims more than was sent.
    let mut stream = frame(
        FrameType::Offer,
        &Offer {
            kind: TransferKind::Stream,
            entries: vec![],
        }
        .encode(),
    );
    stream.extend(frame(FrameType::Data, b"xy"));
    stream.extend(frame(FrameType::End, &protocol::encode_counts(0, 3)));
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
    assert!(srv.child.try_wait().unwrap().is_none());
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
    assert!(srv.child.try_wait().unwrap().is_none());
}

#[test]
fn another_protocol_version_gets_a_clear_error() {
    let base = tempfile::tempdir().unwrap();
    let mut srv = Server::start(base.path(), &[]);
    let config = verify::client_config(
        Some(srv.fingerprint.parse().unwrap()),
        None,
        Presented::default(),
    )
    .unwrap();
    let conn = ClientConnection::new(config, verify::SERVER_NAME.try_into().unwrap()).unwrap();
    let sock = TcpStream::connect(&srv.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    let _ = tls.write_all(b"PINCAT\x00\x63");
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got);
    assert_eq!(&got[..8], &protocol::preamble());
    let ev = srv.wait_event("refused");
    assert!(
        ev["message"].as_str().unwrap().contains("version 99"),
        "{ev}"
    );
}

/// A pinned receiver that accepts, swallows everything, then misbehaves.
fn fake_receiver(forge: Option<u64>) -> (String, String, thread::JoinHandle<u64>) {
    let id = Identity::generate().unwrap();
    let config = verify::server_config(&id, None, Presented::default()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut tls = StreamOwned::new(ServerConnection::new(Arc::clone(&config)).unwrap(), sock);
        let mut pre = [0u8; 8];
        tls.read_exact(&mut pre).unwrap();
        let mut got = 0u64;
        let mut accepted = false;
        loop {
            let mut h = [0u8; 5];
            if tls.read_exact(&mut h).is_err() {
                return got;
            }
            let (t, len) = protocol::decode_header(&h).unwrap();
            let mut p = vec![0u8; len];
            tls.read_exact(&mut p).unwrap();
            match t {
                FrameType::Offer if !accepted => {
                    accepted = true;
                    let mut out = protocol::preamble().to_vec();
                    out.extend(frame(FrameType::Accept, &[]));
                    tls.write_all(&out).unwrap();
                }
                FrameType::Data => got += len as u64,
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
    });
    (addr, id.fingerprint().to_string(), h)
}

#[test]
fn a_receiver_that_never_sends_the_receipt_makes_send_time_out() {
    let (addr, pin, h) = fake_receiver(None);
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
    let (addr, pin, h) = fake_receiver(Some(10));
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
