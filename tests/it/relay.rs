//! Through a relay on loopback: `pincat relay` and the PyPI transit relay
//! carry push, pull, pipe and forward as the listener's line prints them;
//! a relay that terminates TLS or pairs the wrong peers gets nothing; what
//! a relay sees holds no plaintext; the relay's own bounds. (The same
//! through a real NAT: `nat.rs`.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::util::fs::tree;
use crate::util::peers::echo_service;
use crate::util::process::KillOnDrop;
use crate::util::proxy::Proxy;
use crate::util::relay::{FakeRelay, RelayProc, TransitRelay};
use crate::util::{Server, WAIT, pincat, random_bytes, text, wait_output, wait_until};

/// `pincat VERB --json --via RELAY ARGS` as a listener (no port of its own).
pub(crate) fn listener(verb: &str, relay: &str, dir: &Path, args: &[&str], stdin: Stdio) -> Server {
    let mut cmd = pincat();
    cmd.args([verb, "--json", "--via", relay]).args(args);
    Server::launch(cmd, dir, stdin)
}

/// The listener's printed line as arguments, `pincat` dropped.
pub(crate) fn line(srv: &Server, key: &str) -> Vec<String> {
    let l = srv.seen[0][key].as_str().unwrap().to_string();
    let mut words: Vec<String> = l.split_whitespace().map(str::to_string).collect();
    assert_eq!(words.remove(0), "pincat", "{l}");
    words
}

/// Runs the printed line with `extra` arguments after it, in `dir`.
pub(crate) fn run_line(words: &[String], extra: &[&str], dir: &Path) -> Output {
    let args: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    crate::util::run(&args, |c| {
        c.current_dir(dir);
    })
}

/// A small tree with a marker that must never show in clear on the path.
fn sample(dir: &Path) -> Vec<u8> {
    let marker = b"PLAINTEXT-MARKER-that-a-relay-must-never-see-0123456789".repeat(4000);
    std::fs::create_dir_all(dir.join("t/sub")).unwrap();
    std::fs::write(dir.join("t/marker.txt"), &marker).unwrap();
    std::fs::write(dir.join("t/sub/r.bin"), random_bytes(700_000, 7)).unwrap();
    marker
}

/// A fixed code no other test (or earlier run) used: failed attempts of a
/// fixed code are counted across runs in the state directory.
fn fresh_code() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("relaytest{:x}{t:x}", std::process::id())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_listener_behind_pincat_relay_is_reached_by_its_line_verbatim() {
    let base = tempfile::tempdir().unwrap();
    let (out, src) = (base.path().join("out"), base.path().join("src"));
    std::fs::create_dir_all(&out).unwrap();
    let marker = sample(&src);
    let relay = RelayProc::start(&[]);
    let mut srv = listener("serve", &relay.addr, &out, &[], Stdio::null());
    let first = &srv.seen[0];
    assert_eq!(first["dial_addrs"].as_array().unwrap().len(), 0, "{first}");
    assert!(
        first["via"].as_str().unwrap().starts_with(&relay.addr),
        "{first}"
    );
    // The path a dialer's bytes take, captured on the way to the relay.
    let proxy = Proxy::start(&relay.addr);
    let mut words = line(&srv, "command");
    let via = words.iter().position(|w| w == "--via").unwrap() + 1;
    words[via] = words[via].replacen(&relay.addr, &proxy.addr, 1);
    let sent = run_line(&words, &["t"], &src);
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(tree(&out.join("t")), tree(&src.join("t")));
    let paired = relay.wait_event("paired");
    let closed = relay.wait_event("closed");
    assert_eq!(closed["outcome"], "ok", "{closed}");
    let carried = closed["from_peer"].as_u64().unwrap() + closed["from_partner"].as_u64().unwrap();
    assert!(carried > marker.len() as u64, "{paired} {closed}");
    // Neither the wire through the relay nor its log holds the marker.
    let seen = proxy.capture.lock().unwrap().clone();
    assert!(
        seen.len() as u64 > marker.len() as u64,
        "the capture saw the transfer"
    );
    assert!(
        !contains(&seen, &marker[..64]),
        "plaintext on the relay's path"
    );
    let log: Vec<String> = relay.lines.try_iter().collect();
    assert!(!log.join("\n").contains("PLAINTEXT-MARKER"), "{log:?}");
}

#[test]
fn the_pypi_transit_relay_carries_push_and_pull() {
    let Some(relay) = TransitRelay::start() else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    let (out, src) = (base.path().join("out"), base.path().join("src"));
    std::fs::create_dir_all(&out).unwrap();
    sample(&src);
    // Push: serve behind the relay, send as printed (the short line too).
    let mut srv = listener("serve", &relay.addr, &out, &["--keep-open"], Stdio::null());
    let sent = run_line(&line(&srv, "command"), &["t"], &src);
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert_eq!(tree(&out.join("t")), tree(&src.join("t")));
    std::fs::create_dir_all(src.join("u")).unwrap();
    std::fs::write(src.join("u/short.txt"), b"read aloud").unwrap();
    let sent = run_line(&line(&srv, "short_command"), &["u"], &src);
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert_eq!(
        std::fs::read(out.join("u/short.txt")).unwrap(),
        b"read aloud"
    );
    srv.kill();
    // Pull: offer behind the relay, get as printed.
    let got = base.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    let mut off = listener("offer", &relay.addr, &src, &["t"], Stdio::null());
    let g = run_line(&line(&off, "command"), &[], &got);
    assert_eq!(g.status.code(), Some(0), "{}", text(&g.stderr));
    assert_eq!(off.wait_exit().0, Some(0));
    assert_eq!(tree(&got.join("t")), tree(&src.join("t")));
}

#[test]
fn pipe_and_forward_go_through_the_relay() {
    let base = tempfile::tempdir().unwrap();
    let relay = RelayProc::start(&[]);
    // pipe: both directions at once through the relay.
    let mut cmd = pincat();
    cmd.args(["pipe", "--listen", "--json", "--via", &relay.addr]);
    let up = random_bytes(300_000, 11);
    let mut lst = Server::launch(cmd, base.path(), Stdio::piped());
    let mut lin = lst.child.stdin.take().unwrap();
    let feed = std::thread::spawn(move || {
        let _ = lin.write_all(&random_bytes(200_000, 12));
    });
    let mut dial = pincat()
        .args(line(&lst, "command"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut din = dial.stdin.take().unwrap();
    let up2 = up.clone();
    let w = std::thread::spawn(move || {
        let _ = din.write_all(&up2);
    });
    let got = wait_output(dial, WAIT);
    let _ = (w.join(), feed.join());
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    assert_eq!(got.stdout, random_bytes(200_000, 12));
    let (code, out) = lst.wait_exit();
    assert_eq!((code, out == up), (Some(0), true));

    // forward: the exposing end behind the relay, the using end through it.
    let (echo, _n) = echo_service(10);
    let expose = listener(
        "forward",
        &relay.addr,
        base.path(),
        &["--listen", "--to", &echo],
        Stdio::null(),
    );
    let words = line(&expose, "command");
    let local = format!("127.0.0.1:{}", crate::util::free_port());
    let words: Vec<String> = words
        .iter()
        .map(|w| w.replace("127.0.0.1:LOCAL_PORT", &local))
        .collect();
    let _using = KillOnDrop(
        pincat()
            .args(&words)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(WAIT, || TcpStream::connect(&local).is_ok()));
    let mut s = TcpStream::connect(&local).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let data = random_bytes(100_000, 13);
    s.write_all(&data).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, data, "echoed through forward and the relay");
}

#[test]
fn a_dialer_with_an_address_and_a_relay_falls_back_to_the_relay() {
    let base = tempfile::tempdir().unwrap();
    let relay = RelayProc::start(&[]);
    let args = ["--listen", "127.0.0.1:0", "--keep-open", "--out", "got"];
    let mut srv = listener("serve", &relay.addr, base.path(), &args, Stdio::null());
    let words = line(&srv, "command");
    // The line names the direct address first, then the relay.
    assert_eq!(words[1], srv.addr, "{words:?}");
    assert_eq!(words[2], "--via");
    let dead = format!("127.0.0.1:{}", crate::util::free_port());
    std::fs::write(base.path().join("a.txt"), b"direct").unwrap();
    std::fs::write(base.path().join("b.txt"), b"relayed").unwrap();
    // Direct: the relay pairs nothing.
    let o = run_line(&words, &["a.txt"], base.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    srv.wait_event("transfer-done");
    assert!(
        relay
            .drain(Duration::from_millis(300))
            .iter()
            .all(|e| e["event"] != "paired")
    );
    // A dead direct address: through the relay.
    let mut fallback = words.clone();
    fallback[1] = dead;
    let sub = base.path().join("s");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(base.path().join("b.txt"), sub.join("b.txt")).unwrap();
    let o = run_line(&fallback, &["b.txt"], &sub);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    relay.wait_event("paired");
    srv.wait_event("transfer-done");
    // Something else (not TLS) at the direct address: the relay next.
    let (echo, _n) = echo_service(4);
    let mut wrong = words.clone();
    wrong[1] = echo;
    let sub = base.path().join("w");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("c.txt"), b"past a stranger").unwrap();
    let o = run_line(&wrong, &["c.txt"], &sub);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("trying the relay"),
        "{}",
        text(&o.stderr)
    );
    relay.wait_event("paired");
    srv.wait_event("transfer-done");
    assert_eq!(
        std::fs::read(base.path().join("got/c.txt")).unwrap(),
        b"past a stranger"
    );
    // Another key at the direct address stays a pin mismatch: no fallback.
    let other = Server::start(base.path(), &["--allow-any"]);
    wrong[1] = other.addr.clone();
    let o = run_line(&wrong, &["c.txt"], &sub);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
}

/// A relay that terminates TLS itself (its own pincat behind it) and one
/// that pairs the dialer with another listener: the pin, or the code
/// alone, fails; neither listener stores a byte.
#[test]
fn a_relay_in_the_middle_or_pairing_the_wrong_peers_gets_nothing() {
    let base = tempfile::tempdir().unwrap();
    let (real_out, evil_out, src) = (
        base.path().join("real"),
        base.path().join("evil"),
        base.path().join("src"),
    );
    for d in [&real_out, &evil_out] {
        std::fs::create_dir_all(d).unwrap();
    }
    sample(&src);
    let relay = RelayProc::start(&[]);
    let mut real = listener("serve", &relay.addr, &real_out, &[], Stdio::null());
    // The relay operator's own receiver, which the MITM relay splices to.
    let evil = Server::start(&evil_out, &["--allow-any", "--keep-open", "--out", "."]);
    let mitm = FakeRelay::mitm(evil.addr.clone());
    for (key, want) in [("command", 3), ("short_command", 9)] {
        let mut words = line(&real, key);
        let via = words.iter().position(|w| w == "--via").unwrap() + 1;
        words[via] = words[via].replacen(&relay.addr, &mitm.addr, 1);
        let o = run_line(&words, &["t"], &src);
        assert_eq!(o.status.code(), Some(want), "{key}: {}", text(&o.stderr));
    }
    // The wrong pairing: two listeners wait at a relay that pairs the
    // dialer of the first with the second.
    let wrong = FakeRelay::misdirect(2);
    let first = listener("serve", &wrong.addr, &real_out, &[], Stdio::null());
    std::thread::sleep(Duration::from_millis(300));
    let second = listener(
        "serve",
        &wrong.addr,
        &evil_out,
        &["--code", &fresh_code()],
        Stdio::null(),
    );
    std::thread::sleep(Duration::from_millis(300));
    for key in ["command", "short_command"] {
        let o = run_line(&line(&first, key), &["t"], &src);
        let code = o.status.code();
        assert!(
            matches!(code, Some(3 | 9)),
            "{key}: {code:?} {}",
            text(&o.stderr)
        );
    }
    drop((first, second));
    real.kill();
    for dir in [&real_out, &evil_out] {
        let stored = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".pincat"))
            .count();
        assert_eq!(stored, 0, "nothing stored in {}", dir.display());
    }
}

#[test]
fn relay_mistakes_are_usage_errors_and_an_empty_rendezvous_is_exit_8() {
    let relay = RelayProc::start(&[]);
    let o = crate::util::run(&["serve", "--via", &relay.addr, "--allow-any"], |_| {});
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let o = crate::util::run(&["send", "--via", &relay.addr, "--code", "a-b-c"], |_| {});
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("rendezvous"),
        "{}",
        text(&o.stderr)
    );
    // Nobody at the rendezvous, and no relay at all.
    let nobody = format!("{}/{}", relay.addr, "00".repeat(12));
    let dead = format!("127.0.0.1:{}/{}", crate::util::free_port(), "00".repeat(12));
    for via in [&nobody, &dead] {
        let args = [
            "send",
            "--via",
            via,
            "--code",
            "a-b-c",
            "--connect-timeout",
            "1s",
        ];
        let o = crate::util::run(&args, |_| {});
        assert_eq!(o.status.code(), Some(8), "{via}: {}", text(&o.stderr));
    }
}

#[test]
fn two_dialers_paired_with_each_other_try_again_until_the_listener_comes() {
    let base = tempfile::tempdir().unwrap();
    let relay = RelayProc::start(&[]);
    let via = format!("{}/{}", relay.addr, "5a".repeat(12));
    let code = &fresh_code();
    let dialers: Vec<_> = (0..2)
        .map(|i| {
            let name = format!("d{i}.txt");
            std::fs::write(base.path().join(&name), format!("dialer {i}")).unwrap();
            pincat()
                .args([
                    "send",
                    "--via",
                    &via,
                    "--code",
                    code,
                    "--retry-for",
                    "40s",
                    &name,
                ])
                .current_dir(base.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // The relay pairs the two dialers with each other first.
    relay.wait_event("paired");
    let args = ["--keep-open", "--code", code, "--out", "got"];
    let _srv = listener("serve", &via, base.path(), &args, Stdio::null());
    for d in dialers {
        let o = wait_output(d, WAIT);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("paired this dialer with another dialer"),
            "{}",
            text(&o.stderr)
        );
    }
    for i in 0..2 {
        let got = std::fs::read(base.path().join(format!("got/d{i}.txt"))).unwrap();
        assert_eq!(got, format!("dialer {i}").into_bytes());
    }
}

#[test]
fn a_known_peer_records_its_relay_and_is_dialed_by_name() {
    let base = tempfile::tempdir().unwrap();
    let relay = RelayProc::start(&[]);
    let via = format!("{}/{}", relay.addr, "c3".repeat(12));
    let code = &fresh_code();
    let args = ["--code", code, "--out", "got"];
    let mut srv = listener("serve", &via, base.path(), &args, Stdio::null());
    assert_eq!(srv.seen[0]["via"], via.as_str());
    let peers = base.path().join("peers");
    let env = |c: &mut std::process::Command| {
        c.env("PINCAT_PEERS", &peers);
    };
    let o = crate::util::run(
        &[
            "peers",
            "add",
            "far",
            "--via",
            &via,
            "--pin",
            &srv.fingerprint,
        ],
        env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = crate::util::run(&["peers", "list", "--json"], env);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["peers"][0]["via"], via.as_str(), "{list}");
    std::fs::write(base.path().join("n.txt"), b"by name").unwrap();
    let o = crate::util::run(&["send", "far", "--code", code, "n.txt"], |c| {
        c.env("PINCAT_PEERS", &peers).current_dir(base.path());
    });
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(
        std::fs::read(base.path().join("got/n.txt")).unwrap(),
        b"by name"
    );
}

#[test]
fn trust_on_first_use_through_a_relay_needs_the_code() {
    let base = tempfile::tempdir().unwrap();
    let relay = RelayProc::start(&[]);
    let code = fresh_code();
    let args = ["--keep-open", "--code", &code, "--out", "got"];
    let mut srv = listener("serve", &relay.addr, base.path(), &args, Stdio::null());
    let via = srv.seen[0]["via"].as_str().unwrap().to_string();
    let peers = base.path().join("peers");
    let with = |args: &[&str]| {
        crate::util::run(args, |c| {
            c.env("PINCAT_PEERS", &peers).current_dir(base.path());
        })
    };
    let o = with(&["peers", "add", "far", "--via", &via]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::fs::write(base.path().join("t.txt"), b"first use").unwrap();
    // --tofu alone: whoever answers through the relay could be the relay.
    let o = with(&["send", "far", "--tofu", "t.txt"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("through a relay is refused"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        !std::fs::read_to_string(&peers).unwrap().contains("sha256"),
        "no key recorded"
    );
    // With the code, the key is confirmed, then recorded.
    let o = with(&["send", "far", "--tofu", "--code", &code, "t.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    srv.wait_event("transfer-done");
    let recorded = std::fs::read_to_string(&peers).unwrap();
    assert!(recorded.contains("sha256//"), "{recorded}");
}

#[test]
fn a_listener_registers_again_when_its_relay_restarts() {
    let base = tempfile::tempdir().unwrap();
    let port = crate::util::free_port();
    let addr = format!("127.0.0.1:{port}");
    let start = || RelayProc::start_on(&addr);
    let relay = start();
    let args = ["--keep-open", "--out", "got"];
    let mut srv = listener("serve", &addr, base.path(), &args, Stdio::null());
    drop(relay);
    std::thread::sleep(Duration::from_millis(500));
    let _relay = start();
    std::fs::write(base.path().join("r.txt"), b"after a restart").unwrap();
    let o = run_line(
        &line(&srv, "command"),
        &["r.txt", "--retry-for", "30s"],
        base.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    srv.wait_event("transfer-done");
    assert_eq!(
        std::fs::read(base.path().join("got/r.txt")).unwrap(),
        b"after a restart"
    );
}
