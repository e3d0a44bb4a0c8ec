//! A message cut by a bare FIN (no END, no close_notify) never reaches a
//! handler as whole: none is started for a spooled one, and one fed as
//! the data arrives (`--exec-stream`) is ended with SIGTERM, no EOF.

use std::net::Shutdown;

use pincat::protocol::FrameType;

use super::{script, serve};
use crate::util::peers::HandSender;
use crate::util::{WAIT, send, text, wait_until};

/// Sends half a message, waits for `ready`, then sends only a TCP FIN.
fn cut_sender(srv: &crate::util::Server, ready: impl FnMut() -> bool) {
    let (mut h, t, _) = HandSender::offer(srv, &crate::util::wire::stream());
    assert_eq!(t, FrameType::Accept);
    h.data(b"half a message");
    assert!(wait_until(WAIT, ready));
    h.tls.sock.shutdown(Shutdown::Write).unwrap();
}

#[test]
fn a_message_cut_by_a_bare_fin_never_starts_a_handler() {
    let dir = tempfile::tempdir().unwrap();
    let h = script(
        dir.path(),
        "mark.sh",
        r#"cat > "$PWD/got"; echo ran > "$PWD/ran""#,
    );
    let mut srv = serve(dir.path(), &["--keep-open", "--allow-any"], &[&h]);
    cut_sender(&srv, || true);
    let ev = srv.wait_event("error");
    let msg = ev["message"].as_str().unwrap();
    assert!(msg.contains("no handler was started"), "{ev}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !dir.path().join("ran").exists(),
        "a cut message started a handler"
    );
    assert!(!dir.path().join("got").exists());
    // A whole one does.
    let o = send(&srv.addr, &srv.fingerprint, &[], b"whole");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(dir.path().join("got")).unwrap(), b"whole");
}

#[test]
fn a_cut_message_ends_a_streaming_handler_with_sigterm_and_no_eof() {
    let dir = tempfile::tempdir().unwrap();
    let h = script(
        dir.path(),
        "stream.sh",
        r#"trap 'echo term > "$PWD/term"; exit 0' TERM
cat > "$PWD/got"
echo eof > "$PWD/eof""#,
    );
    let args = ["--keep-open", "--allow-any", "--exec-stream"];
    let mut srv = serve(dir.path(), &args, &[&h]);
    let got = dir.path().join("got");
    // The handler has the first half before the cut.
    cut_sender(&srv, || {
        std::fs::metadata(&got).is_ok_and(|m| m.len() == 14)
    });
    let term = dir.path().join("term");
    assert!(wait_until(WAIT, || term.exists()), "no SIGTERM");
    let ev = srv.wait_event("error");
    assert_eq!(ev["code"], "handler", "{ev}");
    assert!(ev["message"].as_str().unwrap().contains("ended"), "{ev}");
    assert_eq!(
        std::fs::read(dir.path().join("got")).unwrap(),
        b"half a message"
    );
    assert!(
        !dir.path().join("eof").exists(),
        "the handler saw an end of file"
    );
    // A whole message streams through and ends with EOF and exit 0.
    std::fs::remove_file(&term).unwrap();
    let o = send(&srv.addr, &srv.fingerprint, &[], b"streamed whole");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read(dir.path().join("got")).unwrap(),
        b"streamed whole"
    );
    assert!(dir.path().join("eof").exists() && !term.exists());
}

#[test]
fn a_streaming_handler_that_never_reads_stalls_only_its_own_sender() {
    let dir = tempfile::tempdir().unwrap();
    let h = script(
        dir.path(),
        "picky.sh",
        r#"if [ "$PINCAT_MESSAGE_NAME" = stall ]; then sleep 30; else cat; fi"#,
    );
    let args = ["--keep-open", "--exec-stream", "--idle-timeout", "2s"];
    let srv = serve(dir.path(), &args, &[&h]);
    let big = crate::util::random_bytes(8 << 20, 9);
    let to = (srv.addr.as_str(), srv.fingerprint.as_str());
    std::thread::scope(|s| {
        let stalled = s.spawn(|| send(to.0, to.1, &["--as", "stall"], &big));
        // Others get through meanwhile.
        for i in 0..3 {
            let msg = format!("message {i}");
            let o = send(to.0, to.1, &["--as", "ok"], msg.as_bytes());
            assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
            assert_eq!(o.stdout, msg.as_bytes());
        }
        let o = stalled.join().unwrap();
        assert_eq!(o.status.code(), Some(12), "{}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("read none of its input"),
            "{}",
            text(&o.stderr)
        );
    });
}
