//! Verified resume: a transfer cut on the wire (by a proxy that counts
//! what crosses it) is run again and only the rest travels; the result is
//! the source byte for byte, even when the kept partial file or the source
//! changed in between, and after the receiver restarted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::util::cli::identity_new;
use crate::util::fs::write_repeated;
use crate::util::proxy::Proxy;
use crate::util::{Server, pincat, random_bytes, sha256, text};

const MIB: u64 = 1 << 20;

/// `pincat send ADDR --pin PIN [--code CODE] ARGS`, run to the end.
fn send_via(addr: &str, pin: &str, code: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = pincat();
    cmd.args(["send", addr, "--pin", pin]);
    if let Some(c) = code {
        cmd.args(["--code", c]);
    }
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

fn digest(p: &Path) -> String {
    sha256(&fs::read(p).unwrap())
}

/// The one partial file kept under `out` (waiting for the receiver to
/// notice the cut and keep it).
fn kept_file(out: &Path) -> PathBuf {
    let kept = out.join(".pincat-state/kept");
    let one = || fs::read_dir(&kept).is_ok_and(|d| d.count() == 1);
    assert!(
        crate::util::wait_until(crate::util::WAIT, one),
        "nothing kept"
    );
    let files: Vec<PathBuf> = fs::read_dir(&kept)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

/// Sends `what` through a proxy that cuts it after `cut` bytes (the
/// sender fails), then again without a cut; returns the bytes the second
/// attempt put on the wire.
fn cut_then_resume(srv: &Server, what: &Path, cut: u64, between: impl FnOnce()) -> u64 {
    let proxy = Proxy::start(&srv.addr);
    let arg = what.to_str().unwrap();
    let code = srv.code.as_deref();
    proxy.cut_after(cut);
    let out = send_via(&proxy.addr, &srv.fingerprint, code, &[arg]);
    assert_ne!(out.status.code(), Some(0), "the cut transfer succeeded");
    let first = proxy.take_bytes();
    assert!(first >= cut, "only {first} bytes before the cut");
    between();
    let out = send_via(&proxy.addr, &srv.fingerprint, code, &[arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    proxy.take_bytes()
}

#[test]
fn a_large_file_cut_halfway_resumes_with_only_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    let size = 256 * MIB;
    write_repeated(&src, &random_bytes(MIB as usize + 4097, 1), size);
    let mut srv = Server::start(tmp.path(), &["--out", "in"]);
    let second = cut_then_resume(&srv, &src, size / 2, || {});
    eprintln!("second attempt: {second} bytes on the wire of {size}");
    assert!(
        second * 100 <= size * 55,
        "{second} bytes on the second attempt"
    );
    assert_eq!(digest(&tmp.path().join("in/big.bin")), digest(&src));
    let done = srv.wait_event("transfer-done");
    let (code, _) = srv.wait_exit();
    assert_eq!(
        code,
        Some(0),
        "the one-shot receiver ends with the resumed transfer"
    );
    assert!(
        done["resumed_bytes"].as_u64().unwrap() >= size * 45 / 100,
        "{done}"
    );
    assert!(
        !tmp.path().join("in/.pincat-state").exists(),
        "kept state left behind"
    );
}

#[test]
fn a_tree_cut_halfway_resumes_and_keeps_the_files_that_had_arrived() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    let mut total = 0;
    for i in 0..200u64 {
        let dir = if i % 2 == 0 { "." } else { "sub" };
        let len = 200_000 + i * 1000;
        fs::write(
            tree.join(dir).join(format!("f{i:03}")),
            random_bytes(len as usize, i),
        )
        .unwrap();
        total += len;
    }
    let mut srv = Server::start(tmp.path(), &["--out", "in"]);
    let second = cut_then_resume(&srv, &tree, total / 2, || {});
    eprintln!("second attempt: {second} bytes on the wire of {total}");
    assert!(
        second * 100 <= total * 55,
        "{second} bytes on the second attempt"
    );
    for i in 0..200u64 {
        let dir = if i % 2 == 0 { "." } else { "sub" };
        let rel = Path::new(dir).join(format!("f{i:03}"));
        assert_eq!(
            digest(&tmp.path().join("in/tree").join(&rel)),
            digest(&tree.join(&rel)),
            "{rel:?}"
        );
    }
    assert_eq!(srv.wait_exit().0, Some(0));
}

#[test]
fn a_partial_file_altered_between_attempts_is_mended_from_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let size = 32 * MIB;
    fs::write(&src, random_bytes(size as usize, 3)).unwrap();
    let mut srv = Server::start(tmp.path(), &["--out", "in"]);
    let out = tmp.path().join("in");
    cut_then_resume(&srv, &src, size / 2, || {
        // A byte in the first chunk of what was kept flips on disk.
        let kept = kept_file(&out);
        let mut bytes = fs::read(&kept).unwrap();
        bytes[1000] ^= 0xff;
        fs::write(&kept, bytes).unwrap();
    });
    assert_eq!(digest(&out.join("data.bin")), digest(&src));
    assert_eq!(srv.wait_exit().0, Some(0));
}

#[test]
fn a_source_changed_between_attempts_arrives_as_it_is_now() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let size = 32 * MIB;
    fs::write(&src, random_bytes(size as usize, 4)).unwrap();
    let mut srv = Server::start(tmp.path(), &["--out", "in"]);
    let changed = src.clone();
    cut_then_resume(&srv, &src, size / 2, move || {
        // Same size, a few bytes near the start rewritten.
        let mut bytes = fs::read(&changed).unwrap();
        bytes[10..20].copy_from_slice(b"CHANGED!!!");
        fs::write(&changed, bytes).unwrap();
    });
    assert_eq!(digest(&tmp.path().join("in/data.bin")), digest(&src));
    assert_eq!(srv.wait_exit().0, Some(0));
}

/// How the restarted receiver admits the sender.
enum Admission {
    /// A fixed code, on both sides.
    Code(&'static str),
    /// An allow list with the sender's persistent key.
    Allow,
}

/// Cuts a transfer, restarts the receiver (a persistent identity and the
/// same admission), and resumes by running the same send command again.
fn resume_after_restart(admission: Admission) {
    let tmp = tempfile::tempdir().unwrap();
    identity_new(tmp.path(), "srv.id");
    let me = identity_new(tmp.path(), "me.id");
    let me_path = tmp.path().join("me.id");
    let src = tmp.path().join("data.bin");
    let size = 64 * MIB;
    fs::write(&src, random_bytes(size as usize, 5)).unwrap();
    let mut args = vec!["--out", "in", "--identity", "srv.id"];
    let mut send_args = vec![];
    let code = match admission {
        Admission::Code(c) => {
            args.extend(["--code", c]);
            Some(c)
        }
        Admission::Allow => {
            args.extend(["--allow", me.as_str()]);
            send_args.extend(["--identity", me_path.to_str().unwrap()]);
            None
        }
    };
    send_args.push(src.to_str().unwrap());
    let state = tmp.path().join("state");
    let with_state = |cmd: &mut std::process::Command| {
        cmd.env("PINCAT_STATE_DIR", &state);
    };
    let srv = Server::start_with(tmp.path(), &args, with_state);
    let proxy = Proxy::start(&srv.addr);
    proxy.cut_after(size / 2);
    let out = send_via(&proxy.addr, &srv.fingerprint, code, &send_args);
    assert_ne!(out.status.code(), Some(0));
    // The receiver is stopped (it was waiting for the resume) and started
    // again: same key, same admission.
    kept_file(&tmp.path().join("in"));
    crate::util::process::signal(srv.child.id(), libc::SIGTERM);
    let mut srv = srv;
    srv.wait_exit();
    drop(srv);
    let mut srv = Server::start_with(tmp.path(), &args, with_state);
    let proxy = Proxy::start(&srv.addr);
    let out = send_via(&proxy.addr, &srv.fingerprint, code, &send_args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second = proxy.take_bytes();
    eprintln!("after the restart: {second} bytes on the wire of {size}");
    assert!(
        second * 100 <= size * 55,
        "{second} bytes after the restart"
    );
    assert_eq!(digest(&tmp.path().join("in/data.bin")), digest(&src));
    assert_eq!(srv.wait_exit().0, Some(0));
}

#[test]
fn a_receiver_restarted_with_its_identity_and_code_resumes() {
    resume_after_restart(Admission::Code("resume-test-code-4f7k2q9x"));
}

#[test]
fn a_receiver_restarted_with_its_identity_and_allow_list_resumes() {
    resume_after_restart(Admission::Allow);
}

#[test]
fn while_a_resume_is_awaited_other_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let size = 16 * MIB;
    fs::write(&src, random_bytes(size as usize, 6)).unwrap();
    let other = tmp.path().join("other.bin");
    fs::write(&other, b"someone else's file").unwrap();
    let mut srv = Server::start(tmp.path(), &["--out", "in"]);
    let code = srv.code.as_deref();
    let other_arg = other.to_str().unwrap();
    cut_then_resume(&srv, &src, size / 2, || {
        // Someone else with the code, other files: refused, nothing stored.
        let out = send_via(&srv.addr, &srv.fingerprint, code, &[other_arg]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains("interrupted transfer to resume"), "{err}");
    });
    assert!(!tmp.path().join("in/other.bin").exists());
    assert_eq!(digest(&tmp.path().join("in/data.bin")), digest(&src));
    assert_eq!(srv.wait_exit().0, Some(0));
}

#[test]
fn a_get_cut_halfway_resumes_from_a_one_shot_offer() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let size = 64 * MIB;
    fs::write(&src, random_bytes(size as usize, 8)).unwrap();
    let mut off = Server::listen("offer", tmp.path(), &["data.bin"], Stdio::null());
    let code = off.code.clone().unwrap();
    let proxy = Proxy::start(&off.addr);
    let get = || {
        pincat()
            .args([
                "get",
                &proxy.addr,
                "--pin",
                &off.fingerprint,
                "--code",
                &code,
            ])
            .args(["--out", "got"])
            .current_dir(tmp.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // The link drops once half the file came back through it.
    proxy.cut_down_after(size / 2);
    let first = get();
    assert_ne!(first.status.code(), Some(0), "the cut get succeeded");
    let out = get();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(digest(&tmp.path().join("got/data.bin")), digest(&src));
    let done = off.wait_event("transfer-done");
    assert_eq!(off.wait_exit().0, Some(0));
    assert!(
        done["resumed_bytes"].as_u64().unwrap() >= size * 40 / 100,
        "{done}"
    );
}

#[test]
fn a_dropped_connection_is_resumed_by_the_sender_itself_with_retry_for() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let size = 32 * MIB;
    fs::write(&src, random_bytes(size as usize, 11)).unwrap();
    let mut srv = Server::start(tmp.path(), &["--out", "in"]);
    let proxy = Proxy::start(&srv.addr);
    proxy.cut_after(size / 2);
    let args = ["--retry-for", "30s", src.to_str().unwrap()];
    let out = send_via(&proxy.addr, &srv.fingerprint, srv.code.as_deref(), &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("connecting again to resume"), "{err}");
    assert_eq!(digest(&tmp.path().join("in/data.bin")), digest(&src));
    let done = srv.wait_event("transfer-done");
    assert!(done["resumed_bytes"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(srv.wait_exit().0, Some(0));
}

#[test]
fn kept_state_never_goes_through_a_planted_link() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let size = 16 * MIB;
    fs::write(&src, random_bytes(size as usize, 12)).unwrap();
    let (out, victim) = (tmp.path().join("in"), tmp.path().join("victim"));
    fs::create_dir_all(&out).unwrap();
    fs::create_dir_all(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, out.join(".pincat-state")).unwrap();
    let mut srv = Server::start(tmp.path(), &["--out", "in"]);
    let second = cut_then_resume(&srv, &src, size / 2, || {
        std::thread::sleep(std::time::Duration::from_millis(500));
    });
    // Nothing could be kept: the whole file went again, and the link's
    // target was never written.
    assert!(second >= size, "{second}");
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    assert_eq!(digest(&out.join("data.bin")), digest(&src));
    assert_eq!(srv.wait_exit().0, Some(0));
}

#[test]
fn a_resume_completes_under_short_idle_timeouts_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    let size = 192 * MIB;
    write_repeated(&src, &random_bytes(MIB as usize + 7, 13), size);
    // Each side gives up after 1 s of silence: comparing what was kept
    // (hashed by both sides before the data goes on) must not leave
    // either silent that long. (A side hashing for longer sends
    // KEEPALIVE every 5 s; that takes files of many GB to show.)
    let mut srv = Server::start(tmp.path(), &["--out", "in", "--idle-timeout", "1s"]);
    let proxy = Proxy::start(&srv.addr);
    let args = ["--idle-timeout", "1s", src.to_str().unwrap()];
    let code = srv.code.as_deref();
    proxy.cut_after(size * 3 / 4);
    let out = send_via(&proxy.addr, &srv.fingerprint, code, &args);
    assert_ne!(out.status.code(), Some(0));
    kept_file(&tmp.path().join("in"));
    let t0 = std::time::Instant::now();
    let out = send_via(&proxy.addr, &srv.fingerprint, code, &args);
    eprintln!("resumed in {:?}", t0.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(digest(&tmp.path().join("in/big.bin")), digest(&src));
    assert_eq!(srv.wait_exit().0, Some(0));
}

#[test]
fn a_state_directory_swapped_for_a_link_between_attempts_is_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let size = 16 * MIB;
    fs::write(&src, random_bytes(size as usize, 14)).unwrap();
    let (out, victim) = (tmp.path().join("in"), tmp.path().join("victim"));
    fs::create_dir_all(&victim).unwrap();
    let mut srv = Server::start(tmp.path(), &["--out", "in"]);
    let (state, moved) = (out.join(".pincat-state"), tmp.path().join("moved-state"));
    let second = cut_then_resume(&srv, &src, size / 2, || {
        // What was kept is moved aside and the name made a link outside.
        kept_file(&out);
        fs::rename(&state, &moved).unwrap();
        std::os::unix::fs::symlink(&victim, &state).unwrap();
    });
    // The link is never taken for the state directory: nothing resumed,
    // nothing written where it points, the file whole.
    assert!(second >= size, "{second}");
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    assert_eq!(digest(&out.join("data.bin")), digest(&src));
    assert!(
        fs::symlink_metadata(&state)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(srv.wait_exit().0, Some(0));
}
