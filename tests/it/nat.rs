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

use crate::util::fs::tree;
use crate::util::netns::{A_IP, Host, Nat, RELAY_IP};
use crate::util::process::KillOnDrop;
use crate::util::relay::{RelayProc, twist};
use crate::util::{Server, WAIT, random_bytes, text, wait_output, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_pincat");

/// `pincat VERB --json ARGS` listening in host `h`.
fn listener(nat: &Nat, h: Host, verb: &str, args: &[&str], dir: &Path, stdin: Stdio) -> Server {
    let mut cmd = nat.cmd(h, BIN);
    cmd.args([verb, "--json"]).args(args);
    Server::launch(cmd, dir, stdin)
}

/// The listener's printed line, `pincat` dropped, as arguments.
fn line(srv: &Server) -> Vec<String> {
    let l = srv.seen[0]["command"].as_str().unwrap().to_string();
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
    let mut child = nat
        .cmd(h, BIN)
        .args(words)
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feed = std::thread::spawn(move || {
        let _ = w.write_all(&input);
    });
    let out = wait_output(child, WAIT);
    let _ = feed.join();
    out
}

fn sample(dir: &Path) {
    std::fs::create_dir_all(dir.join("t/sub")).unwrap();
    std::fs::write(dir.join("t/a.txt"), b"across two NATs").unwrap();
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
    // Push: serve in A on a port and at the relay; a direct dial from B
    // fails (the NAT is real); the printed line (direct first, then the
    // relay) succeeds.
    let args = ["--listen", "0.0.0.0:7878", "--via", relay, "--out", "."];
    let mut srv = listener(nat, Host::A, "serve", &args, &a_out, Stdio::null());
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
    let o = run_in(nat, Host::B, &direct, &["t"], &src, b"");
    assert!(
        matches!(o.status.code(), Some(6 | 8)),
        "a direct dial across the NATs: {:?} {}",
        o.status,
        text(&o.stderr)
    );
    let o = run_in(nat, Host::B, &words, &["t"], &src, b"");
    assert_eq!(o.status.code(), Some(0), "push: {}", text(&o.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(tree(&a_out.join("t")), tree(&src.join("t")));

    // Pull: offer in B through the relay only, get in A.
    let mut off = listener(
        nat,
        Host::B,
        "offer",
        &["--via", relay, "t"],
        &src,
        Stdio::null(),
    );
    assert_eq!(off.seen[0]["dial_addrs"].as_array().unwrap().len(), 0);
    let o = run_in(nat, Host::A, &line(&off), &["--out", "pulled"], &a_out, b"");
    assert_eq!(o.status.code(), Some(0), "pull: {}", text(&o.stderr));
    assert_eq!(off.wait_exit().0, Some(0));
    assert_eq!(tree(&a_out.join("pulled/t")), tree(&src.join("t")));

    // Pipe: both directions at once.
    let (to_b, to_a) = (random_bytes(400_000, 25), random_bytes(300_000, 26));
    let mut p = listener(
        nat,
        Host::A,
        "pipe",
        &["--listen", "--via", relay],
        &a_out,
        Stdio::piped(),
    );
    let mut pin_a = p.child.stdin.take().unwrap();
    let feed = std::thread::spawn({
        let to_b = to_b.clone();
        move || {
            let _ = pin_a.write_all(&to_b);
        }
    });
    let o = run_in(nat, Host::B, &line(&p), &[], &b_out, &to_a);
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
    let expose = listener(nat, Host::A, "forward", &fargs, &a_out, Stdio::null());
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
        let o = pipe_through(c, &data);
        o.status.success() && o.stdout == data
    });
    assert!(echoed, "forward through the relay echoed the bytes");
    drop(expose);
}

fn pipe_through(mut c: Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feed = std::thread::spawn(move || {
        let _ = w.write_all(&input);
    });
    let out = wait_output(child, Duration::from_secs(20));
    let _ = feed.join();
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
    // The relay saw the hosts only as their routers' public addresses.
    let events = relay.drain(Duration::from_millis(300));
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
