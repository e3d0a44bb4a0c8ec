//! The relay's own bounds: a flood of unpaired registrations from one
//! address, expiry, pairs registering in one round, bounded memory, pairs
//! that go idle, too many pairs from one source, the byte cap.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::relay::{line, listener, run_line};
use crate::util::process::proc_status;
use crate::util::relay::RelayProc;
use crate::util::{WAIT, text};

/// Opens a connection from `source` (a loopback address) to `to`.
fn connect_from(source: &str, to: &str) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    bind(&fd, &from).unwrap();
    let to: SocketAddr = to.parse().unwrap();
    connect(&fd, &to).unwrap();
    TcpStream::from(fd)
}

fn request(s: &mut TcpStream, i: usize) {
    let line = format!("please relay {:064x} for side {:016x}\n", i, i);
    s.write_all(line.as_bytes()).unwrap();
}

#[test]
fn a_flood_from_one_address_does_not_stop_another_pairing_and_unpaired_ones_expire() {
    let base = tempfile::tempdir().unwrap();
    let relay = RelayProc::start(&["--max-per-source", "8", "--pending-timeout", "3s"]);
    // 40 unpaired registrations from 127.0.0.2: 8 wait, the rest are refused.
    let mut flood: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut s = connect_from("127.0.0.2", &relay.addr);
            request(&mut s, i);
            s
        })
        .collect();
    flood[39].set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    let _ = flood[39].read_to_end(&mut answer);
    assert_eq!(answer, b"busy\n");
    // A listener and a dialer from 127.0.0.1 pair at once.
    std::fs::write(base.path().join("m.txt"), b"through the flood").unwrap();
    let mut srv = listener(
        "serve",
        &relay.addr,
        base.path(),
        &["--out", "got"],
        Stdio::null(),
    );
    let o = run_line(&line(&srv, "command"), &["m.txt"], base.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(
        std::fs::read(base.path().join("got/m.txt")).unwrap(),
        b"through the flood"
    );
    // The 8 that waited expire: the relay closes them.
    flood[0].set_read_timeout(Some(WAIT)).unwrap();
    let t = std::time::Instant::now();
    let n = flood[0].read(&mut [0u8; 8]).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() < Duration::from_secs(30));
    let events = relay.drain(Duration::from_millis(300));
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "refused")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"max-conns") && reasons.contains(&"unpaired"),
        "{reasons:?}"
    );
}

#[test]
fn the_relay_stays_small_with_a_thousand_waiting_and_pairs_moving_data() {
    let relay = RelayProc::start(&["--max-per-source", "1000", "--max-pending", "2000"]);
    let waiting: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut s = connect_from("127.0.0.3", &relay.addr);
            request(&mut s, 10_000 + i);
            s
        })
        .collect();
    // Eight pairs moving 32 MiB each way at once.
    let movers: Vec<_> = (0..8usize)
        .map(|i| {
            let addr = relay.addr.clone();
            std::thread::spawn(move || {
                let mut a = TcpStream::connect(&addr).unwrap();
                let mut b = TcpStream::connect(&addr).unwrap();
                a.write_all(
                    format!("please relay {:064x} for side {:016x}\n", 90_000 + i, 1).as_bytes(),
                )
                .unwrap();
                b.write_all(
                    format!("please relay {:064x} for side {:016x}\n", 90_000 + i, 2).as_bytes(),
                )
                .unwrap();
                let mut ok = [0u8; 3];
                a.read_exact(&mut ok).unwrap();
                b.read_exact(&mut ok).unwrap();
                let mut b2 = b.try_clone().unwrap();
                let sink = std::thread::spawn(move || {
                    std::io::copy(&mut b2, &mut std::io::sink()).unwrap()
                });
                let chunk = vec![7u8; 1 << 20];
                for _ in 0..32 {
                    a.write_all(&chunk).unwrap();
                }
                a.shutdown(std::net::Shutdown::Write).unwrap();
                assert_eq!(sink.join().unwrap(), 32 << 20);
            })
        })
        .collect();
    for m in movers {
        m.join().unwrap();
    }
    let hwm = proc_status(relay.child.id(), "VmHWM:");
    eprintln!("relay peak RSS with 1000 waiting and 8 pairs: {} KiB", hwm);
    assert!(hwm < 48 * 1024, "peak RSS {hwm} KiB");
    drop(waiting);
}

#[test]
fn many_pairs_registering_at_once_are_each_paired_with_their_own() {
    let mut relay = RelayProc::start(&["--max-per-source", "200", "--max-pairs-per-source", "200"]);
    // One half of each of 60 pairs registers and waits; then the other
    // halves all at once, so that one round of the relay pairs many.
    let socks: Vec<(usize, TcpStream)> = (0..120)
        .map(|k| (k % 60, TcpStream::connect(&relay.addr).unwrap()))
        .collect();
    let request = |k: usize| {
        format!(
            "please relay {:064x} for side {:016x}\n",
            7_000 + k % 60,
            k / 60
        )
    };
    for (k, (_, s)) in socks.iter().enumerate().take(60) {
        (&*s).write_all(request(k).as_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    for (k, (_, s)) in socks.iter().enumerate().skip(60) {
        (&*s).write_all(request(k).as_bytes()).unwrap();
    }
    for (pair, s) in &socks {
        let mut s = s;
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut ok = [0u8; 3];
        s.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"ok\n");
        s.write_all(&(*pair as u64).to_be_bytes()).unwrap();
    }
    for (pair, mut s) in socks {
        let mut back = [0u8; 8];
        s.read_exact(&mut back).unwrap();
        assert_eq!(u64::from_be_bytes(back), pair as u64, "paired with its own");
    }
    assert!(
        relay.child.try_wait().is_ok_and(|s| s.is_none()),
        "the relay still runs"
    );
}

/// A pair `k` at the relay, its ends from `sources`: both told `ok`.
fn pair(relay: &str, sources: [&str; 2], k: usize) -> (TcpStream, TcpStream) {
    let mut a = connect_from(sources[0], relay);
    let mut b = connect_from(sources[1], relay);
    a.write_all(format!("please relay {:064x} for side {:016x}\n", 50_000 + k, 1).as_bytes())
        .unwrap();
    b.write_all(format!("please relay {:064x} for side {:016x}\n", 50_000 + k, 2).as_bytes())
        .unwrap();
    for s in [&mut a, &mut b] {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut ok = [0u8; 3];
        s.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"ok\n");
    }
    (a, b)
}

#[test]
fn idle_pairs_are_cut_and_one_source_cannot_hold_every_pair() {
    let args = ["--max-pairs-per-source", "2", "--idle-timeout", "1s"];
    let relay = RelayProc::start(&args);
    // One source holds its two pairs; a third from it is refused, and the
    // end that waited for it stays and pairs with a fresh partner.
    let held = [
        pair(&relay.addr, ["127.0.0.6", "127.0.1.1"], 0),
        pair(&relay.addr, ["127.0.0.6", "127.0.1.2"], 1),
    ];
    let mut waiting = connect_from("127.0.0.7", &relay.addr);
    waiting
        .write_all(format!("please relay {:064x} for side {:016x}\n", 60_000, 1).as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = connect_from("127.0.0.6", &relay.addr);
    third
        .write_all(format!("please relay {:064x} for side {:016x}\n", 60_000, 2).as_bytes())
        .unwrap();
    third.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    let _ = third.read_to_end(&mut answer);
    assert_eq!(answer, b"busy\n");
    let mut fresh = connect_from("127.0.0.8", &relay.addr);
    fresh
        .write_all(format!("please relay {:064x} for side {:016x}\n", 60_000, 3).as_bytes())
        .unwrap();
    for s in [&mut waiting, &mut fresh] {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut ok = [0u8; 3];
        s.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"ok\n");
    }
    // The held pairs move nothing: each is cut after the idle time.
    let t = Instant::now();
    for (mut a, _b) in held {
        a.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(a.read(&mut [0u8; 8]).unwrap_or(0), 0);
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // A pair that keeps moving is not idle, however long it lasts.
    let (mut a, mut b) = pair(&relay.addr, ["127.0.0.9", "127.0.1.9"], 2);
    for _ in 0..6 {
        a.write_all(b"tick").unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    let closed: Vec<_> = relay
        .drain(Duration::from_millis(300))
        .into_iter()
        .filter(|e| e["event"] == "closed" && e["outcome"] == "cut")
        .collect();
    assert!(closed.len() >= 2, "{closed:?}");
}

#[test]
fn the_byte_cap_cuts_a_pair_at_the_cap() {
    let relay = RelayProc::start(&["--max-bytes", "100000"]);
    let (mut a, mut b) = pair(&relay.addr, ["127.0.0.10", "127.0.1.10"], 3);
    let w = std::thread::spawn(move || {
        let chunk = vec![5u8; 64 << 10];
        for _ in 0..64 {
            if a.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let _ = b.read_to_end(&mut got);
    let _ = w.join();
    assert_eq!(got.len(), 100_000, "exactly the cap arrives");
}

#[test]
fn a_slow_request_line_and_a_source_not_allowed_are_turned_away() {
    let relay = RelayProc::start(&["--line-timeout", "1s", "--allow-from", "127.0.0.0/30"]);
    // Half a request line, then nothing: closed after the line timeout.
    let mut slow = connect_from("127.0.0.2", &relay.addr);
    slow.write_all(b"please relay ").unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let t = Instant::now();
    assert_eq!(slow.read(&mut [0u8; 8]).unwrap_or(0), 0);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // A source outside 127.0.0.0/30 is closed at once, unanswered.
    let mut outside = connect_from("127.0.0.9", &relay.addr);
    outside.set_read_timeout(Some(WAIT)).unwrap();
    let _ = outside.write_all(format!("please relay {:064x} for side {:016x}\n", 1, 1).as_bytes());
    let mut got = Vec::new();
    let _ = outside.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    let reasons: Vec<String> = relay
        .drain(Duration::from_millis(300))
        .iter()
        .filter(|e| e["event"] == "refused")
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(reasons.contains(&"timeout".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"not-allowed".to_string()), "{reasons:?}");
}

#[test]
fn a_stalled_half_closed_pair_is_cut_and_a_slow_live_one_is_not() {
    let relay = RelayProc::start(&["--idle-timeout", "2s", "--max-bytes", "1000000"]);
    // B half-closes and never reads; A writes until it blocks, then stops.
    let (a, b) = pair(&relay.addr, ["127.0.0.11", "127.0.0.12"], 4);
    b.shutdown(std::net::Shutdown::Write).unwrap();
    let mut a2 = a.try_clone().unwrap();
    // Bounded: a relay that never cut would end this after WAIT, and the
    // time check below fails.
    a2.set_write_timeout(Some(WAIT)).unwrap();
    let t = Instant::now();
    let stuck = std::thread::spawn(move || {
        let chunk = vec![1u8; 64 << 10];
        while a2.write_all(&chunk).is_ok() {}
    });
    // A slow reader keeps its pair alive: 600 KB read at about 300 KB/s,
    // longer than the idle time, arrive whole (and within the byte cap).
    let (mut c, mut d) = pair(&relay.addr, ["127.0.0.13", "127.0.0.14"], 5);
    let writer = std::thread::spawn(move || {
        let _ = c.write_all(&vec![2u8; 600_000]);
        c
    });
    let mut got = 0;
    let mut buf = [0u8; 32 << 10];
    while got < 600_000 {
        match d.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, 600_000, "a slow but live pair is not cut");
    drop(writer.join());
    stuck.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    drop((a, b));
}

#[test]
fn the_byte_cap_holds_with_both_directions_at_once() {
    let relay = RelayProc::start(&["--max-bytes", "1000000"]);
    let (a, b) = pair(&relay.addr, ["127.0.0.15", "127.0.0.16"], 6);
    let ends: Vec<_> = [a, b]
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let reader = std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let _ = r.read_to_end(&mut got);
                    got.len()
                });
                let _ = s.write_all(&vec![3u8; 1 << 20]);
                let _ = s.shutdown(std::net::Shutdown::Write);
                reader.join().unwrap()
            })
        })
        .collect();
    let total: usize = ends.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total <= 1_000_000, "{total} bytes passed a 1,000,000 cap");
    assert!(total > 0);
}
