//! The receiver's bounds, tried as an attacker would: floods of bare
//! sockets and stalled handshakes, many maximal offers, many-file offers
//! held open, deep paths, tricklers, and a sender that never closes.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use pincat::Identity;
use pincat::protocol::{self, FrameType};

use crate::util::peers::HandSender;
use crate::util::process::{cpu_seconds, fd_count, proc_status};
use crate::util::wire::{files_offer, frame, offer_data_end, stream};
use crate::util::{Server, WAIT, send, text, wait_until};

#[test]
fn bare_socket_and_stalled_handshake_floods_never_lock_out_an_allowed_sender() {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity::generate().unwrap();
    let id_file = dir.path().join("me.id");
    id.save(&id_file).unwrap();
    let fp = id.fingerprint().to_string();
    let mut srv = Server::start(
        dir.path(),
        &[
            "--keep-open",
            "--allow",
            &fp,
            "--out",
            "in",
            "--max-handshakes",
            "16",
        ],
    );
    // 300 sockets that never send a byte, and 60 that send half a record
    // header and stall: more than both caps.
    let mut bare: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&srv.addr).unwrap())
        .collect();
    for _ in 0..60 {
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        s.write_all(&[0x16, 0x03]).unwrap();
        bare.push(s);
    }
    thread::sleep(Duration::from_millis(300));
    let id_path = id_file.to_str().unwrap();
    let src = tempfile::tempdir().unwrap();
    let mut ok = 0;
    for i in 0..20u8 {
        let f = src.path().join(format!("f{i}"));
        std::fs::write(&f, [i; 100]).unwrap();
        let out = send(
            &srv.addr,
            &srv.fingerprint,
            &["--identity", id_path, f.to_str().unwrap()],
            b"",
        );
        if out.status.success() {
            ok += 1;
        } else {
            eprintln!("send {i}: {}", text(&out.stderr));
        }
        // Keep the flood going between sends.
        bare.push(TcpStream::connect(&srv.addr).unwrap());
    }
    assert_eq!(ok, 20, "the flood locked out an allowed sender");
    assert!(srv.is_running(), "server died");
    // The stalled handshakes past the cap were cut, oldest first. A cut
    // connection's own worker may report its failed handshake before the
    // acceptor reports the cut, so those reports may come first.
    let cut = loop {
        let ev = srv.wait_event("refused");
        if ev["reason"] != "handshake" {
            break ev;
        }
    };
    assert_eq!(cut["reason"], "max-handshakes", "{cut}");
    let stored = std::fs::read_dir(dir.path().join("in")).unwrap().count();
    assert_eq!(stored, 20);
}

#[test]
fn many_maximal_offers_stay_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--keep-open", "--out", "in"]);
    let pid = srv.child.id();
    let rss_before = proc_status(pid, "VmRSS:");
    // About 1 MiB each: 45,000 entries with short names.
    let entries: Vec<(String, u64)> = (0..45_000).map(|i| (format!("d/{i:x}"), 1)).collect();
    let offer = frame(FrameType::Offer, &files_offer(&entries));
    assert!(offer.len() > 900_000 && offer.len() <= protocol::MAX_CONTROL + 5);
    let mut held = Vec::new();
    let (mut accepted, mut busy) = (0, 0);
    for _ in 0..48 {
        let mut tls = HandSender::open(&srv.addr, &srv.fingerprint, &offer);
        match tls.first_frame() {
            Some((FrameType::Accept, _)) => accepted += 1,
            Some((FrameType::Reject, p)) => {
                let (code, msg) = protocol::decode_reject(&p);
                assert_eq!(code.as_str(), "busy", "{msg}");
                busy += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
        held.push(tls);
    }
    let rss = proc_status(pid, "VmRSS:");
    eprintln!("accepted {accepted}, busy {busy}, RSS {rss_before} -> {rss} KiB");
    assert!(accepted >= 8, "too few offers accepted: {accepted}");
    assert!(busy > 0, "no offer was refused: the budget is not enforced");
    assert!(rss < 640 * 1024, "RSS {rss} KiB is over the documented cap");
    drop(held);
    // The budget is given back: a real sender gets in.
    let out = send(&srv.addr, &srv.fingerprint, &[], b"x");
    assert!(
        !text(&out.stderr).contains("memory"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn many_file_offers_held_open_do_not_hold_a_descriptor_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--keep-open", "--out", "in"]);
    let pid = srv.child.id();
    let before = fd_count(pid);
    let mut held = Vec::new();
    for c in 0..30 {
        let entries: Vec<(String, u64)> = (0..64).map(|i| (format!("c{c}/f{i}"), 10)).collect();
        let mut script = frame(FrameType::Offer, &files_offer(&entries));
        // Half the files' data, then silence.
        script.extend(frame(FrameType::Data, &[7u8; 320]));
        let mut tls = HandSender::open(&srv.addr, &srv.fingerprint, &script);
        assert_eq!(tls.first_frame().map(|f| f.0), Some(FrameType::Accept));
        held.push(tls);
    }
    thread::sleep(Duration::from_millis(300));
    let during = fd_count(pid);
    eprintln!("descriptors: {before} before, {during} with 30 stalled 64-file offers");
    // A handful per connection (socket, output, staging), never one per file.
    assert!(during < before + 30 * 8, "{during} descriptors open");
    // A real sender still gets through.
    let out = send(&srv.addr, &srv.fingerprint, &[], b"x");
    assert!(
        !text(&out.stderr).contains("accept"),
        "{}",
        text(&out.stderr)
    );
    drop(held);
    // Swept as each receiver thread notices its sender is gone, which takes
    // a while on a busy machine.
    assert!(
        wait_until(WAIT, || !dir.path().join("in/.pincat-state").exists()),
        "staging left behind after the senders went away: {:?}",
        crate::util::fs::tree(&dir.path().join("in"))
    );
}

#[test]
fn a_deep_path_offer_costs_linear_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--keep-open", "--out", "in"]);
    let pid = srv.child.id();
    let cpu0 = cpu_seconds(pid);
    // 250 files at the bottom of one 2,000-level path: about 1 MiB of
    // names. Checking every prefix of every name by full path made this
    // quadratic; walking by directory handles keeps it linear.
    let deep = vec!["d"; 2000].join("/");
    let entries: Vec<(String, u64)> = (0..250).map(|i| (format!("{deep}/f{i}"), 1)).collect();
    let script = offer_data_end(&files_offer(&entries), &[9u8; 250], 250, 250);
    let started = Instant::now();
    let mut tls = HandSender::open(&srv.addr, &srv.fingerprint, &script);
    assert_eq!(tls.first_frame().map(|f| f.0), Some(FrameType::Accept));
    srv.wait_event("transfer-done");
    let cpu = cpu_seconds(pid) - cpu0;
    eprintln!(
        "deep offer stored in {:?}, server CPU {cpu:.2} s",
        started.elapsed()
    );
    let bottom = dir.path().join("in").join(&deep);
    assert_eq!(std::fs::read_dir(&bottom).unwrap().count(), 250);
    assert_eq!(std::fs::read(bottom.join("f7")).unwrap(), [9u8]);
    assert!(cpu < 10.0, "deep offer took {cpu} CPU seconds");
}

#[test]
fn a_trickling_sender_cannot_hold_the_one_shot_slot() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--out", "in", "--idle-timeout", "1s", "--no-resume"];
    let mut srv = Server::start(dir.path(), &args);
    let entries = vec![("f".to_string(), 1 << 20)];
    let mut script = frame(FrameType::Offer, &files_offer(&entries));
    script.extend(protocol::encode_header(FrameType::Data, 1 << 20));
    let mut tls = HandSender::open(&srv.addr, &srv.fingerprint, &script);
    assert_eq!(tls.first_frame().map(|f| f.0), Some(FrameType::Accept));
    let started = Instant::now();
    // One byte every 200 ms: every single read is well inside the timeout.
    let trickle = thread::spawn(move || {
        for _ in 0..100 {
            if tls.write(&[1]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let (code, _) = srv.wait_exit();
    let took = started.elapsed();
    assert_ne!(code, Some(0));
    assert!(
        took < Duration::from_secs(8),
        "trickler held the slot {took:?}"
    );
    let err = srv.seen_named("error");
    assert!(
        err.iter()
            .any(|e| e["message"].as_str().unwrap().contains("progress")),
        "{err:?}"
    );
    assert!(!dir.path().join("in/f").exists());
    let _ = trickle.join();
}

#[test]
fn a_one_shot_receiver_exits_promptly_after_its_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "got.bin"]);
    let script = offer_data_end(&stream().encode(), b"hello", 0, 5);
    let mut tls = HandSender::open(&srv.addr, &srv.fingerprint, &script);
    let started = Instant::now();
    assert_eq!(tls.first_frame().map(|f| f.0), Some(FrameType::Accept));
    // The sender reads the receipt but never closes.
    let (code, _) = srv.wait_exit();
    let took = started.elapsed();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "serve lingered {took:?}");
    assert_eq!(std::fs::read(dir.path().join("got.bin")).unwrap(), b"hello");
    drop(tls);
}
