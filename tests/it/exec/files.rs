//! Files with `serve --out DIR --exec`: the handler runs once they are
//! stored, in DIR, with `PINCAT_FILES_LIST` naming a private list of the
//! regular files received (NUL-separated), removed afterwards.

use super::{script, serve};
use crate::util::cli::send_paths;
use crate::util::{send, text};

#[test]
fn files_are_handed_over_in_the_out_directory_with_their_list() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub dir")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub dir/b.bin"), b"beta").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let h = script(
        dir.path(),
        "files.sh",
        r#"pwd; stat -c %a "$PINCAT_FILES_LIST"; cat "$PINCAT_FILES_LIST"; cat src/a.txt"#,
    );
    let srv = serve(dir.path(), &["--keep-open", "--out", "inbox"], &[&h]);
    let o = send_paths(&srv, &[&src]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let mut lines = out.splitn(3, '\n');
    let inbox = dir.path().join("inbox").canonicalize().unwrap();
    assert_eq!(lines.next().unwrap(), inbox.to_str().unwrap(), "its cwd");
    assert_eq!(lines.next().unwrap(), "600", "the list is private");
    let rest = lines.next().unwrap();
    let (list, content) = rest.rsplit_once('\0').unwrap();
    let mut names: Vec<&str> = list.split('\0').collect();
    names.sort();
    assert_eq!(
        names,
        ["src/a.txt", "src/sub dir/b.bin"],
        "regular files only"
    );
    assert_eq!(content, "alpha", "the files are there when it runs");
    assert!(inbox.join("src/link").is_symlink());
    // The list is gone afterwards.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("state/exec"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A stream to a receiver that hands over files is refused.
    let o = send(&srv.addr, &srv.fingerprint, &["--as", "note"], b"x");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("send files"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_failing_files_handler_is_exit_12_and_the_files_stay() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("job");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("result.txt"), b"42").unwrap();
    let h = script(dir.path(), "reject.sh", "exit 7");
    let srv = serve(dir.path(), &["--keep-open", "--out", "inbox"], &[&h]);
    let o = send_paths(&srv, &[&src]);
    assert_eq!(o.status.code(), Some(12), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("status 7"), "{}", text(&o.stderr));
    let kept = std::fs::read(dir.path().join("inbox/job/result.txt")).unwrap();
    assert_eq!(kept, b"42", "stored and durable before the handler ran");
}
