//! The receiver's store under attack, with the real binary on loopback:
//! transfers aborting beside each other, the umask, crashes with staged
//! files, deep paths, and targets that already exist (a local user racing
//! the receiver with symlinks: `store_races`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use pincat::protocol::{self, Entry, FrameType, Offer};

use crate::util::cli::{send_cmd, send_paths, spawn_sender};
use crate::util::fs::{Node, snapshot, tree, write_repeated};
use crate::util::peers::HandSender;
use crate::util::process::{self, Limit};
use crate::util::wire::{dir, file, files};
use crate::util::{Server, WAIT, random_bytes, send, text, wait_output};

pub(crate) const STATE_DIR: &str = ".pincat-state";
/// store::MAX_HELD: offers with more files than this are staged.
pub(crate) const MAX_HELD: usize = 16;

// Helpers.

/// Sends a whole offer by hand and returns the final answer.
fn hand_send(srv: &Server, offer: &Offer) -> (FrameType, String) {
    let (mut h, t, p) = HandSender::offer(srv, offer);
    if t != FrameType::Accept {
        return (t, protocol::decode_reject(&p).1);
    }
    h.data(&offer_bytes(offer));
    h.end(offer.file_count(), offer.total_bytes())
}

/// The bytes the tests send for file `name`: different for every name.
pub(crate) fn content(name: &str, size: u64) -> Vec<u8> {
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    random_bytes(size as usize, seed)
}

fn offer_bytes(offer: &Offer) -> Vec<u8> {
    let mut v = Vec::new();
    for e in offer.entries.iter().filter(|e| !e.is_dir) {
        v.extend(content(&e.name, e.size));
    }
    v
}

/// A large file made of one random MiB repeated (cheap to write and check).
pub(crate) fn write_big(p: &Path, mib: usize, seed: u64) -> Vec<u8> {
    let block = random_bytes(1 << 20, seed);
    write_repeated(p, &block, (mib << 20) as u64);
    block
}

pub(crate) fn regular_files(root: &Path) -> Vec<String> {
    snapshot(root)
        .into_iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .map(|(k, _)| k)
        .collect()
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

pub(crate) fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// `pincat serve` with the given umask.
fn serve_with_umask(dir: &Path, args: &[&str], umask: u32) -> Server {
    Server::start_with(dir, args, |cmd: &mut Command| process::umask(cmd, umask))
}

// 1. Two transfers share a new directory; one aborts.

/// A begins, B begins, A gives up, B finishes: B must be stored whole.
fn abort_beside(srv: &mut Server, out: &Path, a: Offer, b: Offer) -> (FrameType, String) {
    let (mut ha, ta, _) = HandSender::offer(srv, &a);
    assert_eq!(ta, FrameType::Accept);
    let (mut hb, tb, _) = HandSender::offer(srv, &b);
    assert_eq!(tb, FrameType::Accept);
    let (da, db) = (offer_bytes(&a), offer_bytes(&b));
    ha.data(&da[..da.len() / 2]);
    hb.data(&db[..db.len() / 2]);
    ha.give_up();
    srv.wait_event("error");
    hb.data(&db[db.len() / 2..]);
    let r = hb.end(b.file_count(), b.total_bytes());
    if r.0 == FrameType::Receipt {
        for e in b.entries.iter().filter(|e| !e.is_dir) {
            assert_eq!(
                fs::read(out.join(&e.name)).unwrap(),
                content(&e.name, e.size),
                "{}",
                e.name
            );
        }
    }
    for e in a.entries.iter().filter(|e| !e.is_dir) {
        assert!(
            !out.join(&e.name).exists(),
            "{} of the aborted transfer",
            e.name
        );
    }
    r
}

#[test]
fn concurrent_transfers_into_a_new_inbox_survive_one_abort() {
    type Case = (Vec<Entry>, Vec<Entry>);
    let cases: Vec<Case> = vec![
        (
            vec![dir("da"), file("da/x", 300_000)],
            vec![file("b.bin", 400_000)],
        ),
        (vec![file("x", 300_000)], vec![file("b.bin", 400_000)]),
        (
            vec![dir("da"), file("da/x", 300_000)],
            vec![dir("db"), file("db/y", 400_000)],
        ),
        (
            vec![dir("da"), file("da/x", 300_000)],
            std::iter::once(dir("db"))
                .chain((0..MAX_HELD + 4).map(|i| file(&format!("db/f{i:02}"), 20_000)))
                .collect(),
        ),
    ];
    for (a, b) in cases {
        let tmp = tempfile::tempdir().unwrap();
        // --out names a directory that does not exist yet.
        let mut srv = Server::start(tmp.path(), &["--keep-open", "--out", "inbox"]);
        let inbox = tmp.path().join("inbox");
        let (t, msg) = abort_beside(&mut srv, &inbox, files(a), files(b.clone()));
        assert_eq!(t, FrameType::Receipt, "{msg}");
        assert!(inbox.is_dir());
        // No staging is left; what the aborted sender wrote may wait in
        // the kept directory for its resume.
        let state: Vec<_> = fs::read_dir(inbox.join(STATE_DIR))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(state.iter().all(|n| n == "kept"), "{state:?}");
        assert!(srv.is_running(), "keep-open server exited");
        srv.kill();
    }
}

#[test]
fn a_hostile_abort_does_not_remove_a_directory_another_sender_uses() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("out")).unwrap();
    let mut srv = Server::start(tmp.path(), &["--keep-open", "--out", "out"]);
    let out = tmp.path().join("out");
    // A (first) lists no directory entries; B is shaped as `pincat send inbox`.
    let a = files(vec![file("inbox/sub/x", 100_000)]);
    let b = files(vec![dir("inbox"), file("inbox/b.bin", 100_000)]);
    let (t, msg) = abort_beside(&mut srv, &out, a, b);
    assert_eq!(t, FrameType::Receipt, "the innocent transfer failed: {msg}");
}

// 2. The receiver's umask.

fn umask_case(umask: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    fs::create_dir(src.join("d/sticky")).unwrap();
    fs::write(src.join("d/x"), b"rwx for all").unwrap();
    fs::write(src.join("d/s"), b"setuid and setgid").unwrap();
    fs::write(src.join("d/sub/y"), b"plain").unwrap();
    fs::write(src.join("d/sticky/z"), b"in a sticky dir").unwrap();
    chmod(&src.join("d/x"), 0o777);
    chmod(&src.join("d/s"), 0o6777);
    chmod(&src.join("d/sub/y"), 0o644);
    chmod(&src.join("d/sticky/z"), 0o666);
    chmod(&src.join("d/sub"), 0o777);
    chmod(&src.join("d/sticky"), 0o1777);
    chmod(&src.join("d"), 0o2777);
    assert_eq!(
        mode_of(&src.join("d/s")),
        0o6777,
        "cannot make a setuid source"
    );

    let mut srv = serve_with_umask(tmp.path(), &["--out", "new/inbox"], umask);
    let sent = send_paths(&srv, &[&src.join("d")]);
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    let dirm = (0o777 & !umask) | 0o700;
    let o = tmp.path().join("new/inbox");
    let want = [
        ("", 0o777 & !umask),
        ("d", dirm),
        ("d/sub", dirm),
        ("d/sticky", dirm),
        ("d/x", 0o777 & !umask),
        ("d/s", 0o777 & !umask),
        ("d/sub/y", 0o644 & !umask),
        ("d/sticky/z", 0o666 & !umask),
    ];
    for (name, mode) in want {
        assert_eq!(mode_of(&o.join(name)), mode, "umask {umask:03o}: {name:?}");
    }
    // The parent --out needed is created under the same umask.
    assert_eq!(mode_of(&tmp.path().join("new")), 0o777 & !umask);

    // A stream into --out FILE.
    let mut srv = serve_with_umask(tmp.path(), &["--out", "got.bin"], umask);
    let sent = send(&srv.addr, &srv.fingerprint, &["-"], b"stream under a umask");
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    let got = tmp.path().join("got.bin");
    assert_eq!(fs::read(&got).unwrap(), b"stream under a umask");
    assert_eq!(
        mode_of(&got),
        0o666 & !umask,
        "umask {umask:03o}: stream file"
    );
}

#[test]
fn a_umask_077_receiver_stores_owner_only_modes() {
    // 0777 sources: files 0700, directories 0700, the stream file 0600.
    umask_case(0o077);
}

#[test]
fn a_umask_022_receiver_stores_0755_and_never_special_bits() {
    umask_case(0o022);
}

// 3. Many-file offers are staged; a crash leaves only the state directory.

/// `src/many`: `n` small files, then a big one last in data order.
fn many_source(root: &Path, n: usize, big_mib: usize) -> PathBuf {
    named_source(root, "many", n, big_mib)
}

/// `src/NAME`: `n` small files (a third in `sub/`), then a big one.
pub fn named_source(root: &Path, name: &str, n: usize, big_mib: usize) -> PathBuf {
    let src = root.join("src").join(name);
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..n {
        let name = if i % 3 == 0 {
            format!("sub/f{i:03}")
        } else {
            format!("f{i:03}")
        };
        fs::write(
            src.join(name),
            content(&format!("f{i}"), (i * 37 % 4096) as u64),
        )
        .unwrap();
    }
    if big_mib > 0 {
        write_big(&src.join("zz-big"), big_mib, 7);
    }
    src
}

/// Names under `out` that are not the user's own.
fn foreign(out: &Path, user: &BTreeMap<String, Node>) -> Vec<String> {
    snapshot(out)
        .into_keys()
        .filter(|k| !user.contains_key(k))
        .collect()
}

fn user_files(out: &Path) -> BTreeMap<String, Node> {
    fs::create_dir_all(out.join("userdir")).unwrap();
    fs::write(out.join("keep.txt"), b"the user's").unwrap();
    fs::write(out.join("userdir/u.txt"), b"also the user's").unwrap();
    snapshot(out)
}

#[test]
fn a_killed_receiver_leaves_only_its_state_dir_and_a_restart_sweeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let user = user_files(&out);
    let src = many_source(tmp.path(), 150, 256);
    let mut srv = Server::start(tmp.path(), &["--out", "out"]);
    let tx = send_cmd(&srv.addr, &srv.fingerprint)
        .arg(&src)
        .spawn()
        .unwrap();
    srv.wait_event("progress");
    srv.kill();
    let sent = wait_output(tx, WAIT);
    assert_ne!(
        sent.status.code(),
        Some(0),
        "the transfer finished before the kill"
    );

    // Nothing of the transfer beside the user's files but directories and
    // the state directory.
    let snap = snapshot(&out);
    for (k, v) in &user {
        assert_eq!(snap.get(k), Some(v), "the user's {k:?} changed");
    }
    let mut staged_files = 0;
    let mut dirs_left = Vec::new();
    for (name, node) in &snap {
        if user.contains_key(name) {
            continue;
        }
        let top = name.split('/').next().unwrap();
        if top == STATE_DIR {
            staged_files += usize::from(matches!(node, Node::File { .. }));
            continue;
        }
        assert!(!top.starts_with(".pincat"), "part file {name:?}");
        assert!(matches!(node, Node::Dir { .. }), "{name:?} is {node:?}");
        dirs_left.push(name.clone());
    }
    eprintln!(
        "CRASH left {staged_files} staged file(s); directories of the transfer left: {dirs_left:?}"
    );
    assert!(
        staged_files > 0,
        "nothing was staged at the kill: {:?}",
        snap.keys()
    );

    // The next start sweeps the state directory before it listens.
    let mut again = Server::start(tmp.path(), &["--out", "out"]);
    assert!(
        !out.join(STATE_DIR).exists(),
        "state dir survived a restart"
    );
    let snap = snapshot(&out);
    for (k, v) in &user {
        assert_eq!(snap.get(k), Some(v), "the restart changed the user's {k:?}");
    }
    assert_eq!(regular_files(&out).len(), 2, "{:?}", regular_files(&out));
    again.kill();
}

#[test]
fn a_killed_receiver_leaves_no_file_of_its_transfer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let user = user_files(&out);
    let src = tmp.path().join("src/d");
    fs::create_dir_all(src.join("sub")).unwrap();
    write_big(&src.join("sub/big"), 256, 9);
    let mut srv = Server::start(tmp.path(), &["--out", "out"]);
    let tx = send_cmd(&srv.addr, &srv.fingerprint)
        .arg(&src)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    srv.wait_event("progress");
    srv.kill();
    let sent = wait_output(tx, WAIT);
    assert_ne!(
        sent.status.code(),
        Some(0),
        "the transfer finished before the kill"
    );
    let mut again = Server::start(tmp.path(), &["--out", "out"]);
    again.kill();
    // Like tar, an interrupted transfer may leave the (empty) directories
    // it made; never a file, whole or partial (README, "Where received
    // data waits").
    let left = foreign(&out, &user);
    for p in &left {
        assert!(out.join(p).is_dir(), "{p} is not a directory: {left:?}");
    }
    assert!(left.iter().all(|p| p == "d" || p == "d/sub"), "{left:?}");
}

#[test]
fn two_hundred_files_arrive_whole_and_leave_no_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let user = user_files(&out);
    let src = many_source(tmp.path(), 200, 0);
    let mut srv = Server::start(tmp.path(), &["--out", "out"]);
    let sent = send_paths(&srv, &[&src]);
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(srv.seen_named("transfer-done")[0]["files"], 200);
    assert_eq!(tree(&out.join("many")), tree(&src));
    assert!(!out.join(STATE_DIR).exists(), "state dir left");
    let mut extra = foreign(&out, &user);
    extra.retain(|k| k != "many" && !k.starts_with("many/"));
    assert_eq!(extra, Vec::<String>::new());
}

// 4. Deep paths.

fn deep_name(depth: usize, leaf: &str) -> String {
    let mut s = "a/".repeat(depth);
    s.push_str(leaf);
    s
}

/// Reads `name` under `out` though its path is longer than PATH_MAX.
fn read_deep(out: &Path, name: &str) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let (parent, leaf) = name.rsplit_once('/').unwrap();
    // Hop 200 components at a time through /proc/self/fd, so no path
    // handed to the kernel is longer than PATH_MAX.
    let comps: Vec<&str> = parent.split('/').collect();
    let mut dir = fs::File::open(out).unwrap();
    for chunk in comps.chunks(200) {
        let p = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), chunk.join("/"));
        dir = fs::File::open(p).unwrap();
    }
    fs::read(format!("/proc/self/fd/{}/{leaf}", dir.as_raw_fd())).unwrap()
}

/// A message with its long run of `a/a/...` shortened.
fn short(msg: &str) -> String {
    msg.replace(&"a/".repeat(100), "a/(x100)")
}

fn deep_transfer(srv: &Server, out: &Path, depth: usize) -> (FrameType, String) {
    let name = deep_name(depth, "f");
    assert!(name.len() <= protocol::MAX_NAME);
    let offer = files(vec![file(&name, 70_000)]);
    let t0 = Instant::now();
    let r = hand_send(srv, &offer);
    eprintln!(
        "TIMING received one file {depth} levels deep over loopback: {:?} ({:?})",
        t0.elapsed(),
        r.0
    );
    if r.0 == FrameType::Receipt {
        assert_eq!(read_deep(out, &name), content(&name, 70_000));
    }
    r
}

#[test]
fn a_file_2000_directories_deep_is_received() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(tmp.path(), &["--keep-open", "--out", "out"]);
    let (t, msg) = deep_transfer(&srv, &tmp.path().join("out"), 2000);
    assert_eq!(t, FrameType::Receipt, "{}", short(&msg));
}

#[test]
fn a_deep_file_is_received_under_a_low_soft_descriptor_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start_with(
        tmp.path(),
        &["--keep-open", "--out", "out"],
        |cmd: &mut Command| process::lower_limit(cmd, Limit::OpenFiles, 1024),
    );
    let (t, msg) = deep_transfer(&srv, &tmp.path().join("out"), 2000);
    assert_eq!(t, FrameType::Receipt, "{}", short(&msg));
}

// 6. Existing things.

#[test]
fn a_stream_never_replaces_a_file_that_appears_during_the_transfer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path(), &["--out", "got.bin"]);
    let mut tx = spawn_sender(&srv.addr, &srv.fingerprint);
    let mut stdin = tx.stdin.take().unwrap();
    stdin.write_all(&random_bytes(1 << 20, 3)).unwrap();
    srv.wait_event("transfer-started");
    fs::write(tmp.path().join("got.bin"), b"precious").unwrap();
    stdin.write_all(&random_bytes(1 << 20, 4)).unwrap();
    drop(stdin);
    let sent = wait_output(tx, WAIT);
    let (code, _) = srv.wait_exit();
    assert_ne!(sent.status.code(), Some(0), "sender reported success");
    assert_ne!(code, Some(0));
    assert!(
        text(&sent.stderr).contains("not overwritten"),
        "{}",
        text(&sent.stderr)
    );
    assert_eq!(fs::read(tmp.path().join("got.bin")).unwrap(), b"precious");
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1, "leftovers");
}

#[test]
fn existing_files_and_symlinks_at_targets_are_refused_and_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out, outside) = (
        tmp.path().join("src"),
        tmp.path().join("out"),
        tmp.path().join("outside"),
    );
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/x"), b"new x").unwrap();
    fs::write(src.join("d/y"), b"new y").unwrap();
    fs::create_dir_all(out.join("d")).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("target"), b"outside").unwrap();
    let mut srv = Server::start(tmp.path(), &["--keep-open", "--out", "out"]);
    for plant in ["file", "link", "dangling"] {
        let x = out.join("d/x");
        match plant {
            "file" => fs::write(&x, b"precious").unwrap(),
            "link" => symlink(outside.join("target"), &x).unwrap(),
            _ => symlink(outside.join("nothing"), &x).unwrap(),
        }
        let (before, before_out) = (snapshot(&outside), snapshot(&out));
        let sent = send_paths(&srv, &[&src.join("d")]);
        assert_eq!(
            sent.status.code(),
            Some(4),
            "{plant}: {}",
            text(&sent.stderr)
        );
        assert_eq!(snapshot(&outside), before, "{plant}");
        assert_eq!(snapshot(&out), before_out, "{plant}");
        fs::remove_file(&x).unwrap();
    }
    srv.kill();
}

// A sender may name anything, the state directory included.

#[test]
fn a_file_named_like_the_state_dir_does_not_block_later_senders() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("out")).unwrap();
    let mut srv = Server::start(tmp.path(), &["--keep-open", "--out", "out"]);
    let planted = hand_send(&srv, &files(vec![file(STATE_DIR, 10)]));
    eprintln!("planting {STATE_DIR}: {planted:?}");
    let src = many_source(tmp.path(), MAX_HELD + 10, 0);
    let sent = send_paths(&srv, &[&src]);
    srv.kill();
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
}
