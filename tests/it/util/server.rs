//! A running `pincat serve --json` for a test: started on a loopback port
//! it picked itself, its JSON events read as they come, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{WAIT, pincat, process, wait_until};

/// A running `pincat serve --json`, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub fingerprint: String,
    /// The code dialers must prove (listeners in the default mode).
    pub code: Option<String>,
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

    /// As [`Server::start_with`], listening on `listen`.
    pub fn start_on_with(
        listen: &str,
        dir: &Path,
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        Self::spawn(listen, dir, args, adjust)
    }

    fn spawn(listen: &str, dir: &Path, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Server {
        Self::spawn_verb("serve", listen, dir, args, Stdio::null(), adjust)
    }

    /// Starts `pincat VERB --listen 127.0.0.1:0 --json ARGS` (offer, pipe,
    /// forward...) in `dir` with `stdin`, and waits for its listening event.
    pub fn listen(verb: &str, dir: &Path, args: &[&str], stdin: Stdio) -> Server {
        Self::spawn_verb(verb, "127.0.0.1:0", dir, args, stdin, |_| {})
    }

    /// As [`Server::listen`], with a hook to adjust the command (environment...).
    pub fn listen_with(
        verb: &str,
        dir: &Path,
        args: &[&str],
        stdin: Stdio,
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        Self::spawn_verb(verb, "127.0.0.1:0", dir, args, stdin, adjust)
    }

    /// As [`Server::listen_with`], listening on `listen` (stdin null).
    pub fn listen_at(
        verb: &str,
        listen: &str,
        dir: &Path,
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        Self::spawn_verb(verb, listen, dir, args, Stdio::null(), adjust)
    }

    fn spawn_verb(
        verb: &str,
        listen: &str,
        dir: &Path,
        args: &[&str],
        stdin: Stdio,
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        let mut cmd = pincat();
        cmd.args([verb, "--listen", listen, "--json"]).args(args);
        adjust(&mut cmd);
        Self::launch(cmd, dir, stdin)
    }

    /// Starts `cmd` (a listening verb with --json, as the caller built it:
    /// behind a relay, in a network namespace...) in `dir` with `stdin`,
    /// and waits for its listening event (`seen[0]`).
    pub fn launch(mut cmd: Command, dir: &Path, stdin: Stdio) -> Server {
        let mut child = cmd
            .current_dir(dir)
            .stdin(stdin)
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
        let addr = first["addr"].as_str().unwrap().to_string();
        let code = first["code"].as_str().map(str::to_string);
        // A port can be reused by a later listener: what it admits is
        // whatever this one printed.
        match &code {
            Some(c) => remember_code(&addr, c),
            None => forget_code(&addr),
        }
        Server {
            addr,
            fingerprint: first["fingerprint"].as_str().unwrap().to_string(),
            code,
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

    /// Remembers the events printed so far, waiting until none has come for
    /// `quiet`.
    pub fn drain(&mut self, quiet: Duration) {
        while let Ok(v) = self.events.recv_timeout(quiet) {
            self.seen.push(v);
        }
    }

    /// Waits for the server to exit by itself; returns its exit code and stdout.
    pub fn wait_exit(&mut self) -> (Option<i32>, Vec<u8>) {
        assert!(
            wait_until(WAIT, || !self.is_running()),
            "serve did not exit"
        );
        let code = self.child.try_wait().unwrap().and_then(|st| st.code());
        let out = self
            .stdout
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        self.drain(Duration::from_millis(200));
        (code, out)
    }

    /// Whether the server is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
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
        process::signal(self.child.id(), sig);
    }
}

/// The codes of the listeners tests started, by address: the dialing
/// helpers add `--code` for a listener in the default mode, so every test
/// that dials one proves its code as a user would.
static CODES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn remember_code(addr: &str, code: &str) {
    let mut c = CODES.lock().unwrap_or_else(|p| p.into_inner());
    c.retain(|(a, _)| a != addr);
    c.push((addr.to_string(), code.to_string()));
}

fn forget_code(addr: &str) {
    let mut c = CODES.lock().unwrap_or_else(|p| p.into_inner());
    c.retain(|(a, _)| a != addr);
}

/// Lets dialers of `alias` (a relay in front of `addr`) prove `addr`'s code.
pub fn share_code(alias: &str, addr: &str) {
    if let Some(c) = code_for(addr) {
        remember_code(alias, &c);
    }
}

/// The code of the listener a test started at `addr`, if it has one.
pub fn code_for(addr: &str) -> Option<String> {
    let c = CODES.lock().unwrap_or_else(|p| p.into_inner());
    c.iter()
        .rev()
        .find(|(a, _)| a == addr)
        .map(|(_, code)| code.clone())
}

/// `--code CODE` for the listener at `addr`, or nothing.
pub fn code_args(addr: &str) -> Vec<String> {
    code_for(addr)
        .map(|c| vec!["--code".into(), c])
        .unwrap_or_default()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
