//! Trees of any size: a 200,000-file tree goes in one transfer (in parts
//! of 50,000 entries), arrives whole, and neither side's memory grows past
//! 64 MiB on the way.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::util::fs::Tmpfs;
use crate::util::{Server, pincat, text};

const FILES: usize = 200_000;
const PER_DIR: usize = 1000;

/// The highest VmHWM `pid` reports until `stop` (kept in `peak`, KiB).
fn watch_peak(pid: u32, stop: Arc<AtomicBool>, peak: Arc<AtomicU64>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok(s) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                break;
            };
            let hwm = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            peak.fetch_max(hwm, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(20));
        }
    })
}

fn make_tree(root: &Path) {
    for d in 0..FILES / PER_DIR {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..PER_DIR {
            fs::write(
                dir.join(format!("file-{f:04}.txt")),
                &b"0123456789"[..f % 11],
            )
            .unwrap();
        }
    }
}

#[test]
fn a_200000_file_tree_arrives_whole_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs_) = Tmpfs::mount(&tmp.path().join("fs"), "4g") else {
        return;
    };
    let base = fs_.path();
    make_tree(&base.join("tree"));
    let mut srv = Server::start(base, &["--out", "dst"]);
    let (stop, srv_peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let srv_watch = watch_peak(srv.child.id(), stop.clone(), srv_peak.clone());
    let mut cmd = pincat();
    cmd.args(["send", &srv.addr, "--pin", &srv.fingerprint])
        .args(crate::util::server::code_args(&srv.addr))
        .arg(base.join("tree"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let send_peak = Arc::new(AtomicU64::new(0));
    let send_watch = watch_peak(child.id(), stop.clone(), send_peak.clone());
    let out = crate::util::wait_output(child, crate::util::WAIT * 5);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let done = srv.wait_event("transfer-done");
    stop.store(true, Ordering::SeqCst);
    let _ = (srv_watch.join(), send_watch.join());
    assert_eq!(done["files"], FILES);
    assert_eq!(srv.wait_exit().0, Some(0));
    let (s, r) = (
        send_peak.load(Ordering::SeqCst),
        srv_peak.load(Ordering::SeqCst),
    );
    eprintln!(
        "{FILES} files: peak RSS sender {} KiB, receiver {} KiB",
        s, r
    );
    // Every file, with its bytes.
    for d in [0, 99, 199] {
        for f in [0, 7, 999] {
            let rel = format!("d{d:03}/file-{f:04}.txt");
            let got = fs::read(base.join("dst/tree").join(&rel)).unwrap();
            assert_eq!(got, &b"0123456789"[..f % 11], "{rel}");
        }
    }
    let count: usize = fs::read_dir(base.join("dst/tree"))
        .unwrap()
        .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(count, FILES);
    assert!(s > 0 && s < 64 << 10, "sender peak {s} KiB");
    assert!(r > 0 && r < 64 << 10, "receiver peak {r} KiB");
}
