//! `--serial`: handlers one at a time in the order their senders arrived,
//! spooled or streamed; a streamed message that waits for its turn still
//! reaches its handler whole.

use std::process::Output;
use std::time::Duration;

use super::{script, serve};
use crate::util::{WAIT, random_bytes, send, text};

#[test]
fn serial_handlers_run_one_at_a_time_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let h = script(
        dir.path(),
        "log.sh",
        r#"cat > /dev/null; echo "start $PINCAT_MESSAGE_NAME" >> "$PWD/log"
sleep 0.5; echo "end $PINCAT_MESSAGE_NAME" >> "$PWD/log""#,
    );
    for stream in [false, true] {
        let _ = std::fs::remove_file(dir.path().join("log"));
        let mut args = vec!["--keep-open", "--serial"];
        if stream {
            args.push("--exec-stream");
        }
        let srv = serve(dir.path(), &args, &[&h]);
        let names: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
        let to = (srv.addr.as_str(), srv.fingerprint.as_str());
        let outs: Vec<Output> = std::thread::scope(|s| {
            let mut hs = Vec::new();
            for n in &names {
                hs.push(s.spawn(move || send(to.0, to.1, &["--as", n], b"x")));
                // Each admitted well before the next starts.
                std::thread::sleep(Duration::from_millis(300));
            }
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in &outs {
            assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let want: Vec<String> = names
            .iter()
            .flat_map(|n| [format!("start {n}"), format!("end {n}")])
            .collect();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            want,
            "stream {stream}: {log}"
        );
    }
}

/// `--exec-stream --serial`: what arrives before its turn is spooled and
/// handed over first when the turn comes, the rest as it arrives.
#[test]
fn a_streamed_message_waiting_for_its_turn_reaches_its_handler_whole() {
    let dir = tempfile::tempdir().unwrap();
    let h = script(
        dir.path(),
        "keep.sh",
        r#"cat > "$PWD/got-$PINCAT_PEER_ADDR"; sleep 1"#,
    );
    let args = ["--keep-open", "--serial", "--exec-stream", "--allow-any"];
    let srv = serve(dir.path(), &args, &[&h]);
    let first = send(&srv.addr, &srv.fingerprint, &[], b"first");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    // The first handler sleeps after reading: the second message starts
    // while it runs, waits half sent, and goes on after the turn came.
    let (a, b) = (random_bytes(200_000, 1), random_bytes(300_000, 2));
    let blocker = std::thread::spawn({
        let (addr, fp) = (srv.addr.clone(), srv.fingerprint.clone());
        move || send(&addr, &fp, &[], b"blocker")
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut second = crate::util::cli::spawn_sender(&srv.addr, &srv.fingerprint);
    let mut stdin = second.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(&a).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stdin.write_all(&b).unwrap();
    drop(stdin);
    let o = crate::util::wait_output(second, WAIT);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(blocker.join().unwrap().status.code(), Some(0));
    let whole = [a, b].concat();
    let got: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("got-"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(got.len(), 3);
    assert!(got.contains(&whole), "the waiting message arrived whole");
}
