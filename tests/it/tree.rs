//! A tree arrives as it left. It gets the sender's modification times:
//! files, and the directories the transfer made, whichever way the
//! receiver commits
//! (unnamed files for a few, staging for many, a whole new tree renamed
//! into place); `--no-times` gives them the time they were written.
//! Directories the receiver already had are never given the sender's time.
//! What is not sent (symbolic links, special files) is reported on both
//! sides, and `--strict` refuses to leave it out (exit 11).

use std::fs::{self, File};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::{Server, WAIT, run, text, wait_output};

/// A time with nanoseconds, `days` days after the epoch.
fn day(days: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(days * 86_400, 123_456_789)
}

fn set_time(p: &Path, t: SystemTime) {
    File::open(p).unwrap().set_modified(t).unwrap();
}

fn mtime(p: &Path) -> SystemTime {
    fs::symlink_metadata(p).unwrap().modified().unwrap()
}

/// `tree/` with `n` files in `tree/sub/`, every file and directory dated:
/// file i on day 1000 + i, `tree/sub` on day 900, `tree` on day 800.
fn dated_tree(base: &Path, n: u64) {
    let sub = base.join("tree/sub");
    fs::create_dir_all(&sub).unwrap();
    for i in 0..n {
        let f = sub.join(format!("f{i}"));
        fs::write(&f, format!("file {i}")).unwrap();
        set_time(&f, day(1000 + i));
    }
    set_time(&sub, day(900));
    set_time(&base.join("tree"), day(800));
}

fn send_tree(srv: &Server, base: &Path) {
    let out = crate::util::cli::send_paths(srv, &[&base.join("tree")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

fn assert_dated(got: &Path, n: u64) {
    for i in 0..n {
        assert_eq!(mtime(&got.join(format!("sub/f{i}"))), day(1000 + i), "f{i}");
    }
    assert_eq!(mtime(&got.join("sub")), day(900));
    assert_eq!(mtime(got), day(800));
}

#[test]
fn a_new_tree_keeps_every_time_few_files_or_many() {
    for n in [3, 40] {
        let dir = tempfile::tempdir().unwrap();
        dated_tree(dir.path(), n);
        let mut srv = Server::start(dir.path(), &["--out", "in"]);
        send_tree(&srv, dir.path());
        assert_eq!(srv.wait_exit().0, Some(0));
        assert_dated(&dir.path().join("in/tree"), n);
    }
}

#[test]
fn into_an_existing_directory_only_what_the_transfer_made_gets_a_time() {
    for n in [3, 40] {
        let dir = tempfile::tempdir().unwrap();
        dated_tree(dir.path(), n);
        // The receiver already has tree/ (so nothing is renamed whole);
        // tree/sub is new.
        let had = dir.path().join("in/tree");
        fs::create_dir_all(&had).unwrap();
        set_time(&had, day(5));
        let mut srv = Server::start(dir.path(), &["--out", "in"]);
        send_tree(&srv, dir.path());
        assert_eq!(srv.wait_exit().0, Some(0));
        for i in 0..n {
            assert_eq!(mtime(&had.join(format!("sub/f{i}"))), day(1000 + i));
        }
        assert_eq!(mtime(&had.join("sub")), day(900), "made by the transfer");
        // Already there: the new entry changed its time, the sender's is
        // never set on it.
        assert_ne!(mtime(&had), day(800));
    }
}

#[test]
fn no_times_gives_the_time_of_writing_and_get_keeps_times_too() {
    let dir = tempfile::tempdir().unwrap();
    dated_tree(dir.path(), 3);
    let before = SystemTime::now() - Duration::from_secs(60);
    let mut srv = Server::start(dir.path(), &["--out", "in", "--no-times"]);
    send_tree(&srv, dir.path());
    assert_eq!(srv.wait_exit().0, Some(0));
    let got = dir.path().join("in/tree");
    assert!(mtime(&got.join("sub/f0")) > before);
    assert!(mtime(&got.join("sub")) > before);

    // Pulling: get stores times like serve.
    let mut off = Server::listen("offer", dir.path(), &["tree"], Stdio::null());
    let code = off.code.clone().unwrap();
    let out = run(
        &["get", &off.addr, "--code", &code, "--out", "pulled"],
        |c| {
            c.current_dir(dir.path());
        },
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(off.wait_exit().0, Some(0));
    assert_dated(&dir.path().join("pulled/tree"), 3);
}

#[test]
fn an_offer_of_directories_only_never_redates_what_the_receiver_has() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree/.git/objects");
    fs::create_dir_all(&src).unwrap();
    for d in ["tree/.git/objects", "tree/.git", "tree"] {
        set_time(&dir.path().join(d), day(1));
    }
    let had = dir.path().join("in/tree/.git/objects");
    fs::create_dir_all(&had).unwrap();
    for d in ["in/tree/.git/objects", "in/tree/.git", "in/tree"] {
        set_time(&dir.path().join(d), day(20_000));
    }
    let mut srv = Server::start(dir.path(), &["--out", "in"]);
    send_tree(&srv, dir.path());
    assert_eq!(srv.wait_exit().0, Some(0));
    for d in ["in/tree/.git/objects", "in/tree/.git", "in/tree"] {
        assert_eq!(mtime(&dir.path().join(d)), day(20_000), "{d}");
    }
}

/// `tree/` with a file, a symbolic link and a named pipe.
fn tree_with_specials(base: &Path) {
    let t = base.join("tree");
    fs::create_dir_all(&t).unwrap();
    fs::write(t.join("real.txt"), b"real").unwrap();
    std::os::unix::fs::symlink("real.txt", t.join("link")).unwrap();
    let fifo = std::ffi::CString::new(t.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
}

#[test]
fn skipped_entries_are_reported_on_both_sides_and_strict_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    tree_with_specials(dir.path());
    let mut srv = Server::start(dir.path(), &["--out", "in", "--keep-open"]);
    let mut send = crate::util::cli::send_cmd(&srv.addr, &srv.fingerprint);
    send.arg(dir.path().join("tree"))
        .args(["--json", "--no-links"]);
    let out = wait_output(send.spawn().unwrap(), WAIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sent = crate::util::data::json_lines(&out.stderr);
    let started = sent
        .iter()
        .find(|e| e["event"] == "transfer-started")
        .expect("the sender's transfer-started");
    assert_eq!(started["skipped"], 2, "{started}");
    let got = srv.wait_event("transfer-started");
    assert_eq!(got["skipped"], 2, "{got}");
    let names = got["skipped_names"].to_string();
    assert!(
        names.contains("tree/link") && names.contains("tree/fifo"),
        "{names}"
    );
    assert_eq!(
        fs::read(dir.path().join("in/tree/real.txt")).unwrap(),
        b"real"
    );

    // --strict: nothing is sent, exit 11, the receiver saw no transfer.
    srv.wait_event("transfer-done");
    let mut send = crate::util::cli::send_cmd(&srv.addr, &srv.fingerprint);
    send.arg(dir.path().join("tree")).arg("--strict");
    let out = wait_output(send.spawn().unwrap(), WAIT);
    assert_eq!(out.status.code(), Some(11), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--strict"),
        "{}",
        text(&out.stderr)
    );
    srv.drain(Duration::from_millis(300));
    assert_eq!(srv.seen_named("transfer-started").len(), 1);
    srv.kill();
    let off = run(&["offer", "--strict", "--allow-any", "tree"], |c| {
        c.current_dir(dir.path());
    });
    assert_eq!(off.status.code(), Some(11), "{}", text(&off.stderr));
}

#[test]
fn links_inside_the_tree_arrive_as_links_with_their_times() {
    let dir = tempfile::tempdir().unwrap();
    dated_tree(dir.path(), 2);
    let sub = dir.path().join("tree/sub");
    std::os::unix::fs::symlink("f0", sub.join("to-f0")).unwrap();
    std::os::unix::fs::symlink("../sub/f1", sub.join("to-f1")).unwrap();
    std::os::unix::fs::symlink("dangling", sub.join("nowhere")).unwrap();
    // The links' own times (not their targets').
    for (l, d) in [("to-f0", 1), ("to-f1", 2), ("nowhere", 3)] {
        let c = std::ffi::CString::new(sub.join(l).to_str().unwrap()).unwrap();
        let t = libc::timespec {
            tv_sec: d * 86_400,
            tv_nsec: 5,
        };
        let times = [t, t];
        // SAFETY: a valid path and two timespecs.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(r, 0);
    }
    set_time(&sub, day(900));
    for n in [2, 40] {
        let out_dir = format!("in{n}");
        if n == 40 {
            for i in 2..40 {
                let f = sub.join(format!("f{i}"));
                fs::write(&f, format!("file {i}")).unwrap();
                set_time(&f, day(1000 + i));
            }
            set_time(&sub, day(900));
        }
        let mut srv = Server::start(dir.path(), &["--out", &out_dir]);
        send_tree(&srv, dir.path());
        assert_eq!(srv.wait_exit().0, Some(0));
        let got = dir.path().join(&out_dir).join("tree/sub");
        for (l, target, d) in [
            ("to-f0", "f0", 1),
            ("to-f1", "../sub/f1", 2),
            ("nowhere", "dangling", 3),
        ] {
            let p = got.join(l);
            assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
            assert_eq!(fs::read_link(&p).unwrap(), Path::new(target));
            assert_eq!(mtime(&p), UNIX_EPOCH + Duration::new(d * 86_400, 5), "{l}");
        }
        assert_eq!(fs::read(got.join("to-f0")).unwrap(), b"file 0");
        assert_eq!(mtime(&got), day(900), "links made after the times were set");
    }
}

#[test]
fn a_link_and_a_file_below_it_in_one_offer_touch_nothing() {
    use crate::util::wire::{self, frame};
    use pincat::protocol::{Entry, FrameType};
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "in", "--allow-outside-links"]);
    // `t/a -> OUTSIDE` and then `t/a/passwd`: refused as an offer.
    let link = Entry {
        name: "t/a".into(),
        is_dir: false,
        mode: 0o777,
        size: 0,
        mtime: None,
        link: Some(outside.to_str().unwrap().into()),
    };
    let offer = wire::files(vec![wire::dir("t"), link, wire::file("t/a/passwd", 4)]);
    let script = frame(FrameType::Offer, &offer.encode());
    let frames = crate::util::peers::fake_sender(&srv.addr, &srv.fingerprint, &script);
    assert!(
        frames.is_empty() || frames[0].0 == FrameType::Reject,
        "{frames:?}"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!dir.path().join("in/t").exists());
    srv.kill();
}

#[test]
fn follow_links_sends_what_they_point_to_and_skips_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let ext = dir.path().join("elsewhere");
    fs::create_dir_all(ext.join("inner")).unwrap();
    fs::write(ext.join("file.txt"), b"pointed at").unwrap();
    fs::write(ext.join("inner/deep.txt"), b"deep").unwrap();
    let t = dir.path().join("tree");
    fs::create_dir(&t).unwrap();
    std::os::unix::fs::symlink(ext.join("file.txt"), t.join("file-link")).unwrap();
    std::os::unix::fs::symlink(ext.join("inner"), t.join("dir-link")).unwrap();
    std::os::unix::fs::symlink(".", t.join("loop")).unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "in"]);
    let mut send = crate::util::cli::send_cmd(&srv.addr, &srv.fingerprint);
    send.arg(&t).arg("--follow-links");
    let out = wait_output(send.spawn().unwrap(), WAIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("leads back"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(srv.wait_exit().0, Some(0));
    let got = dir.path().join("in/tree");
    let file = got.join("file-link");
    assert!(fs::symlink_metadata(&file).unwrap().is_file());
    assert_eq!(fs::read(&file).unwrap(), b"pointed at");
    assert!(fs::symlink_metadata(got.join("dir-link")).unwrap().is_dir());
    assert_eq!(fs::read(got.join("dir-link/deep.txt")).unwrap(), b"deep");
    assert!(fs::symlink_metadata(got.join("loop")).is_err());
    let started = srv.seen_named("transfer-started");
    assert_eq!(started[0]["skipped"], 1, "{:?}", started);
}

#[test]
fn a_chain_of_links_that_climbs_out_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t/d");
    fs::create_dir_all(&d).unwrap();
    // Each on its own looks inside; together they reach /etc/passwd.
    std::os::unix::fs::symlink("..", d.join("up")).unwrap();
    std::os::unix::fs::symlink("d/up/d/up/../../etc/passwd", dir.path().join("t/l")).unwrap();
    let mut srv = Server::start(dir.path(), &["--out", "in"]);
    let out = crate::util::cli::send_paths(&srv, &[&dir.path().join("t")]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--allow-outside-links"));
    srv.kill();
    assert!(!dir.path().join("in/t").exists());
}
