//! The paste-ready line of every listening verb, in every admission mode
//! (a code, `--allow`, `--allow-ca`, and `serve --raw --allow-any`), taken
//! from the listener's own output and run as printed, with only its marked
//! placeholders filled in (`YOUR.id`, `LOCAL_PORT`).

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::cli::feed;
use crate::util::peers::echo_service;
use crate::util::process::KillOnDrop;
use crate::util::{
    Server, WAIT, free_port, pincat, random_bytes, run, text, wait_output, wait_until,
};

/// How a listener admits its dialer, and what the dialer then has.
enum Mode {
    Code,
    Allow,
    AllowCa,
    AllowAny,
}

/// The dialer's identity (for `--allow`, self-signed; for `--allow-ca`,
/// issued by a CA) and the listener's admission arguments.
struct Admission {
    args: Vec<String>,
    identity: Option<PathBuf>,
}

fn admission(dir: &Path, mode: &Mode) -> Admission {
    let id = dir.join("dialer.id");
    let path = id.to_str().unwrap().to_string();
    match mode {
        Mode::Code => Admission {
            args: vec![],
            identity: None,
        },
        Mode::AllowAny => Admission {
            args: vec!["--allow-any".into()],
            identity: None,
        },
        Mode::Allow => {
            let out = run(&["identity", "new", &path], |_| {});
            assert!(out.status.success(), "{}", text(&out.stderr));
            Admission {
                args: vec!["--allow".into(), text(&out.stdout).trim().to_string()],
                identity: Some(id),
            }
        }
        Mode::AllowCa => {
            let ca = dir.join("ca.id");
            let ca_path = ca.to_str().unwrap();
            assert!(
                run(&["identity", "new", "--ca", ca_path], |_| {})
                    .status
                    .success()
            );
            let pem = run(&["identity", "cert", ca_path], |_| {});
            fs::write(dir.join("ca.pem"), &pem.stdout).unwrap();
            let issued = run(
                &[
                    "identity", "new", &path, "--issuer", ca_path, "--name", "laptop",
                ],
                |_| {},
            );
            assert!(issued.status.success(), "{}", text(&issued.stderr));
            Admission {
                args: vec![
                    "--allow-ca".into(),
                    dir.join("ca.pem").to_str().unwrap().into(),
                    "--allow-name".into(),
                    "laptop".into(),
                ],
                identity: Some(id),
            }
        }
    }
}

/// The listener's printed line as a command: `pincat` is this build, and
/// the placeholders are filled.
fn as_printed(srv: &Server, field: &str, id: Option<&Path>, local: &str) -> Command {
    let line = srv.seen[0][field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {}", srv.seen[0]))
        .to_string();
    assert_eq!(line.contains("YOUR.id"), id.is_some(), "{line}");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("pincat"), "{line}");
    let mut cmd = pincat();
    for w in words {
        match w {
            "YOUR.id" => cmd.arg(id.unwrap()),
            w if w.contains("LOCAL_PORT") => cmd.arg(w.replace("127.0.0.1:LOCAL_PORT", local)),
            w => cmd.arg(w),
        };
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run_with(mut cmd: Command, dir: &Path, input: &[u8]) -> Output {
    let mut child = cmd.current_dir(dir).spawn().unwrap();
    let w = feed(&mut child, input);
    let out = wait_output(child, WAIT);
    let _ = w.join();
    out
}

fn serve_line(mode: Mode, extra: &[&str], field: &str) {
    let dir = tempfile::tempdir().unwrap();
    let adm = admission(dir.path(), &mode);
    let mut args: Vec<&str> = adm.args.iter().map(String::as_str).collect();
    args.extend(extra);
    let mut srv = Server::start(dir.path(), &args);
    let data = random_bytes(300_000, 31);
    let cmd = as_printed(&srv, field, adm.identity.as_deref(), "");
    let out = run_with(cmd, dir.path(), &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (code, got) = srv.wait_exit();
    assert_eq!(code, Some(0));
    assert!(got == data, "serve wrote {} bytes", got.len());
}

#[test]
fn serve_lines_work_as_printed() {
    serve_line(Mode::Code, &[], "command");
    serve_line(Mode::Code, &[], "short_command");
    serve_line(Mode::Allow, &[], "command");
    serve_line(Mode::AllowCa, &[], "command");
    serve_line(Mode::AllowAny, &["--raw"], "command");
}

fn offer_line(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let adm = admission(dir.path(), &mode);
    let data = random_bytes(200_000, 32);
    fs::write(dir.path().join("given.bin"), &data).unwrap();
    let mut args: Vec<&str> = adm.args.iter().map(String::as_str).collect();
    args.push("given.bin");
    let mut off = Server::listen("offer", dir.path(), &args, Stdio::null());
    let taker = dir.path().join("taker");
    fs::create_dir(&taker).unwrap();
    let cmd = as_printed(&off, "command", adm.identity.as_deref(), "");
    let out = run_with(cmd, &taker, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(fs::read(taker.join("given.bin")).unwrap() == data);
    assert_eq!(off.wait_exit().0, Some(0));
}

#[test]
fn offer_lines_work_as_printed() {
    offer_line(Mode::Code);
    offer_line(Mode::Allow);
    offer_line(Mode::AllowCa);
}

fn pipe_line(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let adm = admission(dir.path(), &mode);
    let theirs = random_bytes(100_000, 33);
    fs::write(dir.path().join("in"), &theirs).unwrap();
    let stdin = Stdio::from(fs::File::open(dir.path().join("in")).unwrap());
    let args: Vec<&str> = adm.args.iter().map(String::as_str).collect();
    let mut lis = Server::listen("pipe", dir.path(), &args, stdin);
    let cmd = as_printed(&lis, "command", adm.identity.as_deref(), "");
    let out = run_with(cmd, dir.path(), b"from the dialer");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == theirs,
        "the dialer got {} bytes",
        out.stdout.len()
    );
    assert_eq!(lis.wait_exit(), (Some(0), b"from the dialer".to_vec()));
}

#[test]
fn pipe_lines_work_as_printed() {
    pipe_line(Mode::Code);
    pipe_line(Mode::Allow);
    pipe_line(Mode::AllowCa);
}

fn forward_line(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let adm = admission(dir.path(), &mode);
    let (service, _) = echo_service(8);
    let mut args: Vec<&str> = adm.args.iter().map(String::as_str).collect();
    args.extend(["--to", &service]);
    let mut expose = Server::listen("forward", dir.path(), &args, Stdio::null());
    let local = format!("127.0.0.1:{}", free_port());
    let mut cmd = as_printed(&expose, "command", adm.identity.as_deref(), &local);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _using = KillOnDrop(cmd.current_dir(dir.path()).spawn().unwrap());
    let mut s = None;
    assert!(wait_until(WAIT, || {
        s = TcpStream::connect(&local).ok();
        s.is_some()
    }));
    let mut s = s.unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"forwarded as printed").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"forwarded as printed");
    expose.kill();
}

#[test]
fn forward_lines_work_as_printed() {
    forward_line(Mode::Code);
    forward_line(Mode::Allow);
    forward_line(Mode::AllowCa);
}
