//! `send --update`: what the receiver has already is compared, identical
//! files cost (almost) nothing on the wire, a changed file sends only its
//! changed chunks and is swapped in whole, and replacing is the receiver's
//! choice (`serve --allow-update`).

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};

use crate::util::proxy::Proxy;
use crate::util::server::share_code;
use crate::util::{Server, random_bytes, send, text};

fn send_args(srv: &Server, via: &str, args: &[&str]) -> std::process::Output {
    share_code(via, &srv.addr);
    send(via, &srv.fingerprint, args, b"")
}

#[test]
fn an_unchanged_tree_costs_under_one_percent_of_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let mut total = 0u64;
    for d in 0..50 {
        let dir = tree.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100u64 {
            // 4 KiB to 44 KiB: about 24 KiB on average.
            let len = 4096 + (f * 409) % 40960;
            fs::write(
                dir.join(format!("f{f:03}")),
                random_bytes(len as usize, d * 1000 + f),
            )
            .unwrap();
            total += len;
        }
    }
    let args = ["--keep-open", "--out", "dst", "--allow-update"];
    let srv = Server::start(tmp.path(), &args);
    let proxy = Proxy::start(&srv.addr);
    let t = tree.to_str().unwrap();
    let out = send_args(&srv, &proxy.addr, &["--update", t]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = proxy.take_bytes();
    let out = send_args(&srv, &proxy.addr, &["--json", "--update", t]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second = proxy.take_bytes();
    eprintln!(
        "{total} bytes in 5,000 files: {first} on the wire, then {second} with nothing changed"
    );
    assert!(
        second * 100 < total,
        "{second} bytes for an unchanged tree of {total}"
    );
    assert_eq!(
        crate::util::fs::tree(&tmp.path().join("dst/tree")),
        crate::util::fs::tree(&tree)
    );
}

#[test]
fn a_changed_file_is_swapped_in_whole_with_only_its_changed_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    let old = random_bytes(64 << 20, 9);
    fs::write(&src, &old).unwrap();
    let args = ["--keep-open", "--out", "dst", "--allow-update"];
    let srv = Server::start(tmp.path(), &args);
    let proxy = Proxy::start(&srv.addr);
    let s = src.to_str().unwrap();
    let out = send_args(&srv, &proxy.addr, &[s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    proxy.take_bytes();
    // An in-place edit of 1 KiB in the middle.
    let mut new = old.clone();
    new[40 << 20..(40 << 20) + 1024].copy_from_slice(&random_bytes(1024, 10));
    fs::write(&src, &new).unwrap();
    // A reader compares every read of the name with both versions while
    // it is replaced, until it sees the new one.
    let dst = tmp.path().join("dst/big.bin");
    let (old, new) = (Arc::new(old), Arc::new(new));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, dst, old, new) = (stop.clone(), dst.clone(), old.clone(), new.clone());
        thread::spawn(move || {
            let (mut reads, mut mixed) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                let got = fs::read(&dst).unwrap();
                reads += 1;
                if got == *new {
                    return (reads, mixed, true);
                }
                if got != *old {
                    mixed += 1;
                }
            }
            (reads, mixed, false)
        })
    };
    let out = send_args(&srv, &proxy.addr, &["--update", s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second = proxy.take_bytes();
    let watchdog = {
        let stop = stop.clone();
        thread::spawn(move || {
            thread::sleep(crate::util::WAIT);
            stop.store(true, Ordering::SeqCst);
        })
    };
    let (reads, mixed, saw_new) = reader.join().unwrap();
    drop(watchdog);
    eprintln!("changed 1 KiB of 64 MiB: {second} bytes on the wire; {reads} reads");
    assert!(second < 2 << 20, "{second} bytes for a 1 KiB change");
    assert_eq!(mixed, 0, "a reader saw a mix of old and new");
    assert!(saw_new, "the new version never appeared");
    assert_eq!(fs::read(&dst).unwrap(), *new);
}

#[test]
fn without_allow_update_a_changed_file_is_refused_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("same.txt"), b"same").unwrap();
    fs::write(src.join("changed.txt"), b"version one").unwrap();
    let srv = Server::start(tmp.path(), &["--keep-open", "--out", "dst"]);
    let s = src.to_str().unwrap();
    let out = send(&srv.addr, &srv.fingerprint, &[s], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    fs::write(src.join("changed.txt"), b"version two!").unwrap();
    fs::write(src.join("new.txt"), b"new").unwrap();
    let out = send(&srv.addr, &srv.fingerprint, &["--update", s], b"");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("changed.txt") && err.contains("--allow-update"),
        "{err}"
    );
    let dst = tmp.path().join("dst/src");
    assert_eq!(fs::read(dst.join("changed.txt")).unwrap(), b"version one");
    assert!(
        !dst.join("new.txt").exists(),
        "a refused transfer stored a file"
    );
    // Identical and new files alone go through.
    fs::write(src.join("changed.txt"), b"version one").unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    let f = fs::File::options()
        .write(true)
        .open(src.join("changed.txt"))
        .unwrap();
    f.set_modified(old).unwrap();
    let g = fs::File::options()
        .write(true)
        .open(dst.join("changed.txt"))
        .unwrap();
    g.set_modified(old).unwrap();
    let out = send(&srv.addr, &srv.fingerprint, &["--update", s], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fs::read(dst.join("new.txt")).unwrap(), b"new");
}

#[test]
fn checksum_finds_a_change_the_quick_check_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f.bin");
    fs::write(&src, random_bytes(200_000, 1)).unwrap();
    let args = ["--keep-open", "--out", "dst", "--allow-update"];
    let srv = Server::start(tmp.path(), &args);
    let s = src.to_str().unwrap();
    assert_eq!(
        send(&srv.addr, &srv.fingerprint, &[s], b"").status.code(),
        Some(0)
    );
    // Same size, same time, other bytes: the quick check cannot tell.
    let when = fs::metadata(&src).unwrap().modified().unwrap();
    let changed = random_bytes(200_000, 2);
    fs::write(&src, &changed).unwrap();
    fs::File::options()
        .write(true)
        .open(&src)
        .unwrap()
        .set_modified(when)
        .unwrap();
    let dst = tmp.path().join("dst/f.bin");
    let out = send(&srv.addr, &srv.fingerprint, &["--update", s], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(
        fs::read(&dst).unwrap(),
        changed,
        "the quick check looked at content"
    );
    let out = send(
        &srv.addr,
        &srv.fingerprint,
        &["--update", "--checksum", s],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fs::read(&dst).unwrap(), changed);
}

#[test]
fn a_file_where_the_receiver_has_a_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("dst/x")).unwrap();
    fs::write(tmp.path().join("x"), b"a file").unwrap();
    let args = ["--keep-open", "--out", "dst", "--allow-update"];
    let srv = Server::start(tmp.path(), &args);
    let x = tmp.path().join("x");
    let out = send(
        &srv.addr,
        &srv.fingerprint,
        &["--update", x.to_str().unwrap()],
        b"",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("is a directory on the receiver"), "{err}");
    assert!(tmp.path().join("dst/x").is_dir());
    // And the other way round: a directory where the receiver has a file.
    fs::write(tmp.path().join("dst/y"), b"the receiver's file").unwrap();
    fs::create_dir(tmp.path().join("y")).unwrap();
    fs::write(tmp.path().join("y/inside"), b"sent").unwrap();
    let y = tmp.path().join("y");
    let out = send(
        &srv.addr,
        &srv.fingerprint,
        &["--update", y.to_str().unwrap()],
        b"",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("where the sender has a directory"), "{err}");
    assert_eq!(
        fs::read(tmp.path().join("dst/y")).unwrap(),
        b"the receiver's file"
    );
}

#[test]
fn get_update_replaces_what_an_offer_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("doc.txt");
    fs::write(&src, b"first").unwrap();
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    fs::write(dst.join("doc.txt"), b"stale copy").unwrap();
    let offer = Server::listen(
        "offer",
        tmp.path(),
        &[src.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    let code = offer.code.clone().unwrap_or_default();
    let out = crate::util::pincat()
        .args([
            "get",
            &offer.addr,
            "--pin",
            &offer.fingerprint,
            "--code",
            &code,
        ])
        .args(["--update", "--out", dst.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fs::read(dst.join("doc.txt")).unwrap(), b"first");
}

#[test]
fn checksum_without_allow_update_neither_replaces_nor_reveals() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    // Short files (no whole chunk to compare) and a secret to guess.
    fs::write(dst.join("a.txt"), b"twenty-four bytes here..").unwrap();
    fs::write(dst.join("pin.txt"), b"4821").unwrap();
    let srv = Server::start(tmp.path(), &["--keep-open", "--out", "dst"]);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"").unwrap();
    let a = src.join("a.txt");
    let args = ["--update", "--checksum", a.to_str().unwrap()];
    let out = send(&srv.addr, &srv.fingerprint, &args, b"");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(
        fs::read(dst.join("a.txt")).unwrap(),
        b"twenty-four bytes here.."
    );
    // A right guess and a wrong one get the same answer.
    let guess = src.join("pin.txt");
    let mut codes = Vec::new();
    for g in [&b"4820"[..], b"4821"] {
        fs::write(&guess, g).unwrap();
        let args = ["--update", "--checksum", guess.to_str().unwrap()];
        codes.push(send(&srv.addr, &srv.fingerprint, &args, b"").status.code());
    }
    assert_eq!(codes, [Some(4), Some(4)]);
    assert_eq!(fs::read(dst.join("pin.txt")).unwrap(), b"4821");
}

#[test]
fn updating_many_files_holds_no_descriptor_per_file() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    fs::create_dir(&tree).unwrap();
    for i in 0..1500 {
        fs::write(tree.join(format!("f{i:04}")), random_bytes(300_000, i)).unwrap();
    }
    let args = ["--keep-open", "--out", "dst", "--allow-update"];
    let srv = Server::start_with(tmp.path(), &args, |c| {
        crate::util::process::lower_limit(c, crate::util::process::Limit::OpenFilesHard, 256)
    });
    let t = tree.to_str().unwrap();
    let out = send(&srv.addr, &srv.fingerprint, &[t], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Every file now differs in time, and one in content.
    let later = SystemTime::now() + Duration::from_secs(10);
    for i in 0..1500 {
        let f = fs::File::options()
            .write(true)
            .open(tree.join(format!("f{i:04}")))
            .unwrap();
        f.set_modified(later).unwrap();
    }
    fs::write(tree.join("f0042"), random_bytes(300_000, 99_999)).unwrap();
    let out = send(&srv.addr, &srv.fingerprint, &["--update", t], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        fs::read(tmp.path().join("dst/t/f0042")).unwrap(),
        random_bytes(300_000, 99_999)
    );
}
