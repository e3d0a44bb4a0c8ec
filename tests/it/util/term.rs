//! What a person sees: a listening verb in its human form (not --json),
//! its stderr read line by line, and pseudo-terminals to stand in for the
//! terminal a person runs pincat in.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{WAIT, pincat, wait_until};

/// A pseudo-terminal: the side a program writes to (`tty`, to hand to a
/// child as stdout or stderr) and everything written to it so far.
pub struct Pty {
    tty: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// Opens a pseudo-terminal and starts reading what is written to it.
    pub fn open() -> Pty {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two descriptors into the given ints; the
        // name, termios and window size are optional (null).
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here only.
        let (master, tty) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        thread::spawn(move || {
            let mut master = master;
            let mut buf = [0u8; 4096];
            // EIO once every writer is gone: the end.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty { tty, seen }
    }

    /// The terminal, for a child's stdout or stderr.
    pub fn stdio(&self) -> Stdio {
        Stdio::from(self.tty.try_clone().unwrap())
    }

    /// Everything written to the terminal so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal shows `what`; whether it did.
    pub fn wait_for(&self, what: &str) -> bool {
        wait_until(WAIT, || self.text().contains(what))
    }
}

/// A listening verb run as a person runs it: human lines on stderr.
pub struct Human {
    pub child: Child,
    pub addr: String,
    pub fingerprint: String,
    /// `--code CODE` when the listener made a code.
    pub code_args: Vec<String>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Human {
    /// Starts `pincat VERB --listen 127.0.0.1:0 ARGS` in `dir` with its
    /// stderr piped, and reads its listening lines.
    pub fn listen(verb: &str, dir: &Path, args: &[&str], stdin: Stdio) -> Human {
        let mut cmd = pincat();
        cmd.args([verb, "--listen", "127.0.0.1:0"]).args(args);
        Self::launch(cmd, dir, stdin, Stdio::null())
    }

    /// Starts `cmd` (a listening verb in human form) with stderr piped and
    /// `stdout`, and waits for its fingerprint line.
    pub fn launch(mut cmd: Command, dir: &Path, stdin: Stdio, stdout: Stdio) -> Human {
        let mut child = cmd
            .current_dir(dir)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pincat");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut h = Human {
            child,
            addr: String::new(),
            fingerprint: String::new(),
            code_args: Vec::new(),
            lines: rx,
            seen: Vec::new(),
        };
        let on = h.wait_line("pincat: listening on ");
        h.addr = on["pincat: listening on ".len()..].to_string();
        let fp = h.wait_line("pincat: fingerprint sha256:");
        h.fingerprint = fp["pincat: fingerprint sha256:".len()..].to_string();
        let command = h.wait_line("  pincat ");
        if let Some((_, code)) = command.split_once(" --code ") {
            h.code_args = vec!["--code".into(), code.trim().to_string()];
        }
        h
    }

    /// Waits for the next line that contains `what`, remembering all lines.
    pub fn wait_line(&mut self, what: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with {what:?}; saw {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
    }

    /// Waits for the process to exit by itself; its exit code, with every
    /// line it printed remembered.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let exited = wait_until(WAIT, || self.child.try_wait().unwrap().is_some());
        assert!(exited, "did not exit; saw {:#?}", self.seen);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.child.wait().unwrap().code()
    }

    /// Every line seen so far, one per line.
    pub fn text(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Human {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
