//! A local user swaps a directory of the receiver's output for a symlink,
//! again and again, while a transfer into it runs (real binary, loopback):
//! whoever wins the race, nothing outside the output is touched and the
//! transfer either arrives whole or fails clearly with no file named. Also
//! what a local user (or a sender) plants under the state directory's name.

use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::store_attacks::{
    MAX_HELD, STATE_DIR, chmod, content, named_source, regular_files, write_big,
};
use crate::util::cli::send_paths;
use crate::util::data::Rng;
use crate::util::fs::{snapshot, tree};
use crate::util::{Server, text, wait_until};

fn big_is_intact(p: &Path, block: &[u8], mib: usize) -> bool {
    let mut f = fs::File::open(p).unwrap();
    if f.metadata().unwrap().len() != (mib << 20) as u64 {
        return false;
    }
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        f.read_exact(&mut buf).unwrap();
        if buf != block {
            return false;
        }
    }
    true
}

/// Sends `src/d` (a big file plus `small` small files; with `top`, a
/// top-level file beside it too) into `out` while a thread keeps renaming
/// `out/d` away, putting a symlink to `outside` in its place, and putting
/// it back (or, while there is no `out/d`, planting that symlink).
fn symlink_swap_race(small: usize, mib: usize, seed: u64, top: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out, outside) = (
        tmp.path().join("src"),
        tmp.path().join("out"),
        tmp.path().join("outside"),
    );
    fs::create_dir_all(src.join("d/sub")).unwrap();
    fs::create_dir(&out).unwrap();
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("keep"), b"outside, must not change").unwrap();
    fs::write(outside.join("sub/deep"), b"also outside").unwrap();
    chmod(&outside.join("sub"), 0o750);
    for i in 0..small {
        let sub = if i % 2 == 0 { "d" } else { "d/sub" };
        fs::write(
            src.join(format!("{sub}/s{i:03}")),
            content(&format!("s{i}"), 1000 + i as u64),
        )
        .unwrap();
    }
    let block = write_big(&src.join("d/sub/zz-big"), mib, seed);
    fs::write(src.join("top"), b"top-level file").unwrap();
    let before = snapshot(&outside);

    let mut srv = Server::start(tmp.path(), &["--out", "out"]);
    let (stop, swaps, racer) = spawn_racer(&out, &outside, seed);
    let sent = if top {
        send_paths(&srv, &[&src.join("d"), &src.join("top")])
    } else {
        send_paths(&srv, &[&src.join("d")])
    };
    stop.store(true, Ordering::SeqCst);
    racer.join().unwrap();
    let stderr = text(&sent.stderr);
    let code = receiver_code(&mut srv, sent.status.code() == Some(0));

    assert_eq!(
        snapshot(&outside),
        before,
        "something outside the output changed"
    );
    let swaps = swaps.load(Ordering::SeqCst);
    let left = regular_files(&out);
    eprintln!(
        "RACE {small} small files + {mib} MiB: {swaps} swaps, sender exit {:?}, receiver exit {code:?}, files in out: {}, stderr: {}",
        sent.status.code(),
        left.len(),
        stderr.trim()
    );
    assert!(swaps > 0, "the racer never swapped anything");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.join(STATE_DIR).exists(), "state dir left");
    assert!(!out.join("d").is_symlink());
    if sent.status.code() == Some(0) {
        assert_eq!(code, Some(0));
        assert_race_won(&out, small, &block, mib, &left, top);
    } else {
        assert_race_refused(&srv, code, &stderr, &left);
    }
}

/// A thread that keeps swapping `out/d` for a symlink to `outside` (and
/// back) until stopped or 40 s passed; returns the stop flag, the swap
/// count and the thread.
fn spawn_racer(
    out: &Path,
    outside: &Path,
    seed: u64,
) -> (Arc<AtomicBool>, Arc<AtomicU64>, thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let racer = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let (d, away, outside) = (out.join("d"), out.join("d.swapped"), outside.to_path_buf());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut rng = Rng::new(seed);
            let mut pause = move || Duration::from_micros(rng.below(1500));
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let is_dir = fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir());
                // Nothing there yet (a new tree is built out of sight): the
                // symlink waits where the tree will be renamed to.
                if !is_dir && !d.is_symlink() && symlink(&outside, &d).is_ok() {
                    swaps.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(pause());
                    let _ = fs::remove_file(&d);
                } else if is_dir && fs::rename(&d, &away).is_ok() {
                    swaps.fetch_add(1, Ordering::SeqCst);
                    let _ = symlink(&outside, &d);
                    thread::sleep(pause());
                    if fs::symlink_metadata(&d).is_ok_and(|m| m.file_type().is_symlink()) {
                        let _ = fs::remove_file(&d);
                    }
                    let _ = fs::rename(&away, &d);
                }
                thread::sleep(pause());
            }
            // Leave the real directory in place.
            if fs::symlink_metadata(&d).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = fs::remove_file(&d);
            }
            if away.exists() {
                let _ = fs::rename(&away, &d);
            }
        })
    };
    (stop, swaps, racer)
}

/// The receiver's exit code once the race is over. A refused offer gives
/// the one-shot receiver's slot back: it keeps listening (and is killed
/// here). Any other end makes it exit.
fn receiver_code(srv: &mut Server, sent_ok: bool) -> Option<i32> {
    if sent_ok {
        return srv.wait_exit().0;
    }
    wait_until(Duration::from_secs(10), || !srv.is_running());
    srv.drain(Duration::from_millis(300));
    let exited = srv.child.try_wait().unwrap().and_then(|st| st.code());
    if exited.is_none() {
        assert!(
            !srv.seen_named("refused").is_empty(),
            "receiver stuck: {:?}",
            srv.seen
        );
        srv.kill();
    }
    exited
}

/// The transfer won the race: every file arrived whole under `out`.
fn assert_race_won(out: &Path, small: usize, block: &[u8], mib: usize, left: &[String], top: bool) {
    for i in 0..small {
        let sub = if i % 2 == 0 { "d" } else { "d/sub" };
        let name = format!("{sub}/s{i:03}");
        assert_eq!(
            fs::read(out.join(&name)).unwrap(),
            content(&format!("s{i}"), 1000 + i as u64),
            "{name}"
        );
    }
    assert!(big_is_intact(&out.join("d/sub/zz-big"), block, mib));
    if top {
        assert_eq!(fs::read(out.join("top")).unwrap(), b"top-level file");
    }
    assert_eq!(left.len(), small + 1 + usize::from(top), "{left:?}");
}

/// The race broke the transfer: a clear error on both sides, no file named.
fn assert_race_refused(srv: &Server, code: Option<i32>, stderr: &str, left: &[String]) {
    assert_ne!(code, Some(0), "receiver reported success, sender failure");
    assert!(
        stderr.starts_with("pincat: error: "),
        "unclear error: {stderr}"
    );
    // The receiver says why: the way to a file went through a symlink, or
    // a directory vanished under it.
    let why = srv
        .seen
        .iter()
        .filter(|e| e["event"] == "error" || e["event"] == "refused")
        .filter_map(|e| e["message"].as_str())
        .collect::<Vec<_>>()
        .join("; ");
    eprintln!("RACE receiver said: {why}");
    assert!(
        why.contains("symbolic link") || why.contains("vanished") || why.contains("appeared"),
        "unclear receiver error: {:?}",
        srv.seen
    );
    // A failed transfer names nothing.
    assert_eq!(
        left,
        Vec::<String>::new(),
        "files left by a failed transfer"
    );
}

#[test]
fn symlink_swap_race_with_a_big_file_never_touches_outside() {
    // Few files: held as unnamed temporary files.
    symlink_swap_race(4, 256, 11, false);
}

#[test]
fn symlink_swap_race_with_many_files_never_touches_outside() {
    // More than MAX_HELD files in a new directory: built whole in the
    // state directory and renamed into place at commit.
    symlink_swap_race(MAX_HELD * 2, 96, 12, false);
}

#[test]
fn symlink_swap_race_with_many_files_and_a_top_level_file_never_touches_outside() {
    // A top-level file too: every file staged by number, linked at commit.
    symlink_swap_race(MAX_HELD * 2, 96, 13, true);
}

// A local user plants something named like the state directory.

/// The fallback state directories (`.pincat-state-*`) left in `out`.
fn fallbacks(out: &Path) -> Vec<String> {
    fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{STATE_DIR}-")))
        .collect()
}

/// A foreign `.pincat-state` in a shared `--out`: a directory of the
/// receiver's user that is not private, a symbolic link to a directory
/// outside, or a regular file. Offers of more than [`MAX_HELD`] files
/// still arrive whole by both staged paths (a new tree renamed in, files
/// into an existing directory), and the planted entry, and what a link
/// points to, keep their contents and modes.
#[test]
fn a_foreign_state_entry_never_blocks_many_file_transfers() {
    for kind in ["dir", "symlink", "file"] {
        let tmp = tempfile::tempdir().unwrap();
        let (out, outside) = (tmp.path().join("out"), tmp.path().join("outside"));
        fs::create_dir_all(out.join("into")).unwrap();
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("keep"), b"outside, must not change").unwrap();
        chmod(&outside, 0o755);
        let planted = out.join(STATE_DIR);
        match kind {
            "dir" => {
                fs::create_dir(&planted).unwrap();
                chmod(&planted, 0o755);
                fs::write(planted.join("theirs"), b"the user's").unwrap();
            }
            "symlink" => symlink(&outside, &planted).unwrap(),
            _ => fs::write(&planted, b"not a directory").unwrap(),
        }
        let (before, before_outside) = (snapshot(&planted), snapshot(&outside));
        let fresh = named_source(tmp.path(), "many", MAX_HELD + 10, 0);
        let into = named_source(tmp.path(), "into", MAX_HELD + 10, 0);
        let mut srv = Server::start(tmp.path(), &["--keep-open", "--out", "out"]);
        for src in [&fresh, &into] {
            let sent = send_paths(&srv, &[src]);
            assert_eq!(
                sent.status.code(),
                Some(0),
                "{kind}: {}",
                text(&sent.stderr)
            );
            let name = src.file_name().unwrap();
            assert_eq!(tree(&out.join(name)), tree(src), "{kind}: {name:?}");
        }
        srv.kill();
        assert_eq!(
            snapshot(&planted),
            before,
            "{kind}: the planted entry changed"
        );
        assert_eq!(
            snapshot(&outside),
            before_outside,
            "{kind}: outside changed"
        );
        assert_eq!(fallbacks(&out), Vec::<String>::new(), "{kind}: left behind");
    }
}
