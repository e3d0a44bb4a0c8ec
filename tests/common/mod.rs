//! Helpers for integration tests: run the real `pincat` binary on loopback,
//! read its JSON events, and kill what is left on drop.
#![allow(dead_code)] // Each test crate uses a different subset.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(60);

/// A `pincat` command.
pub fn pincat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pincat"))
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// SHA-256 hex of bytes.
pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// A running `pincat serve --json`, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub fingerprint: String,
    pub events: Receiver<Value>,
    /// Everything the server printed on stdout, once it has exited.
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    pub seen: Vec<Value>,
}

impl Server {
    /// Starts `pincat serve --listen 127.0.0.1:0 --json ARGS` in `dir` and
    /// waits for its listening event.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        Self::start_on("127.0.0.1:0", dir, args)
    }

    /// As [`Server::start`], listening on `listen`.
    pub fn start_on(listen: &str, dir: &Path, args: &[&str]) -> Server {
        Self::spawn(listen, dir, args, |_| {})
    }

    /// As [`Server::start`], with a hook to adjust the command (limits, ...).
    pub fn start_with(dir: &Path, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Server {
        Self::spawn("127.0.0.1:0", dir, args, adjust)
    }

    fn spawn(listen: &str, dir: &Path, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Server {
        let mut cmd = pincat();
        cmd.args(["serve", "--listen", listen, "--json"]).args(args);
        adjust(&mut cmd);
        let mut child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pincat serve");
        let stderr = child.stderr.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("serve printed a non-JSON line: {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let out = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let first = rx.recv_timeout(WAIT).expect("no listening event");
        assert_eq!(first["event"], "listening", "{first}");
        Server {
            addr: first["addr"].as_str().unwrap().to_string(),
            fingerprint: first["fingerprint"].as_str().unwrap().to_string(),
            child,
            events: rx,
            stdout: Some(out),
            seen: vec![first],
        }
    }

    /// Waits for the next event named `name`, remembering all events seen.
    pub fn wait_event(&mut self, name: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {name} event; saw {:?}", self.seen));
            self.seen.push(v.clone());
            if v["event"] == name {
                return v;
            }
        }
    }

    /// Waits for the server to exit by itself; returns its exit code and stdout.
    pub fn wait_exit(&mut self) -> (Option<i32>, Vec<u8>) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let out = self
                    .stdout
                    .take()
                    .map(|h| h.join().unwrap())
                    .unwrap_or_default();
                while let Ok(v) = self.events.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(v);
                }
                return (st.code(), out);
            }
            assert!(Instant::now() < deadline, "serve did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Events seen so far with this name.
    pub fn seen_named(&self, name: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["event"] == name).collect()
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by number.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `pincat send ADDR --pin FP ARGS` with `input` on stdin.
pub fn send(addr: &str, pin: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = pincat()
        .args(["send", addr, "--pin", pin])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pincat send");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = wait_output(child, WAIT);
    let _ = writer.join();
    out
}

/// Waits for a child with a bound, killing it if it overstays.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "process did not exit within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Lists every path under `root`, relative, sorted, with file contents.
pub fn tree(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.push((rel, None));
                walk(root, &p, out);
            } else {
                out.push((rel, Some(std::fs::read(&p).unwrap())));
            }
        }
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A stderr as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
