//! Relays for tests: `pincat relay` and the PyPI transit relay on
//! loopback, and hostile relays that answer `ok` and then do what a
//! relay must never get away with.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{WAIT, free_port, pincat, wait_until};

/// A running `pincat relay --json`, killed on drop.
pub struct RelayProc {
    pub child: Child,
    pub addr: String,
    pub events: Receiver<Value>,
    /// Every stderr line, as printed (for what it must never show).
    pub lines: Receiver<String>,
}

impl RelayProc {
    /// Starts `pincat relay --listen 127.0.0.1:0 --json ARGS`.
    pub fn start(args: &[&str]) -> RelayProc {
        let mut cmd = pincat();
        cmd.args(["relay", "--listen", "127.0.0.1:0", "--json"])
            .args(args);
        Self::launch(cmd)
    }

    /// Starts `pincat relay --listen ADDR --json` (a relay restarted on
    /// the address it had).
    pub fn start_on(addr: &str) -> RelayProc {
        let mut cmd = pincat();
        cmd.args(["relay", "--listen", addr, "--json"]);
        Self::launch(cmd)
    }

    /// Starts `cmd` (a `pincat relay --json`) and waits for it to listen.
    pub fn launch(mut cmd: Command) -> RelayProc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pincat relay");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let (ltx, lrx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = ltx.send(line.clone());
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("relay printed a non-JSON line: {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(WAIT).expect("no relay-listening event");
        assert_eq!(first["event"], "relay-listening", "{first}");
        RelayProc {
            addr: first["addr"].as_str().unwrap().to_string(),
            child,
            events: rx,
            lines: lrx,
        }
    }

    /// Waits for the next event named `name` (others are dropped).
    pub fn wait_event(&self, name: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {name} event from the relay"));
            if v["event"] == name {
                return v;
            }
        }
    }

    /// Every event printed until none came for `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(v) = self.events.recv_timeout(quiet) {
            out.push(v);
        }
        out
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the PyPI transit relay's `twist` is: `$PINCAT_TWIST` (set by
/// `.ci/run`, which installs it into a virtual environment), else `twist`
/// on the PATH. `None` (and a message; a failure under CI=true) when
/// neither exists.
pub fn twist() -> Option<String> {
    let found = std::env::var("PINCAT_TWIST")
        .ok()
        .filter(|p| std::path::Path::new(p).exists())
        .or_else(|| super::tools::cmd_exists("twist").then(|| "twist".to_string()));
    if found.is_none() {
        let why = "the PyPI magic-wormhole-transit-relay (twist) is not installed; .ci/run installs it and sets PINCAT_TWIST";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

/// The PyPI transit relay on a loopback port, killed on drop.
pub struct TransitRelay {
    pub child: Child,
    pub addr: String,
}

impl TransitRelay {
    /// Starts `twist transitrelay` on a free loopback port, waiting until
    /// it accepts connections; `None` when it is not installed.
    pub fn start() -> Option<TransitRelay> {
        let twist = twist()?;
        let port = free_port();
        let child = Command::new(twist)
            .args([
                "transitrelay",
                &format!("--port=tcp:{port}:interface=127.0.0.1"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn twist transitrelay");
        let addr = format!("127.0.0.1:{port}");
        let up = wait_until(WAIT, || TcpStream::connect(&addr).is_ok());
        assert!(up, "the transit relay did not start listening");
        Some(TransitRelay { child, addr })
    }
}

impl Drop for TransitRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a relay request line, one byte at a time (what follows is not ours).
fn request_line(s: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).ok()? == 1 {
        if b[0] == b'\n' {
            return String::from_utf8(line).ok();
        }
        line.push(b[0]);
        if line.len() > 200 {
            return None;
        }
    }
    None
}

/// Copies both ways until both ends close.
fn splice(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = thread::spawn(move || {
        let _ = std::io::copy(&mut b2, &mut a2);
        let _ = a2.shutdown(Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = std::io::copy(&mut a, &mut b);
    let _ = b.shutdown(Shutdown::Write);
    let _ = t.join();
}

/// A hostile relay on loopback (it runs until the test process ends).
pub struct FakeRelay {
    pub addr: String,
}

impl FakeRelay {
    /// A relay that terminates the session itself: every connection is
    /// told `ok` at once and spliced to `to`, a listener of its own.
    pub fn mitm(to: String) -> FakeRelay {
        Self::serve(move |mut c, _| {
            request_line(&mut c)?;
            c.write_all(b"ok\n").ok()?;
            Some((c, TcpStream::connect(&to).ok()?))
        })
    }

    /// A relay that holds the first `hold` registrations and pairs every
    /// later connection with the last one held, whatever its token (that
    /// one is then replaced by the next that comes).
    pub fn misdirect(hold: usize) -> FakeRelay {
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        Self::serve(move |mut c, _| {
            request_line(&mut c)?;
            let mut h = held.lock().unwrap();
            if h.len() < hold {
                h.push(c);
                return None;
            }
            let other = h.pop()?;
            c.write_all(b"ok\n").ok()?;
            (&other).write_all(b"ok\n").ok()?;
            Some((c, other))
        })
    }

    fn serve(
        pair: impl Fn(TcpStream, usize) -> Option<(TcpStream, TcpStream)> + Send + Sync + 'static,
    ) -> FakeRelay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let pair = std::sync::Arc::new(pair);
        thread::spawn(move || {
            for (n, c) in l.incoming().flatten().enumerate() {
                let pair = pair.clone();
                thread::spawn(move || {
                    if let Some((a, b)) = pair(c, n) {
                        splice(a, b);
                    }
                });
            }
        });
        FakeRelay { addr }
    }
}
