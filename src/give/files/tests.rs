//! Unit tests of planning and reading files: stamps, symlinks, and files
//! changed, resized or replaced while they are sent.

use super::*;
use crate::give::reader::FileSeq;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime};

const LEN: usize = 300 * 1024;

fn stamp(ino: u64, size: u64, mtime: i64, ctime: i64) -> Stamp {
    Stamp {
        dev: 1,
        ino,
        size,
        mtime: (mtime, 0),
        ctime: (ctime, 0),
    }
}

#[test]
fn stamps_compare_identity_then_content() {
    let planned = stamp(7, 100, 10, 10);
    assert!(
        stamp(7, 100, 99, 99).same_file(&planned),
        "times may move before the open"
    );
    assert!(!stamp(8, 100, 10, 10).same_file(&planned), "another inode");
    assert!(!stamp(7, 101, 10, 10).same_file(&planned), "another size");
    let other_dev = Stamp { dev: 2, ..planned };
    assert!(!other_dev.same_file(&planned));
    assert!(planned.unchanged_since(&planned));
    assert!(!stamp(7, 100, 11, 10).unchanged_since(&planned), "mtime");
    assert!(!stamp(7, 100, 10, 11).unchanged_since(&planned), "ctime");
    assert!(!stamp(7, 99, 10, 10).unchanged_since(&planned), "size");
    let nanos = Stamp {
        mtime: (10, 1),
        ..planned
    };
    assert!(!nanos.unchanged_since(&planned), "nanoseconds count");
}

/// A file whose mtime lies far in the past, so that any write now moves it
/// whatever the kernel's timestamp granularity.
fn old_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let f = File::create(&p).unwrap();
    (&f).write_all(&data).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    p
}

/// Plans `path`, reads the first 64 KiB, runs `meddle`, reads the rest.
fn read_with(path: &Path, meddle: impl FnOnce()) -> io::Result<Vec<u8>> {
    let walked = plan(&[path.to_path_buf()], super::Links::Send, &Events::silent())
        .unwrap()
        .unwrap();
    let mut seq = FileSeq::of(walked);
    let mut got = vec![0u8; 64 * 1024];
    seq.read_exact(&mut got)?;
    meddle();
    seq.read_to_end(&mut got)?;
    Ok(got)
}

fn assert_changed(r: io::Result<Vec<u8>>) {
    let e = r.expect_err("a changed file was sent");
    assert!(names_its_file(&e), "{e}");
    assert!(
        e.to_string().contains(": file changed while being read"),
        "{e}"
    );
}

#[test]
fn an_unchanged_tree_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("t");
    fs::create_dir_all(top.join("sub")).unwrap();
    fs::write(top.join("a"), b"first").unwrap();
    fs::write(top.join("sub/b"), b"second").unwrap();
    fs::write(top.join("sub/empty"), b"").unwrap();
    let walked = plan(&[top], super::Links::Send, &Events::silent())
        .unwrap()
        .unwrap();
    let names: Vec<&str> = walked.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["t", "t/a", "t/sub", "t/sub/b", "t/sub/empty"]);
    let mut got = Vec::new();
    FileSeq::of(walked).read_to_end(&mut got).unwrap();
    assert_eq!(got, b"firstsecond");
}

#[test]
fn a_symlink_the_user_names_is_followed_once_at_planning() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("target.txt"), b"pointed at").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("target.txt", &link).unwrap();
    let walked = plan(&[link], super::Links::Send, &Events::silent())
        .unwrap()
        .unwrap();
    assert_eq!(walked.entries[0].name, "target.txt");
    let mut got = Vec::new();
    FileSeq::of(walked).read_to_end(&mut got).unwrap();
    assert_eq!(got, b"pointed at");
}

#[test]
fn a_file_rewritten_in_place_while_read_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = old_file(dir.path(), "f", LEN);
    assert_changed(read_with(&p, || {
        // Same size, other bytes, behind the read position.
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all(b"XXXX").unwrap();
    }));
    // The same, ahead of the read position.
    let p = old_file(dir.path(), "g", LEN);
    assert_changed(read_with(&p, || {
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(LEN as u64 - 4)).unwrap();
        f.write_all(b"XXXX").unwrap();
    }));
}

#[test]
fn a_file_that_grows_or_shrinks_while_read_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = old_file(dir.path(), "grows", LEN);
    assert_changed(read_with(&p, || {
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"more").unwrap();
    }));
    let p = old_file(dir.path(), "shrinks", LEN);
    assert_changed(read_with(&p, || {
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(LEN as u64 / 2).unwrap();
    }));
}

#[test]
fn a_file_replaced_after_planning_is_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let p = old_file(dir.path(), "f", 4096);
    // The same size and content elsewhere: only the swap itself is wrong.
    let decoy = old_file(dir.path(), "decoy", 4096);
    let walked = plan(
        std::slice::from_ref(&p),
        super::Links::Send,
        &Events::silent(),
    )
    .unwrap()
    .unwrap();
    fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink(&decoy, &p).unwrap();
    assert_changed(
        FileSeq::of(walked)
            .read_to_end(&mut Vec::new())
            .map(|_| vec![]),
    );
    // Renamed over by another file: another inode.
    let walked = plan(
        std::slice::from_ref(&decoy),
        super::Links::Send,
        &Events::silent(),
    )
    .unwrap()
    .unwrap();
    let twin = old_file(dir.path(), "twin", 4096);
    fs::rename(&twin, &decoy).unwrap();
    assert_changed(
        FileSeq::of(walked)
            .read_to_end(&mut Vec::new())
            .map(|_| vec![]),
    );
}

#[test]
fn planning_refuses_unreadable_vanished_and_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let e = plan(&[missing], super::Links::Send, &Events::silent())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot send") && e.contains("missing"), "{e}");
    let e = plan(
        &[PathBuf::from("/dev/null")],
        super::Links::Send,
        &Events::silent(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let secret = old_file(dir.path(), "secret", 10);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    if File::open(&secret).is_ok() {
        eprintln!("running with CAP_DAC_OVERRIDE (root?): chmod 000 is still readable; skipped");
        return;
    }
    let e = plan(&[secret], super::Links::Send, &Events::silent())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("secret") && e.contains("ermission denied"),
        "{e}"
    );
}
