//! Fault injection: peers killed at random points, and a receiver whose disk
//! fills up. Whatever happens: never a sender exit 0 without a complete,
//! identical file, and never a partial file under its final name.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::util::cli::send_cmd;
use crate::util::data::Rng;
use crate::util::fs::Tmpfs;
use crate::util::process::{self, Limit};
use crate::util::{Server, WAIT, random_bytes, send, sha256, text, wait_output};

/// No file but complete ones; returns whether `name` arrived (identical).
fn check_dir(dir: &Path, name: &str, want: &[u8]) -> bool {
    let mut arrived = false;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let fname = e.file_name().to_string_lossy().into_owned();
        assert_eq!(fname, name, "unexpected file {fname} in {}", dir.display());
        let got = fs::read(e.path()).unwrap();
        assert_eq!(got.len(), want.len(), "partial file under the final name");
        assert_eq!(
            sha256(&got),
            sha256(want),
            "corrupted file under the final name"
        );
        arrived = true;
    }
    arrived
}

fn trial(seed: u64) -> (&'static str, bool, Option<i32>) {
    // Not `seed` itself: the payload is made from that.
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let size = 1 + rng.below(40 << 20) as usize;
    let data = random_bytes(size, seed);
    let file = src.path().join("payload.bin");
    fs::write(&file, &data).unwrap();
    let mut srv = Server::start(dst.path(), &["--out", "in"]);
    let mut tx = send_cmd(&srv.addr, &srv.fingerprint)
        .args(["--idle-timeout", "10s"])
        .arg(&file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A third of the kills land anywhere from start-up to the handshake; the
    // rest while data flows.
    if rng.below(3) != 0 {
        srv.wait_event("transfer-started");
    }
    thread::sleep(Duration::from_micros(rng.below(30_000)));
    let victim = if rng.below(2) == 0 {
        "sender"
    } else {
        "receiver"
    };
    if victim == "sender" {
        let _ = tx.kill();
    } else {
        srv.kill();
    }
    let out = wait_output(tx, WAIT);
    if victim == "sender" {
        srv.drain(Duration::from_millis(300));
        if srv.seen_named("transfer-started").is_empty() {
            // Killed before its offer was taken, perhaps before it even
            // connected: a one-shot receiver rightly keeps waiting for a
            // sender, so it is stopped here.
            srv.kill();
        } else {
            srv.wait_exit();
        }
    }
    let arrived =
        dst.path().join("in").exists() && check_dir(&dst.path().join("in"), "payload.bin", &data);
    if out.status.code() == Some(0) {
        assert!(
            arrived,
            "seed {seed}: sender exit 0 but the file is not there"
        );
    }
    (victim, arrived, out.status.code())
}

fn trials(n: u64) {
    let mut completed = 0;
    for seed in 1..=n {
        let (victim, arrived, code) = trial(seed);
        eprintln!("trial {seed}: killed {victim}, sender exit {code:?}, file arrived: {arrived}");
        completed += u64::from(arrived);
    }
    eprintln!("{completed} of {n} transfers completed before the kill");
}

#[test]
fn random_kills_short() {
    trials(8);
}

#[test]
#[ignore = "long: 50 trials; run with --ignored"]
fn random_kills_long() {
    trials(50);
}

/// Starts `pincat serve` with a 1 MiB file-size limit (SIGXFSZ ignored, so
/// writes fail with EFBIG as on a full disk).
fn serve_with_fsize_limit(dir: &Path, args: &[&str]) -> Server {
    Server::start_with(dir, args, |cmd: &mut Command| {
        process::ignore_signal(cmd, libc::SIGXFSZ);
        process::lower_limit(cmd, Limit::FileSize, 1 << 20);
    })
}

/// The receiver reported the failure as a full disk, with its stable code.
fn assert_reported_no_space(srv: &Server) {
    assert!(
        srv.seen_named("error")
            .iter()
            .any(|e| e["code"] == "no-space"),
        "{:?}",
        srv.seen
    );
}

#[test]
fn full_disk_gives_clear_errors_and_leaves_nothing() {
    // A stream into a file, and a file into a directory.
    let dst = tempfile::tempdir().unwrap();
    let mut srv = serve_with_fsize_limit(dst.path(), &["--out", "big.bin"]);
    let r = send(&srv.addr, &srv.fingerprint, &[], &random_bytes(4 << 20, 71));
    assert_eq!(r.status.code(), Some(4), "{}", text(&r.stderr));
    assert!(
        text(&r.stderr).contains("failed to store"),
        "{}",
        text(&r.stderr)
    );
    let (code, _) = srv.wait_exit();
    assert_ne!(code, Some(0));
    assert_reported_no_space(&srv);
    assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 0, "leftovers");

    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("f.bin");
    fs::write(&f, random_bytes(3 << 20, 72)).unwrap();
    let mut srv = serve_with_fsize_limit(dst.path(), &["--out", "in"]);
    let r = send(&srv.addr, &srv.fingerprint, &[f.to_str().unwrap()], b"");
    assert_eq!(r.status.code(), Some(4), "{}", text(&r.stderr));
    srv.wait_exit();
    assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 0, "leftovers");
}

#[test]
fn full_tmpfs_when_mountable() {
    let dst = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&dst.path().join("small"), "1m") else {
        return;
    };
    let mnt = tmpfs.path();
    let mut srv = Server::start(mnt, &["--out", "x.bin"]);
    let r = send(&srv.addr, &srv.fingerprint, &[], &random_bytes(3 << 20, 73));
    assert_eq!(r.status.code(), Some(4), "{}", text(&r.stderr));
    srv.wait_exit();
    assert_reported_no_space(&srv);
    assert_eq!(fs::read_dir(mnt).unwrap().count(), 0, "leftovers");
}

#[test]
fn no_space_is_reported_as_such_with_much_data_in_flight() {
    // 64 MiB streamed at a receiver that can store 1 MiB: its ERROR must
    // reach the sender even though the sender has megabytes still queued.
    let dst = tempfile::tempdir().unwrap();
    let data = random_bytes(64 << 20, 74);
    for round in 0..3 {
        let mut srv = serve_with_fsize_limit(dst.path(), &["--out", "big.bin"]);
        let r = send(&srv.addr, &srv.fingerprint, &[], &data);
        assert_eq!(
            r.status.code(),
            Some(4),
            "round {round}: {}",
            text(&r.stderr)
        );
        srv.wait_exit();
        assert_reported_no_space(&srv);
        assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 0, "leftovers");
    }
}

#[test]
fn free_space_is_promised_across_concurrent_transfers() {
    let dst = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&dst.path().join("small"), "8m") else {
        return;
    };
    let mnt = tmpfs.path();
    let srv = Server::start(mnt, &["--keep-open", "--out", "in"]);
    let src = tempfile::tempdir().unwrap();
    // Each fits alone; all four together do not.
    let senders: Vec<_> = (0..4u64)
        .map(|i| {
            let f = src.path().join(format!("f{i}.bin"));
            fs::write(&f, random_bytes(3 << 20, 80 + i)).unwrap();
            let (addr, fp) = (srv.addr.clone(), srv.fingerprint.clone());
            std::thread::spawn(move || send(&addr, &fp, &[f.to_str().unwrap()], b""))
        })
        .collect();
    let results: Vec<_> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let mut stored = 0;
    for (i, r) in results.iter().enumerate() {
        match r.status.code() {
            Some(0) => {
                stored += 1;
                let got = fs::read(mnt.join(format!("in/f{i}.bin"))).unwrap();
                assert_eq!(got, random_bytes(3 << 20, 80 + i as u64));
            }
            // Refused up front, before any data: never a failure midway.
            Some(4) => assert!(text(&r.stderr).contains("free"), "{}", text(&r.stderr)),
            c => panic!("sender {i} exited {c:?}: {}", text(&r.stderr)),
        }
    }
    assert!(stored >= 1, "no transfer succeeded");
    assert!(stored < 4, "four 3 MiB files cannot fit in 8 MiB");
}
