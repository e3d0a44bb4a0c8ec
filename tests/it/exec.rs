//! `serve --exec`: each transfer handed to a program only once it is
//! whole and its sender admitted, with the sender's verified identity in
//! its environment and nothing else of the receiver's; its exit status is
//! the sender's (12 when it failed), its stdout the sender's reply.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::util::cli::identity_new;
use crate::util::data::json_lines;
use crate::util::{Server, WAIT, random_bytes, send, text, wait_until};

mod cut;
mod files;
mod lies;
mod serial;

/// Writes the sh script `name` in `dir` (executable); returns its path.
pub fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

/// `pincat serve --json ARGS --exec PROG...` in `dir`, with its private
/// state under `dir/state`.
pub fn serve(dir: &Path, args: &[&str], exec: &[&str]) -> Server {
    serve_env(dir, args, exec, &[])
}

/// As [`serve`], with these variables in the receiver's environment.
pub fn serve_env(dir: &Path, args: &[&str], exec: &[&str], env: &[(&str, &str)]) -> Server {
    let state = dir.join("state");
    let all = [args, &["--exec"], exec].concat();
    Server::start_with(dir, &all, |c| {
        c.env("PINCAT_STATE_DIR", &state);
        for (k, v) in env {
            c.env(k, v);
        }
    })
}

/// The JSON events a sender run with `--json` printed.
fn events(o: &Output) -> Vec<Value> {
    json_lines(&o.stderr)
}

/// A persistent identity `name` in `dir`: its path and fingerprint.
fn identity(dir: &Path, name: &str) -> (PathBuf, String) {
    let fp = identity_new(dir, name);
    (dir.join(name), fp)
}

/// The value of `name` in `env`'s lines `NAME=value`.
fn env_value<'a>(env: &'a str, name: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn a_hundred_concurrent_senders_each_handled_once_with_their_own_fingerprint() {
    const N: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let ids = identities(dir.path(), N);
    let allow: String = ids.iter().map(|(_, fp)| format!("{fp}\n")).collect();
    std::fs::write(dir.path().join("allow.txt"), allow).unwrap();
    std::fs::create_dir(dir.path().join("got")).unwrap();
    let h = script(
        dir.path(),
        "collect.sh",
        r#"f=$(mktemp "$PWD/got/msgXXXXXXXX") || exit 1
cat > "$f" && env > "$f.env" && echo "handled $PINCAT_MESSAGE_BYTES""#,
    );
    let args = [
        "--keep-open",
        "--allow-file",
        "allow.txt",
        "--max-handshakes",
        "256",
    ];
    let srv = serve(dir.path(), &args, &[&h]);
    let inputs: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            [
                format!("message {i}\n").into_bytes(),
                random_bytes(i * 97, i as u64),
            ]
            .concat()
        })
        .collect();
    let to = (srv.addr.as_str(), srv.fingerprint.as_str());
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .zip(&inputs)
            .map(|((path, _), input)| {
                s.spawn(move || {
                    let id = ["--identity", path.to_str().unwrap()];
                    send(to.0, to.1, &id, input)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(o.status.code(), Some(0), "sender {i}: {}", text(&o.stderr));
        let want = format!("handled {}\n", inputs[i].len());
        assert_eq!(text(&o.stdout), want, "sender {i}: the reply");
    }
    check_each_once(&dir.path().join("got"), &inputs, &ids);
}

/// `n` persistent identities in `dir`, made in parallel.
fn identities(dir: &Path, n: usize) -> Vec<(PathBuf, String)> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| s.spawn(move || identity(dir, &format!("id{i}.pem"))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Every message in `got` (with its `.env`) is one of `inputs`, whole,
/// with its sender's fingerprint and size; each arrived exactly once.
fn check_each_once(got: &Path, inputs: &[Vec<u8>], ids: &[(PathBuf, String)]) {
    let mut seen = vec![0usize; inputs.len()];
    for e in std::fs::read_dir(got).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some() {
            continue;
        }
        let got = std::fs::read(&path).unwrap();
        let i = inputs
            .iter()
            .position(|m| *m == got)
            .expect("a message as sent");
        seen[i] += 1;
        let env = std::fs::read_to_string(path.with_extension("env")).unwrap();
        assert_eq!(
            env_value(&env, "PINCAT_PEER_FINGERPRINT"),
            Some(ids[i].1.as_str())
        );
        let bytes = got.len().to_string();
        assert_eq!(
            env_value(&env, "PINCAT_MESSAGE_BYTES"),
            Some(bytes.as_str())
        );
        assert!(env_value(&env, "PINCAT_PEER_SPKI").is_some_and(|k| k.starts_with("sha256//")));
    }
    assert!(seen.iter().all(|&n| n == 1), "each once: {seen:?}");
}

#[test]
fn a_failing_handler_makes_the_sender_exit_12_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let h = script(
        dir.path(),
        "fail.sh",
        "cat > /dev/null; echo 'bad input' >&2; exit 3",
    );
    // The default admission: the code (the helpers prove it).
    let mut srv = serve(dir.path(), &["--keep-open"], &[&h]);
    let o = send(&srv.addr, &srv.fingerprint, &[], b"job 1");
    assert_eq!(o.status.code(), Some(12), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("exited with status 3"),
        "{}",
        text(&o.stderr)
    );
    let o = send(&srv.addr, &srv.fingerprint, &["--json"], b"job 2");
    assert_eq!(o.status.code(), Some(12), "{}", text(&o.stderr));
    let err = events(&o)
        .into_iter()
        .find(|e| e["event"] == "error")
        .unwrap();
    assert_eq!(err["code"], "handler", "{err}");
    assert_eq!(err["handler_status"], "exit:3", "{err}");
    // The receiver reports it too, and its stderr lines by peer.
    let ev = srv.wait_event("error");
    assert_eq!(ev["handler_status"], "exit:3", "{ev}");
    let line = srv.wait_event("handler-output");
    assert_eq!(line["line"], "bad input", "{line}");
}

#[test]
fn a_handler_that_cannot_start_is_exit_12_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    for stream in [false, true] {
        let mut args = vec!["--keep-open"];
        if stream {
            args.push("--exec-stream");
        }
        let mut srv = serve(dir.path(), &args, &["./no-such-handler", "arg"]);
        let o = send(&srv.addr, &srv.fingerprint, &[], b"x");
        assert_eq!(o.status.code(), Some(12), "{}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("cannot start handler"),
            "{}",
            text(&o.stderr)
        );
        let logged = loop {
            let ev = srv.wait_event("error");
            if ev["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot start handler"))
            {
                break ev;
            }
        };
        assert!(logged["peer"].is_string(), "{logged}");
    }
}

#[test]
fn the_handlers_stdout_is_the_senders_reply() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve(dir.path(), &["--keep-open"], &["tr", "a-z", "A-Z"]);
    let o = send(&srv.addr, &srv.fingerprint, &[], b"what is the answer?\n");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(o.stdout, b"WHAT IS THE ANSWER?\n");
    drop(srv);
    // A reply of several frames, whole; one past the bound is a failure.
    let srv = serve(dir.path(), &["--keep-open"], &["cat"]);
    let big = random_bytes(3 << 20, 5);
    let o = send(&srv.addr, &srv.fingerprint, &[], &big);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(o.stdout == big, "the reply is the message, whole");
    drop(srv);
    let flood = script(dir.path(), "flood.sh", "head -c 17000000 /dev/zero");
    let srv = serve(dir.path(), &["--keep-open"], &[&flood]);
    let o = send(&srv.addr, &srv.fingerprint, &[], b"go");
    assert_eq!(o.status.code(), Some(12), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("16 MiB"), "{}", text(&o.stderr));
}

#[test]
fn a_stranger_never_starts_a_handler() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_fp) = identity(dir.path(), "alice.pem");
    let (mallory, _) = identity(dir.path(), "mallory.pem");
    let h = script(
        dir.path(),
        "mark.sh",
        "cat > /dev/null; echo ran >> \"$PWD/ran\"",
    );
    let ran = dir.path().join("ran");
    // An allow list: someone else's key is refused, before any handler.
    let srv = serve(dir.path(), &["--keep-open", "--allow", &alice_fp], &[&h]);
    let m = ["--identity", mallory.to_str().unwrap()];
    let o = send(&srv.addr, &srv.fingerprint, &m, b"let me in");
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert!(!ran.exists(), "no handler for a stranger");
    let a = ["--identity", alice.to_str().unwrap()];
    let o = send(&srv.addr, &srv.fingerprint, &a, b"from alice");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran\n");
    drop(srv);
    std::fs::remove_file(&ran).unwrap();
    // The default admission: a wrong code, or none, gets nothing started.
    let srv = serve(dir.path(), &["--keep-open"], &[&h]);
    let wrong = crate::util::pincat()
        .args(["send", &srv.addr, "--pin", &srv.fingerprint])
        .args(["--code", "acid-acorn-acre"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(9), "{}", text(&wrong.stderr));
    let none = crate::util::pincat()
        .args(["send", &srv.addr, "--pin", &srv.fingerprint])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_ne!(none.status.code(), Some(0), "{}", text(&none.stderr));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ran.exists(), "no handler without the code");
    let o = send(&srv.addr, &srv.fingerprint, &[], b"with the code");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(ran.exists());
}

/// A peers file in `dir` knowing `pin` as `name`.
fn known_peer(dir: &Path, name: &str, pin: &str) -> PathBuf {
    let peers = dir.join("peers");
    let add = crate::util::pincat()
        .args(["peers", "add", name, "127.0.0.1:9", "--pin", pin])
        .env("PINCAT_PEERS", &peers)
        .output()
        .unwrap();
    assert_eq!(add.status.code(), Some(0), "{}", text(&add.stderr));
    peers
}

/// A known peer's name comes from its verified key, never from a claim.
#[test]
fn the_environment_is_the_allowlist_and_the_verified_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (_, server_fp) = identity(dir.path(), "server.pem");
    let key = std::fs::read_to_string(dir.path().join("server.pem")).unwrap();
    let (alice, alice_fp) = identity(dir.path(), "alice.pem");
    let peers = known_peer(dir.path(), "alice-box", &alice_fp);
    let env = [
        ("PINCAT_CANARY_SECRET", "canary-7f3a"),
        ("JOB_TOKEN", "passed-through"),
        ("SERVER_KEY", key.as_str()),
        ("PINCAT_PEERS", peers.to_str().unwrap()),
        ("LANG", "C"),
    ];
    let args = [
        "--keep-open",
        "--identity",
        "env:SERVER_KEY",
        "--allow",
        &alice_fp,
        "--exec-env",
        "JOB_TOKEN",
        "--exec-env",
        "PINCAT_CANARY_SECRET",
    ];
    let srv = serve_env(dir.path(), &args, &["env"], &env);
    assert_eq!(srv.fingerprint, server_fp);
    let a = ["--identity", alice.to_str().unwrap(), "--as", "report.json"];
    let o = send(&srv.addr, &srv.fingerprint, &a, b"{}");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let got = text(&o.stdout);
    assert!(!got.contains("canary-7f3a"), "{got}");
    assert!(
        !got.contains("PRIVATE KEY") && !got.contains("SERVER_KEY"),
        "{got}"
    );
    assert_eq!(env_value(&got, "JOB_TOKEN"), Some("passed-through"));
    assert_eq!(env_value(&got, "LANG"), Some("C"));
    assert_eq!(
        env_value(&got, "PINCAT_PEER_FINGERPRINT"),
        Some(alice_fp.as_str())
    );
    assert_eq!(env_value(&got, "PINCAT_PEER_NAME"), Some("alice-box"));
    assert_eq!(env_value(&got, "PINCAT_MESSAGE_NAME"), Some("report.json"));
    assert_eq!(env_value(&got, "PINCAT_MESSAGE_BYTES"), Some("2"));
    let addr = env_value(&got, "PINCAT_PEER_ADDR").unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "SHELL",
        "JOB_TOKEN",
    ];
    for line in got.lines() {
        let name = line.split('=').next().unwrap();
        let ours = name.starts_with("PINCAT_PEER_") || name.starts_with("PINCAT_MESSAGE_");
        assert!(
            ours || allowed.contains(&name),
            "{name} is off the allowlist"
        );
    }
}

#[test]
fn a_hung_handler_is_killed_at_its_timeout_and_the_sender_told() {
    let dir = tempfile::tempdir().unwrap();
    let h = script(dir.path(), "hang.sh", "cat > /dev/null; sleep 611");
    let args = ["--keep-open", "--exec-timeout", "1s"];
    let mut srv = serve(dir.path(), &args, &[&h]);
    let o = send(&srv.addr, &srv.fingerprint, &["--json"], b"work");
    assert_eq!(o.status.code(), Some(12), "{}", text(&o.stderr));
    let err = events(&o)
        .into_iter()
        .find(|e| e["event"] == "error")
        .unwrap();
    assert_eq!(err["handler_status"], "timeout", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("timeout"),
        "{err}"
    );
    let ev = srv.wait_event("error");
    assert_eq!(ev["handler_status"], "timeout", "{ev}");
    // Its group is gone too: no `sleep 611` left behind.
    let pgrep = || {
        std::process::Command::new("pgrep")
            .args(["-f", "sleep 611"])
            .output()
            .map(|o| o.stdout.is_empty())
            .unwrap_or(true)
    };
    assert!(wait_until(WAIT, pgrep), "the hung handler was not killed");
}

#[test]
fn exec_refuses_raw_mode_on_the_command_line() {
    let o = crate::util::pincat()
        .args(["serve", "--raw", "--exec", "cat"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--raw"), "{}", text(&o.stderr));
    let o = crate::util::pincat()
        .args(["serve", "--exec-stream"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn a_ca_issued_sender_is_named_by_its_certificate() {
    use crate::ca::{issue, pincat_ca};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, ca_pem) = pincat_ca(d, "ca");
    let ci = issue(d, "ci.id", &ca, &["ci-runner-7"]);
    let id = ["--identity", ci.to_str().unwrap()];
    for named in [false, true] {
        let mut args = vec!["--keep-open", "--allow-ca", ca_pem.to_str().unwrap()];
        if named {
            args.extend(["--allow-name", "ci-runner-7"]);
        }
        let srv = serve(d, &args, &["env"]);
        let o = send(&srv.addr, &srv.fingerprint, &id, b"done");
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let env = text(&o.stdout);
        assert_eq!(
            env_value(&env, "PINCAT_PEER_NAME"),
            Some("ci-runner-7"),
            "{env}"
        );
    }
}

#[test]
fn a_receiver_that_stops_ends_its_running_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let h = script(
        dir.path(),
        "long.sh",
        r#"cat > /dev/null; touch "$PWD/began"; sleep 623"#,
    );
    let mut srv = serve(dir.path(), &["--keep-open"], &[&h]);
    let mut child = crate::util::cli::send_cmd(&srv.addr, &srv.fingerprint)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let began = dir.path().join("began");
    assert!(wait_until(WAIT, || began.exists()), "the handler never ran");
    srv.signal(15);
    let (code, _) = srv.wait_exit();
    assert_eq!(code, Some(130));
    // Never confirmed: the receiver said its handler was ended, or went away.
    let o = crate::util::wait_output(child, WAIT);
    assert!(
        matches!(o.status.code(), Some(7 | 12)),
        "{}",
        text(&o.stderr)
    );
    let gone = || {
        std::process::Command::new("pgrep")
            .args(["-f", "sleep 623"])
            .output()
            .map(|o| o.stdout.is_empty())
            .unwrap_or(true)
    };
    assert!(wait_until(WAIT, gone), "the handler outlived its receiver");
}

#[test]
fn exec_into_a_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plain"), b"x").unwrap();
    let o = crate::util::pincat()
        .args(["serve", "--out", "plain", "--exec", "cat"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("not a directory"),
        "{}",
        text(&o.stderr)
    );
}
