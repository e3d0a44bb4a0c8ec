//! Every direction: pull (offer/get), full-duplex pipe (stdio, --exec,
//! openssl interop), pinned forwarding, role mismatches, and the dial
//! addresses a wildcard listener prints.

use crate::util::server::code_args;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::fs::tree;
use crate::util::process::signal;
use crate::util::tools::{cmd_exists, openssl_cert, openssl_fingerprint_hex};
use crate::util::{Server, WAIT, free_port, pincat, random_bytes, send, text, wait_output};

/// `pincat get ADDR --pin FP ARGS` run to completion.
fn get(srv: &Server, dir: &Path, args: &[&str]) -> std::process::Output {
    crate::util::cli::get_in(&srv.addr, &srv.fingerprint, dir, args)
}

/// A file to use as a child's stdin.
fn stdin_of(dir: &Path, name: &str, data: &[u8]) -> Stdio {
    let p = dir.join(name);
    fs::write(&p, data).unwrap();
    Stdio::from(fs::File::open(p).unwrap())
}

fn identity(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(name);
    let out = pincat()
        .args(["identity", "new"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    (
        path.to_str().unwrap().to_string(),
        text(&out.stdout).trim().to_string(),
    )
}

#[test]
fn offer_and_get_a_stream_files_and_a_directory() {
    let base = tempfile::tempdir().unwrap();
    // A stream from the offering side's stdin to the taker's stdout.
    let data = random_bytes(300_000, 1);
    let mut off = Server::listen(
        "offer",
        base.path(),
        &[],
        stdin_of(base.path(), "in", &data),
    );
    assert!(
        off.seen[0]["command"]
            .as_str()
            .unwrap()
            .starts_with("pincat get 127.0.0.1:")
    );
    let got = get(&off, base.path(), &[]);
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    assert_eq!(got.stdout, data);
    assert_eq!(off.wait_exit().0, Some(0));

    // Files and a directory, into --out.
    let src = base.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    fs::write(src.join("d/sub/b.bin"), random_bytes(70_000, 2)).unwrap();
    fs::write(src.join("d/empty"), b"").unwrap();
    let mut off = Server::listen(
        "offer",
        base.path(),
        &[
            src.join("a.txt").to_str().unwrap(),
            src.join("d").to_str().unwrap(),
        ],
        Stdio::null(),
    );
    let got = get(&off, base.path(), &["--out", "inbox"]);
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    assert_eq!(off.wait_exit().0, Some(0));
    let mut want = tree(&src);
    want.retain(|(n, _)| n == "a.txt" || n.starts_with('d'));
    assert_eq!(tree(&base.path().join("inbox")), want);
    let done = off.seen_named("transfer-done");
    assert_eq!(done[0]["files"], 3);

    // get never overwrites: the same offer again is refused, nothing changes.
    let mut off = Server::listen(
        "offer",
        base.path(),
        &[src.join("a.txt").to_str().unwrap()],
        Stdio::null(),
    );
    fs::write(base.path().join("inbox/a.txt"), b"mine").unwrap();
    let again = get(&off, base.path(), &["--out", "inbox"]);
    assert_eq!(again.status.code(), Some(4), "{}", text(&again.stderr));
    assert_eq!(fs::read(base.path().join("inbox/a.txt")).unwrap(), b"mine");
    off.kill();
}

#[test]
fn one_offer_many_gets_up_to_max_gets() {
    let base = tempfile::tempdir().unwrap();
    let f = base.path().join("shared.bin");
    fs::write(&f, random_bytes(50_000, 3)).unwrap();
    let mut off = Server::listen(
        "offer",
        base.path(),
        &["--keep-open", "--max-gets", "3", f.to_str().unwrap()],
        Stdio::null(),
    );
    for i in 0..3 {
        let dir = base.path().join(format!("t{i}"));
        let got = get(&off, base.path(), &["--out", dir.to_str().unwrap()]);
        assert_eq!(got.status.code(), Some(0), "get {i}: {}", text(&got.stderr));
        assert_eq!(
            fs::read(dir.join("shared.bin")).unwrap(),
            fs::read(&f).unwrap()
        );
    }
    assert_eq!(off.wait_exit().0, Some(0), "offer exits 0 after its gets");
    assert_eq!(off.seen_named("transfer-done").len(), 3);
    // A fourth taker finds nobody listening.
    let fourth = get(
        &off,
        base.path(),
        &["--out", "t3", "--connect-timeout", "2s"],
    );
    assert_ne!(fourth.status.code(), Some(0));
    assert!(!base.path().join("t3/shared.bin").exists());
}

#[test]
fn mutual_pinning_on_offer_and_get() {
    let base = tempfile::tempdir().unwrap();
    let (id, fp) = identity(base.path(), "taker.id");
    let f = base.path().join("secret.txt");
    fs::write(&f, b"for the taker only").unwrap();
    let mut off = Server::listen(
        "offer",
        base.path(),
        &["--keep-open", "--allow", &fp, f.to_str().unwrap()],
        Stdio::null(),
    );
    let stranger = get(&off, base.path(), &["--out", "x"]);
    assert_eq!(
        stranger.status.code(),
        Some(5),
        "{}",
        text(&stranger.stderr)
    );
    assert!(!base.path().join("x/secret.txt").exists());
    let ok = get(&off, base.path(), &["--out", "y", "--identity", &id]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert_eq!(
        fs::read(base.path().join("y/secret.txt")).unwrap(),
        b"for the taker only"
    );
    let connected = off.wait_event("transfer-done");
    assert_eq!(connected["files"], 1);
    assert!(
        off.seen_named("connected")
            .iter()
            .any(|c| c["fingerprint"] == fp.as_str())
    );
    off.kill();
}

#[test]
fn mismatched_roles_fail_at_once_naming_both() {
    let base = tempfile::tempdir().unwrap();
    // get from a serve: two takers.
    let mut srv = Server::start(base.path(), &["--out", "in"]);
    let t = Instant::now();
    let got = get(&srv, base.path(), &[]);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_ne!(got.status.code(), Some(0));
    let msg = text(&got.stderr);
    assert!(
        msg.contains("role mismatch") && msg.contains("takes data"),
        "{msg}"
    );
    srv.kill();
    // send to an offer: two givers.
    let mut off = Server::listen("offer", base.path(), &[], stdin_of(base.path(), "i", b"x"));
    let t = Instant::now();
    let sent = send(&off.addr, &off.fingerprint, &[], b"y");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_ne!(sent.status.code(), Some(0));
    let msg = text(&sent.stderr);
    assert!(
        msg.contains("role mismatch") && msg.contains("gives data"),
        "{msg}"
    );
    off.kill();
}

/// The dialing end of a pipe, with `input` on stdin; returns its output.
fn pipe_dial(srv: &Server, input: Vec<u8>, args: &[&str]) -> std::process::Output {
    let mut child = pincat()
        .args(["pipe", &srv.addr, "--pin", &srv.fingerprint])
        .args(code_args(&srv.addr))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let w = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child, WAIT);
    let _ = w.join();
    out
}

#[test]
fn pipe_carries_both_directions_at_once() {
    let base = tempfile::tempdir().unwrap();
    let a = random_bytes(8 << 20, 4);
    let b = random_bytes(8 << 20, 5);
    let mut lis = Server::listen("pipe", base.path(), &[], stdin_of(base.path(), "a", &a));
    let out = pipe_dial(&lis, b.clone(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout == a, "the dialer got {} bytes", out.stdout.len());
    let (code, got) = lis.wait_exit();
    assert_eq!(code, Some(0));
    assert!(got == b, "the listener got {} bytes", got.len());
    let closed = &lis.seen_named("closed")[0];
    assert_eq!(closed["outcome"], "ok");
    assert_eq!(closed["received"], 8 << 20);
}

#[test]
fn pipe_half_close_keeps_the_other_direction() {
    let base = tempfile::tempdir().unwrap();
    // The listener's input ends at once; the dialer keeps sending 2 MiB.
    let b = random_bytes(2 << 20, 6);
    let mut lis = Server::listen("pipe", base.path(), &[], Stdio::null());
    let out = pipe_dial(&lis, b.clone(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let (code, got) = lis.wait_exit();
    assert_eq!(code, Some(0));
    assert!(got == b, "the listener got {} bytes", got.len());
}

#[test]
fn pipe_exec_connects_a_program_once_the_dialer_proved_the_code() {
    let base = tempfile::tempdir().unwrap();
    let mut lis = Server::listen("pipe", base.path(), &["--exec", "cat"], Stdio::null());
    assert!(lis.code.is_some(), "a code by default: {}", lis.seen[0]);
    let data = random_bytes(1 << 20, 7);
    let out = pipe_dial(&lis, data.clone(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout == data, "echoed {} bytes", out.stdout.len());
    assert_eq!(lis.wait_exit().0, Some(0));
}

#[test]
fn pipe_talks_to_openssl_both_ways() {
    if !cmd_exists("openssl") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let fp = openssl_fingerprint_hex(&openssl_cert(base.path()));
    let port = free_port();
    // openssl s_server is the listener; its stdin stays open a moment.
    let mut server = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(echo from-openssl; sleep 1) | openssl s_server -quiet -naccept 1 -tls1_3 -cert cert.pem -key key.pem -accept 127.0.0.1:{port}"
        ))
        .current_dir(base.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // No probe: s_server takes a single connection (-naccept 1); the pipe
    // retries while it starts.
    let out = pincat()
        .args([
            "pipe",
            &format!("127.0.0.1:{port}"),
            "--pin",
            &fp,
            "--retry-for",
            "5s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    out.stdin
        .take()
        .unwrap()
        .write_all(b"from-pincat\n")
        .unwrap();
    let out = wait_output(out, WAIT);
    assert_eq!(text(&out.stdout), "from-openssl\n", "{}", text(&out.stderr));
    let got = wait_output(take_child(&mut server), WAIT);
    assert!(
        text(&got.stdout).contains("from-pincat"),
        "{}",
        text(&got.stdout)
    );

    // openssl s_client dials pincat pipe --listen.
    // The pipe's input stays open a moment: s_client closes as soon as it
    // sees close_notify, maybe before sending its own line.
    let mut feeder = Command::new("sh")
        .args(["-c", "echo from-pipe; sleep 2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let slow_input = Stdio::from(feeder.stdout.take().unwrap());
    // openssl cannot prove a code: this listener serves anyone.
    let mut lis = Server::listen("pipe", base.path(), &["--allow-any"], slow_input);
    let client = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(echo from-client; sleep 1) | openssl s_client -quiet -tls1_3 -connect {}",
            lis.addr
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = wait_output(client, WAIT);
    assert!(text(&c.stdout).contains("from-pipe"), "{}", text(&c.stdout));
    let (code, got) = lis.wait_exit();
    assert_eq!(code, Some(0));
    assert_eq!(text(&got), "from-client\n");
    let _ = feeder.wait();
}

fn take_child(c: &mut Child) -> Child {
    std::mem::replace(c, Command::new("true").spawn().unwrap())
}

/// A TCP echo service (echoes until the client half-closes, then closes).
fn echo_service() -> (String, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = thread::spawn(move || {
        for s in l.incoming().take(64) {
            let Ok(mut s) = s else { break };
            thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    (addr, h)
}

#[test]
fn forward_carries_concurrent_connections_and_refuses_strangers() {
    let base = tempfile::tempdir().unwrap();
    let (echo, _e) = echo_service();
    let (id, fp) = identity(base.path(), "laptop.id");
    let mut expose = Server::listen(
        "forward",
        base.path(),
        &["--to", &echo, "--allow", &fp],
        Stdio::null(),
    );
    let local = format!("127.0.0.1:{}", free_port());
    let mut using = crate::util::process::KillOnDrop(
        pincat()
            .args([
                "forward",
                "--local",
                &local,
                "--to",
                &expose.addr,
                "--pin",
                &expose.fingerprint,
            ])
            .args(["--identity", &id, "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(crate::util::wait_until(WAIT, || TcpStream::connect(&local).is_ok()));
    let ok = carry_twenty(&local);
    assert_eq!(ok, 20, "connections carried intact");

    // A using end without the allowed identity gets nothing through.
    stranger_gets_nothing(&mut expose);

    // SIGTERM: the exposing end stops and exits.
    signal(expose.child.id(), libc::SIGTERM);
    let (code, _) = expose.wait_exit();
    assert_eq!(code, Some(0));
    // The 20 clients, and the probe that waited for the using end.
    let ok = expose.seen_named("closed");
    assert!(
        ok.iter().filter(|c| c["outcome"] == "ok").count() >= 20,
        "{ok:?}"
    );
    signal(using.0.id(), libc::SIGTERM);
    let st = wait_output(take_child(&mut using.0), WAIT);
    assert_eq!(st.status.code(), Some(0));
}

/// 20 concurrent clients through the using end at `local`, each writing
/// then half-closing; returns how many got their bytes echoed intact.
fn carry_twenty(local: &str) -> usize {
    let clients: Vec<_> = (0..20u64)
        .map(|i| {
            let local = local.to_string();
            thread::spawn(move || {
                let data = random_bytes(200_000 + i as usize * 1000, 100 + i);
                let mut s = TcpStream::connect(&local).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                let mut w = s.try_clone().unwrap();
                let d = data.clone();
                // Half-close after writing: the echo still comes back.
                let writer = thread::spawn(move || {
                    w.write_all(&d).unwrap();
                    w.shutdown(Shutdown::Write).unwrap();
                });
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                writer.join().unwrap();
                got == data
            })
        })
        .collect();
    clients
        .into_iter()
        .map(|c| c.join().unwrap_or(false))
        .filter(|&ok| ok)
        .count()
}

/// A using end without the allowed identity: its client gets nothing, the
/// exposing end reports the refusal.
fn stranger_gets_nothing(expose: &mut Server) {
    let local2 = format!("127.0.0.1:{}", free_port());
    let stranger = crate::util::process::KillOnDrop(
        pincat()
            .args([
                "forward",
                "--local",
                &local2,
                "--to",
                &expose.addr,
                "--pin",
                &expose.fingerprint,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(crate::util::wait_until(WAIT, || TcpStream::connect(
        &local2
    )
    .is_ok()));
    let mut s = TcpStream::connect(&local2).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"hello?");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "a stranger got {got:?}");
    assert_eq!(expose.wait_event("refused")["reason"], "not-allowed");
    drop(stranger);
}

#[test]
fn forward_listen_without_an_allow_list_makes_a_code() {
    let base = tempfile::tempdir().unwrap();
    let mut lis = Server::listen(
        "forward",
        base.path(),
        &["--to", "127.0.0.1:9"],
        Stdio::null(),
    );
    let code = lis.code.clone().expect("a code by default");
    let line = lis.seen[0]["command"].as_str().unwrap().to_string();
    assert!(line.contains(&format!("--code {code}")), "{line}");
    lis.kill();
}

/// The machine's own non-loopback IPv4 addresses, as `ip` reports them.
fn os_ipv4_addrs() -> Option<Vec<String>> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "up"])
        .output()
        .ok()?;
    Some(
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .filter_map(|cidr| cidr.split('/').next())
            .filter(|a| !a.starts_with("127."))
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn a_wildcard_listener_lists_the_machines_addresses() {
    let base = tempfile::tempdir().unwrap();
    // Bound to all IPv4 interfaces; nothing dials those addresses here.
    let mut srv = Server::start_on("0.0.0.0:0", base.path(), &[]);
    let ev = &srv.seen[0];
    let listed: Vec<String> = ev["dial_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let port = ev["addr"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(!listed.is_empty());
    let Some(os) = os_ipv4_addrs() else {
        eprintln!("ip not installed; only checked the list is not empty");
        srv.kill();
        return;
    };
    for a in &os {
        assert!(
            listed.contains(&format!("{a}:{port}")),
            "{a} missing from {listed:?}"
        );
    }
    if let Some(first) = os.first() {
        let cmd = ev["command"].as_str().unwrap();
        assert!(cmd.contains(&format!("{first}:{port}")), "{cmd}");
    }
    assert!(listed.iter().all(|a| !a.starts_with("127.")), "{listed:?}");
    srv.kill();
}
