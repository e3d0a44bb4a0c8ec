//! Through a real NAT (network namespaces, nftables masquerade; see
//! `util::netns`): host A and host B, each behind its own router, cannot
//! dial each other; `pincat relay` and the PyPI transit relay in the
//! "internet" carry push, pull, pipe and forward between them, each run
//! as the listener's line prints it. Needs root: skipped (said) without,
//! a failure under CI=true.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::cli::feed;
use crate::util::fs::tree;
use crate::util::netns::{A_IP, Host, Nat, RELAY_IP};
use crate::util::process::KillOnDrop;
use crate::util::relay::{RelayProc, twist};
use crate::util::{Server, WAIT, random_bytes, text, wait_output, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_pincat");

/// Plaintext the relay must never show.
const MARKER: &[u8] = b"NAT-MARKER-the-relay-must-not-see;";

/// `pincat VERB --json ARGS` listening in host `h`.
fn listener(nat: &Nat, h: Host, verb: &str, args: &[&str], dir: &Path, stdin: Stdio) -> Server {
    let mut cmd = nat.cmd(h, BIN);
    cmd.args([verb, "--json"]).args(args);
    Server::launch(cmd, dir, stdin)
}

/// The listener's printed line, `pincat` dropped, as arguments.
fn line(srv: &Server) -> Vec<String> {
    line_of(srv, "command")
}

/// The listener's printed `key` line (`command`, `short_command`).
fn line_of(srv: &Server, key: &str) -> Vec<String> {
    let l = srv.seen[0][key].as_str().unwrap().to_string();
    let mut words: Vec<String> = l.split_whitespace().map(str::to_string).collect();
    assert_eq!(words.remove(0), "pincat", "{l}");
    words
}

/// Runs `pincat WORDS EXTRA` in host `h`, in `dir`, with `input` on stdin.
fn run_in(
    nat: &Nat,
    h: Host,
    words: &[String],
    extra: &[&str],
    dir: &Path,
    input: &[u8],
) -> Output {
    let mut c = nat.cmd(h, BIN);
    c.args(words)
        .args(extra)
        .current_dir(dir)
        .stderr(Stdio::piped());
    pipe_through(c, input, WAIT)
}

fn sample(dir: &Path) {
    std::fs::create_dir_all(dir.join("t/sub")).unwrap();
    std::fs::write(dir.join("t/a.txt"), MARKER.repeat(1000)).unwrap();
    std::fs::write(dir.join("t/sub/r.bin"), random_bytes(1_500_000, 24)).unwrap();
}

/// Push, pull, pipe and forward between A and B through the relay at
/// `relay` (in the internet namespace).
fn every_verb(nat: &Nat, relay: &str, base: &Path) {
    let (src, a_out, b_out) = (base.join("src"), base.join("a"), base.join("b"));
    for d in [&a_out, &b_out] {
        std::fs::create_dir_all(d).unwrap();
    }
    sample(&src);
    push(nat, relay, &src, &a_out);
    pull(nat, relay, &src, &a_out);
    pipe_both_ways(nat, relay, &a_out, &b_out);
    forward(nat, relay, &a_out);
}

fn push(nat: &Nat, relay: &str, src: &Path, a_out: &Path) {
    // Push: serve in A on a port and at the relay; a direct dial from B
    // fails (the NAT is real); the printed line (direct first, then the
    // relay) succeeds.
    let args = ["--listen", "0.0.0.0:7878", "--via", relay, "--out", "."];
    let mut srv = listener(nat, Host::A, "serve", &args, a_out, Stdio::null());
    let words = line(&srv);
    assert_eq!(words[1], format!("{A_IP}:7878"), "{words:?}");
    let pin = srv.fingerprint.clone();
    let code = srv.code.clone().unwrap();
    let direct: Vec<String> = [
        "send",
        &words[1],
        "--pin",
        &pin,
        "--code",
        &code,
        "--connect-timeout",
        "3s",
    ]
    .map(str::to_string)
    .to_vec();
    let o = run_in(nat, Host::B, &direct, &["t"], src, b"");
    assert!(
        matches!(o.status.code(), Some(6 | 8)),
        "a direct dial across the NATs: {:?} {}",
        o.status,
        text(&o.stderr)
    );
    let o = run_in(nat, Host::B, &words, &["t"], src, b"");
    assert_eq!(o.status.code(), Some(0), "push: {}", text(&o.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(tree(&a_out.join("t")), tree(&src.join("t")));
}

fn pull(nat: &Nat, relay: &str, src: &Path, a_out: &Path) {
    // Pull: offer in B through the relay only, get in A.
    let mut off = listener(
        nat,
        Host::B,
        "offer",
        &["--via", relay, "t"],
        src,
        Stdio::null(),
    );
    assert_eq!(off.seen[0]["dial_addrs"].as_array().unwrap().len(), 0);
    let o = run_in(nat, Host::A, &line(&off), &["--out", "pulled"], a_out, b"");
    assert_eq!(o.status.code(), Some(0), "pull: {}", text(&o.stderr));
    assert_eq!(off.wait_exit().0, Some(0));
    assert_eq!(tree(&a_out.join("pulled/t")), tree(&src.join("t")));
}

fn pipe_both_ways(nat: &Nat, relay: &str, a_out: &Path, b_out: &Path) {
    // Pipe: both directions at once.
    let (to_b, to_a) = (random_bytes(400_000, 25), random_bytes(300_000, 26));
    let mut p = listener(
        nat,
        Host::A,
        "pipe",
        &["--listen", "--via", relay],
        a_out,
        Stdio::piped(),
    );
    let mut pin_a = p.child.stdin.take().unwrap();
    let feed = std::thread::spawn({
        let to_b = to_b.clone();
        move || {
            let _ = pin_a.write_all(&to_b);
        }
    });
    let o = run_in(nat, Host::B, &line(&p), &[], b_out, &to_a);
    let _ = feed.join();
    assert_eq!(o.status.code(), Some(0), "pipe: {}", text(&o.stderr));
    assert!(o.stdout == to_b, "pipe A to B: {} bytes", o.stdout.len());
    let (c, got) = p.wait_exit();
    assert_eq!(
        (c, got == to_a),
        (Some(0), true),
        "pipe B to A: {} of {} bytes",
        got.len(),
        to_a.len()
    );
}

fn forward(nat: &Nat, relay: &str, a_out: &Path) {
    // Forward: an echo service in A exposed through the relay, used in B.
    let _echo = KillOnDrop(
        nat.cmd(Host::A, "socat")
            .args(["TCP-LISTEN:9000,bind=127.0.0.1,reuseaddr,fork", "EXEC:cat"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let fargs = ["--listen", "--via", relay, "--to", "127.0.0.1:9000"];
    let expose = listener(nat, Host::A, "forward", &fargs, a_out, Stdio::null());
    let words: Vec<String> = line(&expose)
        .iter()
        .map(|w| w.replace("127.0.0.1:LOCAL_PORT", "127.0.0.1:9100"))
        .collect();
    let _using = KillOnDrop(
        nat.cmd(Host::B, BIN)
            .args(&words)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let data = random_bytes(200_000, 27);
    let echoed = wait_until(WAIT, || {
        let mut c = nat.cmd(Host::B, "socat");
        c.args(["-t", "5", "-", "TCP:127.0.0.1:9100"]);
        c.stderr(Stdio::null());
        let o = pipe_through(c, &data, Duration::from_secs(20));
        o.status.success() && o.stdout == data
    });
    assert!(echoed, "forward through the relay echoed the bytes");
    drop(expose);
}

/// Runs `c` with `input` on its stdin, bounded by `limit`.
fn pipe_through(mut c: Command, input: &[u8], limit: Duration) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let w = feed(&mut child, input);
    let out = wait_output(child, limit);
    let _ = w.join();
    out
}

#[test]
fn every_verb_crosses_two_nats_through_pincat_relay() {
    let Some(nat) = Nat::build() else { return };
    let base = tempfile::tempdir().unwrap();
    let mut cmd = nat.cmd(Host::Inet, BIN);
    cmd.args(["relay", "--listen", "0.0.0.0:4001", "--json"]);
    let relay = RelayProc::launch(cmd);
    every_verb(&nat, &format!("{RELAY_IP}:4001"), base.path());
    // The relay saw the hosts only as their routers' public addresses, and
    // its log holds no plaintext.
    let events = relay.drain(Duration::from_millis(300));
    let log: Vec<String> = relay.lines.try_iter().collect();
    assert!(!log.join("\n").contains("NAT-MARKER"), "{log:?}");
    let paired: Vec<_> = events.iter().filter(|e| e["event"] == "paired").collect();
    assert!(paired.len() >= 4, "{events:?}");
    for p in &paired {
        for k in ["peer", "partner"] {
            let a = p[k].as_str().unwrap();
            assert!(a.starts_with("198.51.100."), "{p}");
        }
    }
}

#[test]
fn every_verb_crosses_two_nats_through_the_pypi_transit_relay() {
    let Some(nat) = Nat::build() else { return };
    let Some(twist) = twist() else { return };
    let base = tempfile::tempdir().unwrap();
    let _relay = KillOnDrop(
        nat.cmd(Host::Inet, &twist)
            .args(["transitrelay", "--port=tcp:4001"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = wait_until(WAIT, || {
        let probe = format!("exec 3<>/dev/tcp/{RELAY_IP}/4001");
        nat.cmd(Host::A, "bash")
            .args(["-c", &probe])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "the transit relay did not start");
    every_verb(&nat, &format!("{RELAY_IP}:4001"), base.path());
}

/// Starts `tests/it/fake_relay.py PORT MODE ARG` in the internet namespace.
fn fake_relay(nat: &Nat, port: u16, mode: &str, arg: &str) -> KillOnDrop {
    use std::io::BufRead;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fake_relay.py");
    let mut child = nat
        .cmd(Host::Inet, "python3")
        .args([script, &port.to_string(), mode, arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    let out = child.stdout.take().unwrap();
    std::io::BufReader::new(out).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    KillOnDrop(child)
}

/// `words` with the relay of its `--via` replaced by `relay`.
fn through(words: &[String], relay: &str) -> Vec<String> {
    let mut w = words.to_vec();
    let i = w.iter().position(|x| x == "--via").unwrap() + 1;
    let rendezvous = w[i].rsplit_once('/').unwrap().1.to_string();
    w[i] = format!("{relay}/{rendezvous}");
    w
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().all(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".pincat")
    })
}

#[test]
fn relays_that_lie_or_listen_in_get_nothing_across_two_nats() {
    let Some(nat) = Nat::build() else { return };
    let base = tempfile::tempdir().unwrap();
    let (src, a_out, evil_out) = (
        base.path().join("src"),
        base.path().join("a"),
        base.path().join("evil"),
    );
    for d in [&a_out, &evil_out] {
        std::fs::create_dir_all(d).unwrap();
    }
    sample(&src);
    let mut cmd = nat.cmd(Host::Inet, BIN);
    cmd.args(["relay", "--listen", "0.0.0.0:4001", "--json"]);
    let _honest = RelayProc::launch(cmd);
    let honest = format!("{RELAY_IP}:4001");
    // A relay that terminates TLS itself, with its operator's own receiver.
    let args = ["--via", &honest, "--out", "."];
    let mut real = listener(&nat, Host::A, "serve", &args, &a_out, Stdio::null());
    let evil_args = [
        "--listen",
        "127.0.0.1:7000",
        "--allow-any",
        "--keep-open",
        "--out",
        ".",
    ];
    let _evil = listener(
        &nat,
        Host::Inet,
        "serve",
        &evil_args,
        &evil_out,
        Stdio::null(),
    );
    let _mitm = fake_relay(&nat, 4002, "mitm", "127.0.0.1:7000");
    let mitm = format!("{RELAY_IP}:4002");
    for (key, want) in [("command", 3), ("short_command", 9)] {
        let o = run_in(
            &nat,
            Host::B,
            &through(&line_of(&real, key), &mitm),
            &["t"],
            &src,
            b"",
        );
        assert_eq!(
            o.status.code(),
            Some(want),
            "{key} through the MITM: {}",
            text(&o.stderr)
        );
    }
    misdirected(&nat, &src, &a_out, &evil_out);
    real.kill();
    recorded(&nat, &src, &a_out, &base.path().join("capture.bin"));
}

/// A relay that pairs the dialer with another listener: exit 3 or 9,
/// nothing given or stored.
fn misdirected(nat: &Nat, src: &Path, a_out: &Path, evil_out: &Path) {
    // A relay that pairs the dialer with another listener.
    let _mis = fake_relay(nat, 4003, "misdirect", "2");
    let mis = format!("{RELAY_IP}:4003");
    let first = listener(
        nat,
        Host::A,
        "serve",
        &["--via", &mis, "--out", "."],
        a_out,
        Stdio::null(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let _second = listener(
        nat,
        Host::A,
        "serve",
        &["--via", &mis, "--out", "."],
        evil_out,
        Stdio::null(),
    );
    std::thread::sleep(Duration::from_millis(300));
    for key in ["command", "short_command"] {
        let o = run_in(nat, Host::B, &line_of(&first, key), &["t"], src, b"");
        assert!(
            matches!(o.status.code(), Some(3 | 9)),
            "{key} misdirected: {}",
            text(&o.stderr)
        );
    }
    assert!(
        is_empty(a_out) && is_empty(evil_out),
        "nothing given or stored"
    );
}

/// A relay that records everything it carries: the transfer works, and
/// the capture holds no plaintext.
fn recorded(nat: &Nat, src: &Path, a_out: &Path, capture: &Path) {
    let _rec = fake_relay(nat, 4004, "record", capture.to_str().unwrap());
    let args = ["--via", &format!("{RELAY_IP}:4004"), "--out", "."];
    let mut rec = listener(nat, Host::A, "serve", &args, a_out, Stdio::null());
    let o = run_in(nat, Host::B, &line(&rec), &["t"], src, b"");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(rec.wait_exit().0, Some(0));
    assert_eq!(tree(&a_out.join("t")), tree(&src.join("t")));
    let seen = std::fs::read(capture).unwrap();
    assert!(
        seen.len() > 1_500_000,
        "the capture saw the transfer ({} bytes)",
        seen.len()
    );
    assert!(
        !seen.windows(MARKER.len()).any(|w| w == MARKER),
        "plaintext in the capture"
    );
}
