//! Raw mode against standard TLS tools. Each test skips (with a note) when
//! its tool is not installed; `.ci/run` installs them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::util::cli::feed;
use crate::util::process::KillOnDrop;
use crate::util::tools::{cmd_exists, openssl_cert, openssl_fingerprint_hex};
use crate::util::{
    Server, WAIT, free_port, pincat, random_bytes, send, sha256, text, wait_output, wait_until,
};

/// Starts a TLS listener tool writing what it receives to `out`; its stdin
/// stays open (s_server shuts down at stdin EOF).
fn listener(dir: &Path, out: &Path, argv: &[String]) -> KillOnDrop {
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

fn send_raw_to_listener(tool_argv: impl Fn(u16) -> Vec<String>, tool: &str) {
    if !cmd_exists("openssl") || !cmd_exists(tool) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fp = openssl_cert(dir.path());
    let port = free_port();
    let out = dir.path().join("received");
    let _peer = listener(dir.path(), &out, &tool_argv(port));
    let data = random_bytes(2 << 20, 11);
    let addr = format!("127.0.0.1:{port}");
    // A probe connection would use up the tool's single accept: retry instead.
    let r = send(&addr, &fp, &["--raw", "--retry-for", "20s"], &data);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    wait_until(Duration::from_secs(20), || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() >= data.len() as u64)
    });
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&data));

    // The same listener kind with a pin for another certificate gets nothing.
    let port = free_port();
    let out = dir.path().join("received-wrong");
    let _peer = listener(dir.path(), &out, &tool_argv(port));
    let wrong = "01".repeat(32);
    let r = send(
        &format!("127.0.0.1:{port}"),
        &wrong,
        &["--raw", "--retry-for", "20s"],
        &data,
    );
    assert_eq!(r.status.code(), Some(3), "{}", text(&r.stderr));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn send_raw_to_openssl_s_server() {
    send_raw_to_listener(
        |port| {
            strings(&[
                "openssl", "s_server", "-quiet", "-naccept", "1", "-cert", "cert.pem", "-key",
                "key.pem", "-accept",
            ])
            .into_iter()
            .chain([format!("127.0.0.1:{port}")])
            .collect()
        },
        "openssl",
    );
}

#[test]
fn send_raw_to_ncat_ssl_listener() {
    send_raw_to_listener(
        |port| {
            strings(&[
                "ncat",
                "--ssl",
                "--ssl-cert",
                "cert.pem",
                "--ssl-key",
                "key.pem",
                "--recv-only",
                "-l",
                "127.0.0.1",
            ])
            .into_iter()
            .chain([port.to_string()])
            .collect()
        },
        "ncat",
    );
}

#[test]
fn send_raw_to_socat_openssl_listen() {
    send_raw_to_listener(
        |port| {
            vec![
                "socat".into(),
                "-u".into(),
                format!("OPENSSL-LISTEN:{port},bind=127.0.0.1,cert=cert.pem,key=key.pem,verify=0"),
                "-".into(),
            ]
        },
        "socat",
    );
}

/// Pipes `data` into a client tool connecting to `pincat serve --raw`.
fn client_to_serve_raw(tool: &str, argv: impl Fn(&str) -> Vec<String>) {
    if !cmd_exists(tool) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--allow-any", "--raw", "--out", "got.bin"]);
    let (host, port) = srv.addr.rsplit_once(':').unwrap();
    let data = random_bytes(2 << 20, 12);
    let args = argv(&format!("{host}:{port}"));
    let mut c = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let w = feed(&mut c, &data);
    let (code, _) = srv.wait_exit();
    let _ = w.join();
    let _ = wait_output(c, WAIT);
    assert_eq!(code, Some(0), "{:?}", srv.seen);
    let got = std::fs::read(dir.path().join("got.bin")).unwrap();
    assert_eq!(sha256(&got), sha256(&data));
}

#[test]
fn openssl_s_client_to_serve_raw() {
    client_to_serve_raw("openssl", |addr| {
        strings(&["openssl", "s_client", "-nocommands", "-connect", addr])
    });
}

#[test]
fn socat_openssl_client_to_serve_raw() {
    client_to_serve_raw("socat", |addr| {
        vec![
            "socat".into(),
            "-u".into(),
            "-".into(),
            format!("OPENSSL:{addr},verify=0"),
        ]
    });
}

#[test]
fn ncat_client_without_close_notify_is_not_stored() {
    // ncat closes without close_notify: a truncation pincat must not vouch for.
    if !cmd_exists("ncat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--allow-any", "--raw", "--out", "got.bin"]);
    let (host, port) = srv.addr.rsplit_once(':').unwrap();
    let c = Command::new("ncat")
        .args(["--ssl", "--send-only", host, port])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = c;
    c.stdin
        .take()
        .unwrap()
        .write_all(&random_bytes(100_000, 13))
        .unwrap();
    let _ = wait_output(c, WAIT);
    let (code, _) = srv.wait_exit();
    if code == Some(0) {
        // A newer ncat that does send close_notify: then the data must be whole.
        assert_eq!(
            std::fs::read(dir.path().join("got.bin")).unwrap().len(),
            100_000
        );
    } else {
        assert_eq!(code, Some(7));
        assert!(!dir.path().join("got.bin").exists());
    }
}

#[test]
fn fingerprint_remote_matches_openssl_on_s_server() {
    if !cmd_exists("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fp = openssl_cert(dir.path());
    let port = free_port();
    let out = dir.path().join("nothing");
    let _peer = listener(
        dir.path(),
        &out,
        &strings(&[
            "openssl", "s_server", "-quiet", "-cert", "cert.pem", "-key", "key.pem", "-accept",
        ])
        .into_iter()
        .chain([format!("127.0.0.1:{port}")])
        .collect::<Vec<_>>(),
    );
    let listening = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(wait_until(WAIT, listening), "peer never listened on {port}");
    let r = pincat()
        .args(["fingerprint", "--remote", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(text(&r.stdout).trim(), openssl_fingerprint_hex(&fp));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        0,
        "fingerprint --remote sent data"
    );
}
