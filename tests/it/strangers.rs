//! Strangers who connect first to a listener in the default mode (a code):
//! a silent TLS client, one with a wrong code, one that aborts right after
//! the listener's PAKE message, one that sends frames or data before
//! proving anything. None of them gets a byte, nothing is stored, no
//! program starts, no forwarded connection opens; the real dialer with the
//! code then succeeds.

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use crate::util::peers::{
    ClientTls, channel_binding, connect, echo_service, prove_code, prove_code_over,
};
use crate::util::process::KillOnDrop;
use crate::util::wire;
use crate::util::{
    Server, WAIT, free_port, pincat, random_bytes, run, send, text, wait_output, wait_until,
};
use pincat::protocol;
use pincat::verify::{self, Presented};

/// The ways a stranger tries a listener before the real dialer comes.
#[derive(Clone, Copy, Debug)]
enum Stranger {
    /// Completes TLS and says nothing.
    Silent,
    /// Runs the PAKE with a wrong code.
    WrongCode,
    /// Runs the PAKE up to the listener's message, then hangs up.
    Aborts,
    /// Sends pincat frames (or, to a raw stream listener, data) first.
    Frames,
}

const ALL: [Stranger; 4] = [
    Stranger::Silent,
    Stranger::WrongCode,
    Stranger::Aborts,
    Stranger::Frames,
];

/// What a stranger sends when it skips the code: a whole transfer of a
/// planted file, or plain bytes to a pipe or a forwarded service.
const PLANTED: &[u8] = b"planted by a stranger";

fn planted_transfer() -> Vec<u8> {
    let offer = wire::files_offer(&[("planted.txt", PLANTED.len() as u64)]);
    let mut script = protocol::preamble().to_vec();
    script.extend(wire::offer_data_end(
        &offer,
        PLANTED,
        1,
        PLANTED.len() as u64,
    ));
    script
}

fn handshaken(addr: &str) -> ClientTls {
    let config = verify::client_config_first_use(None, Presented::default()).unwrap();
    let mut tls = connect(addr, config);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// Everything the listener sends until it closes (or stays silent for a
/// moment).
fn rest(tls: &mut ClientTls) -> Vec<u8> {
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = tls.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// A stream that lets the dialer's first message through, then fails every
/// later write: the PAKE ends right after the listener's message arrived.
struct AbortAfterShare<'a> {
    tls: &'a mut ClientTls,
    written: usize,
    read: usize,
}

impl Read for AbortAfterShare<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tls.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

impl Write for AbortAfterShare<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 {
            return Err(io::Error::other("the stranger hangs up"));
        }
        let n = self.tls.write(buf)?;
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tls.flush()
    }
}

impl Stranger {
    /// Tries `srv` as this stranger (sending `frames` as the one that skips
    /// the code) and returns every byte the listener sent it after its PAKE
    /// answer. Waits until the listener reported the refusal.
    fn visit(self, srv: &mut Server, frames: &[u8]) -> Vec<u8> {
        let mut tls = handshaken(&srv.addr);
        let got = match self {
            Stranger::Silent => rest(&mut tls),
            Stranger::WrongCode => {
                let r = prove_code(&mut tls, &srv.fingerprint, "wrong-guess-here");
                assert!(r.is_err(), "a wrong code was confirmed");
                rest(&mut tls)
            }
            Stranger::Aborts => {
                let binding = channel_binding(&tls);
                let mut a = AbortAfterShare {
                    tls: &mut tls,
                    written: 0,
                    read: 0,
                };
                let r = prove_code_over(&mut a, &binding, &srv.fingerprint, "wrong-guess-here");
                assert!(r.is_err());
                assert!(a.read > 0, "the listener sent its PAKE message");
                Vec::new()
            }
            Stranger::Frames => {
                let _ = tls.write_all(frames);
                let _ = tls.flush();
                rest(&mut tls)
            }
        };
        drop(tls);
        let ev = srv.wait_event("refused");
        let closed = matches!(self, Stranger::Silent) && ev["reason"] == "closed";
        assert!(ev["reason"] == "code" || closed, "{self:?}: {ev}");
        got
    }
}

/// Sends all four strangers to `srv` and checks none got `secret` (nor,
/// for a framed listener, anything but a refusal).
fn strangers_get_nothing(srv: &mut Server, frames: &[u8], secret: &[u8]) {
    for s in ALL {
        let got = s.visit(srv, frames);
        assert!(
            !got.windows(secret.len()).any(|w| w == secret),
            "{s:?} got the secret"
        );
        assert!(srv.is_running(), "{s:?} ended the listener");
    }
}

#[test]
fn serve_into_a_directory_stores_nothing_for_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "in"]);
    strangers_get_nothing(&mut srv, &planted_transfer(), b"no secret here");
    let inbox = dir.path().join("in");
    assert!(!inbox.exists() || fs::read_dir(&inbox).unwrap().next().is_none());
    fs::write(dir.path().join("real.txt"), b"the real file").unwrap();
    let out = crate::util::cli::send_paths(&srv, &[&dir.path().join("real.txt")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    let names: Vec<_> = fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["real.txt"]);
    assert_eq!(fs::read(inbox.join("real.txt")).unwrap(), b"the real file");
}

#[test]
fn serve_to_stdout_writes_only_the_real_senders_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    strangers_get_nothing(&mut srv, &planted_transfer(), b"no secret here");
    let out = send(&srv.addr, &srv.fingerprint, &[], b"real stream");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(srv.wait_exit(), (Some(0), b"real stream".to_vec()));
}

#[test]
fn offer_gives_strangers_no_byte_and_the_real_taker_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = random_bytes(100_000, 21);
    fs::write(dir.path().join("secret.bin"), &secret).unwrap();
    let mut off = Server::listen("offer", dir.path(), &["secret.bin"], Stdio::null());
    let get_first = protocol::preamble().to_vec();
    strangers_get_nothing(&mut off, &get_first, &secret[..32]);
    let code = off.code.clone().unwrap();
    let out = run(&["get", &off.addr, "--code", &code, "--out", "got"], |c| {
        c.current_dir(dir.path());
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(fs::read(dir.path().join("got/secret.bin")).unwrap() == secret);
    assert_eq!(off.wait_exit().0, Some(0));
    // The event the other tests look for to see that nothing was given.
    assert_eq!(off.seen_named("transfer-done").len(), 1, "{:?}", off.seen);
    assert_eq!(off.seen_named("transfer-started").len(), 1);
}

/// `pipe --listen` with `stdin` and `args`; the dialer sends `input`.
fn pipe_dial(srv: &Server, input: &[u8]) -> std::process::Output {
    let mut child = pincat()
        .args(["pipe", &srv.addr, "--code", srv.code.as_deref().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let w = crate::util::cli::feed(&mut child, input);
    let out = wait_output(child, WAIT);
    let _ = w.join();
    out
}

#[test]
fn pipe_listen_sends_strangers_none_of_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let secret = random_bytes(200_000, 22);
    fs::write(dir.path().join("in"), &secret).unwrap();
    let stdin = Stdio::from(fs::File::open(dir.path().join("in")).unwrap());
    let mut lis = Server::listen("pipe", dir.path(), &[], stdin);
    strangers_get_nothing(&mut lis, PLANTED, &secret[..32]);
    let out = pipe_dial(&lis, b"from the real dialer");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == secret,
        "the dialer got {} bytes",
        out.stdout.len()
    );
    assert_eq!(lis.wait_exit(), (Some(0), b"from the real dialer".to_vec()));
}

#[test]
fn pipe_listen_exec_starts_no_program_for_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let script = format!("echo started >> '{}'; exec cat", marker.display());
    let mut lis = Server::listen(
        "pipe",
        dir.path(),
        &["--exec", "sh", "-c", &script],
        Stdio::null(),
    );
    strangers_get_nothing(&mut lis, PLANTED, b"no secret here");
    assert!(!marker.exists(), "the program started for a stranger");
    let out = pipe_dial(&lis, b"echo me");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"echo me");
    assert_eq!(lis.wait_exit().0, Some(0));
    assert_eq!(fs::read_to_string(&marker).unwrap(), "started\n");
}

#[test]
fn forward_listen_opens_no_connection_for_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let (service, opened) = echo_service(16);
    let mut expose = Server::listen("forward", dir.path(), &["--to", &service], Stdio::null());
    strangers_get_nothing(&mut expose, PLANTED, b"no secret here");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(opened.load(Ordering::SeqCst), 0, "a stranger got through");
    let code = expose.code.clone().unwrap();
    let (local, using) = using_end(&expose.addr, &code);
    let _using = KillOnDrop(using);
    // The probe above may have opened one forwarded connection.
    let mut s = TcpStream::connect(&local).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"through").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"through");
    assert!(opened.load(Ordering::SeqCst) >= 1);
}

#[test]
fn aborts_right_after_the_listeners_message_count_and_end_a_one_shot_offer() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("secret.txt"), b"the secret").unwrap();
    let mut off = Server::listen("offer", dir.path(), &["secret.txt"], Stdio::null());
    for _ in 0..3 {
        let got = Stranger::Aborts.visit(&mut off, &[]);
        assert!(got.is_empty());
    }
    let (code, _) = off.wait_exit();
    assert_eq!(code, Some(10), "{:?}", off.seen);
    let out = run(
        &["get", &off.addr, "--code", off.code.as_deref().unwrap()],
        |c| {
            c.current_dir(dir.path());
        },
    );
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    assert!(
        off.seen_named("transfer-started").is_empty(),
        "nothing given: {:?}",
        off.seen
    );
}

/// A stream whose reads stall: the dialer sends its PAKE message and then
/// never reads the answer nor confirms.
struct Stall<'a>(&'a mut ClientTls);

impl Read for Stall<'_> {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        thread::sleep(Duration::from_secs(4));
        Err(io::Error::other("the stranger stalled"))
    }
}

impl Write for Stall<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[test]
fn a_stalled_attempt_makes_the_real_sender_wait_then_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--handshake-timeout", "2s"]);
    let (addr, fp) = (srv.addr.clone(), srv.fingerprint.clone());
    let staller = thread::spawn(move || {
        let mut tls = handshaken(&addr);
        let binding = channel_binding(&tls);
        let _ = prove_code_over(&mut Stall(&mut tls), &binding, &fp, "wrong-guess-here");
    });
    // The one-shot listener takes one attempt at a time: the real sender
    // is told to wait, waits, and gets in once the stalled one timed out.
    thread::sleep(Duration::from_millis(300));
    let out = send(&srv.addr, &srv.fingerprint, &[], b"real data");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("trying again"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(srv.wait_exit(), (Some(0), b"real data".to_vec()));
    staller.join().unwrap();
}

#[test]
fn silent_strangers_holding_connections_do_not_lock_out_the_real_dialer() {
    let dir = tempfile::tempdir().unwrap();
    // pipe --listen admits one peer at a time (--max-conns is 1 for it).
    let mut lis = Server::listen("pipe", dir.path(), &[], Stdio::null());
    let silent: Vec<ClientTls> = (0..3).map(|_| handshaken(&lis.addr)).collect();
    let out = pipe_dial(&lis, b"past the silent ones");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(lis.wait_exit(), (Some(0), b"past the silent ones".to_vec()));
    drop(silent);
}

#[test]
fn a_one_shot_listener_serving_its_peer_makes_another_with_the_code_wait() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("secret.txt"), b"the secret").unwrap();
    let mut off = Server::listen("offer", dir.path(), &["secret.txt"], Stdio::null());
    let code = off.code.clone().unwrap();
    // The first taker proves the code and holds its session.
    let mut first = handshaken(&off.addr);
    prove_code(&mut first, &off.fingerprint, &code).expect("the first proves the code");
    // A second one with the same (leaked) code gets nothing meanwhile.
    let second = pincat()
        .args(["get", &off.addr, "--code", &code, "--out", "second"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert!(!dir.path().join("second/secret.txt").exists());
    // The first goes away having taken nothing: the one-shot offer goes
    // on (as a one-shot serve does), and the one that waited with the code
    // is served only now, never beside the first.
    drop(first);
    let out = wait_output(second, WAIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("trying again"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read(dir.path().join("second/secret.txt")).unwrap(),
        b"the secret"
    );
    assert_eq!(off.wait_exit().0, Some(0));
    assert_eq!(
        off.seen_named("transfer-done").len(),
        1,
        "given: {:?}",
        off.seen
    );
}

/// `pincat forward --local` to `to` with `code`, once it listens: its
/// local address and the process (stderr piped).
fn using_end(to: &str, code: &str) -> (String, std::process::Child) {
    let local = format!("127.0.0.1:{}", free_port());
    let child = pincat()
        .args(["forward", "--local", &local, "--to", to, "--code", code])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(WAIT, || TcpStream::connect(&local).is_ok()));
    (local, child)
}

/// One local connection through a using end at `local`: what came back.
fn through(local: &str, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn a_using_end_pins_the_key_its_code_confirmed_and_stops_after_three_failures() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (service, _) = echo_service(16);
    let code = "acid-acorn-acre-zoom";
    let expose = |listen: &str| {
        Server::listen_at(
            "forward",
            listen,
            dir.path(),
            &["--to", &service, "--code", code],
            |c| {
                c.env("PINCAT_STATE_DIR", &state);
            },
        )
    };
    let mut first = expose("127.0.0.1:0");
    let addr = first.addr.clone();
    let (local, mut using) = using_end(&addr, code);
    assert_eq!(through(&local, b"one"), b"one");
    // Another key at that address, with the same code: the using end
    // pinned the first key, so nothing goes through.
    first.kill();
    let _second = expose(&addr);
    assert_eq!(through(&local, b"two"), b"", "an impostor was trusted");
    let _ = using.kill();
    let _ = using.wait();

    // A using end whose code is wrong stops after three exchanges (exit 9).
    let (local, using) = using_end(&addr, "wrong-guess-here");
    for _ in 0..3 {
        let _ = through(&local, b"guess");
    }
    let out = wait_output(using, WAIT);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
}

#[test]
fn parallel_local_connections_of_a_using_end_with_a_wrong_code_cost_three_guesses_at_most() {
    let dir = tempfile::tempdir().unwrap();
    let (service, opened) = echo_service(16);
    let mut expose = Server::listen("forward", dir.path(), &["--to", &service], Stdio::null());
    let (local, using) = using_end(&expose.addr, "wrong-guess-here");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let local = local.clone();
            thread::spawn(move || through(&local, b"guess"))
        })
        .collect();
    for c in clients {
        assert!(c.join().unwrap().is_empty());
    }
    let out = wait_output(using, WAIT);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    expose.drain(Duration::from_millis(500));
    let guesses = expose
        .seen_named("refused")
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("not confirmed")
        })
        .count();
    assert!(
        (1..=3).contains(&guesses),
        "{guesses} guesses: {:?}",
        expose.seen
    );
    assert_eq!(opened.load(Ordering::SeqCst), 0);
}
