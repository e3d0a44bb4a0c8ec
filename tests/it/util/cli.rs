//! Running the real `pincat` binary as a client: the command, input fed on
//! stdin, and waiting for it with a bound.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use super::{Server, WAIT, wait_until};

/// A `pincat` command.
pub fn pincat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pincat"))
}

/// `pincat send ADDR --pin PIN`, for the caller to add arguments to and
/// spawn: stdin and stdout null, stderr piped.
pub fn send_cmd(addr: &str, pin: &str) -> Command {
    let mut cmd = pincat();
    cmd.args(["send", addr, "--pin", pin])
        .args(super::server::code_args(addr))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `pincat send ADDR --pin PIN ARGS` with `input` on stdin.
pub fn send(addr: &str, pin: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = send_cmd(addr, pin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn pincat send");
    let writer = feed(&mut child, input);
    let out = wait_output(child, WAIT);
    let _ = writer.join();
    out
}

/// Runs `pincat send` of `paths` to `srv`, bounded.
pub fn send_paths(srv: &Server, paths: &[&Path]) -> Output {
    let child = send_cmd(&srv.addr, &srv.fingerprint)
        .args(paths)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn pincat send");
    wait_output(child, WAIT)
}

/// Runs `pincat send EXTRA ADDR --pin FP [--code CODE] PATHS` to `srv`
/// through `addr` (its own address, or a proxy's), bounded by four times
/// the usual wait (a large tree).
pub fn send_through(srv: &Server, addr: &str, extra: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = super::pincat();
    cmd.arg("send").args(extra);
    cmd.args([addr, "--pin", &srv.fingerprint]);
    if let Some(c) = &srv.code {
        cmd.args(["--code", c]);
    }
    let child = cmd
        .args(paths)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pincat send");
    wait_output(child, WAIT * 4)
}

/// Runs `pincat get ADDR --pin FP [--code CODE] ARGS` in `dir`, bounded.
pub fn get_in(addr: &str, fp: &str, dir: &Path, args: &[&str]) -> Output {
    let child = super::pincat()
        .args(["get", addr, "--pin", fp])
        .args(super::server::code_args(addr))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pincat get");
    wait_output(child, WAIT)
}

/// Starts a sender whose stdin the test feeds by hand.
pub fn spawn_sender(addr: &str, pin: &str) -> Child {
    send_cmd(addr, pin)
        .args(["--idle-timeout", "20s"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn pincat send")
}

/// Runs `pincat ARGS` with no stdin, bounded in time; `adjust` can change
/// the command first (user, limits).
pub fn run(args: &[&str], adjust: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = pincat();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    adjust(&mut cmd);
    wait_output(cmd.spawn().expect("spawn pincat"), WAIT)
}

/// Writes `input` to the child's piped stdin from a thread, then closes it,
/// so a child that answers while it reads cannot deadlock the test.
pub fn feed(child: &mut Child, input: &[u8]) -> thread::JoinHandle<()> {
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let data = input.to_vec();
    thread::spawn(move || {
        let _ = stdin.write_all(&data);
    })
}

/// Waits for a child with a bound, killing it if it overstays. Its output
/// is read while it runs, so a child writing more than a pipe holds never
/// blocks on it.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    fn drain(r: Option<impl std::io::Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    if !wait_until(limit, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "process did not exit within {limit:?}; stderr: {}",
            String::from_utf8_lossy(&err.join().unwrap_or_default())
        );
    }
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs `pincat identity new NAME` in `dir`; returns the fingerprint it prints.
pub fn identity_new(dir: &std::path::Path, name: &str) -> String {
    let out = pincat()
        .args(["identity", "new", name])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", super::text(&out.stderr));
    super::text(&out.stdout).trim().to_string()
}
