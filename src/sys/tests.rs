use super::*;

#[test]
fn beneath_refuses_symlinks_and_escapes() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("a/b")).unwrap();
    std::os::unix::fs::symlink(t.path().join("a"), t.path().join("link")).unwrap();
    let root = open_dir(t.path()).unwrap();
    assert!(open_dir_beneath(root.as_fd(), "a/b").is_ok());
    assert!(walk_dir(root.as_fd(), "a/b").is_ok());
    for bad in ["link", "link/b", "../x"] {
        assert!(open_dir_beneath(root.as_fd(), bad).is_err(), "{bad}");
        assert!(walk_dir(root.as_fd(), bad).is_err(), "{bad}");
    }
}

#[test]
fn tmpfile_links_without_replacing() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let root = open_dir(t.path()).unwrap();
    let mut f = tmpfile_in(root.as_fd(), 0o600).unwrap();
    f.write_all(b"x").unwrap();
    std::fs::write(t.path().join("taken"), b"old").unwrap();
    let e = link_unnamed(&f, root.as_fd(), OsStr::new("taken")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    link_unnamed(&f, root.as_fd(), OsStr::new("new")).unwrap();
    assert_eq!(std::fs::read(t.path().join("new")).unwrap(), b"x");
    assert_eq!(std::fs::read(t.path().join("taken")).unwrap(), b"old");
    let names = list_dir(root.as_fd()).unwrap();
    assert_eq!(names.len(), 2);
}

#[test]
fn notsent_lowat_is_set_on_a_tcp_socket() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    assert_eq!(notsent_lowat(c.as_fd()).unwrap(), 0);
    set_notsent_lowat(c.as_fd(), 256 * 1024).unwrap();
    assert_eq!(notsent_lowat(c.as_fd()).unwrap(), 256 * 1024);
    let f = tempfile::tempfile().unwrap();
    assert!(set_notsent_lowat(f.as_fd(), 1).is_err());
}

#[test]
fn stat_readable_at_matches_std_and_never_follows() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"12345").unwrap();
    std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
    let root = open_dir(t.path()).unwrap();
    let st = stat_readable_at(root.as_fd(), OsStr::new("f")).unwrap();
    let m = std::fs::metadata(t.path().join("f")).unwrap();
    assert_eq!(
        (st.st_dev, st.st_ino, st.st_mode),
        (m.dev(), m.ino(), m.mode())
    );
    assert_eq!(st.st_size, 5);
    assert_eq!((st.st_mtime, st.st_mtime_nsec), (m.mtime(), m.mtime_nsec()));
    assert_eq!((st.st_ctime, st.st_ctime_nsec), (m.ctime(), m.ctime_nsec()));
    let l = stat_readable_at(root.as_fd(), OsStr::new("l")).unwrap();
    assert_eq!(l.st_mode & libc::S_IFMT, libc::S_IFLNK);
    let e = stat_readable_at(root.as_fd(), OsStr::new("gone")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    let e = stat_readable_at(root.as_fd(), OsStr::new("a\0b")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn stat_at_sees_kinds_and_absence() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"x").unwrap();
    std::fs::create_dir(t.path().join("d")).unwrap();
    std::os::unix::fs::symlink("d", t.path().join("l")).unwrap();
    let root = open_dir(t.path()).unwrap();
    let kind = |n: &str| {
        stat_at(root.as_fd(), OsStr::new(n))
            .unwrap()
            .map(|s| s.kind)
    };
    assert_eq!(kind("f"), Some(Kind::File));
    assert_eq!(kind("d"), Some(Kind::Dir));
    assert_eq!(kind("l"), Some(Kind::Symlink));
    assert_eq!(kind("gone"), None);
    let d = open_dir_at(root.as_fd(), OsStr::new("d")).unwrap();
    let via_fd = stat_fd(d.as_fd()).unwrap();
    assert!(via_fd.same(&stat_at(root.as_fd(), OsStr::new("d")).unwrap().unwrap()));
    fchmod(d.as_fd(), 0o1750).unwrap();
    assert_eq!(stat_fd(d.as_fd()).unwrap().perm, 0o1750);
    assert_eq!(via_fd.uid, euid());
}

#[test]
fn no_replace_link_rename_and_lock() {
    let t = tempfile::tempdir().unwrap();
    let root = open_dir(t.path()).unwrap();
    let r = root.as_fd();
    create_new_at(r, OsStr::new("a"), 0o600).unwrap();
    create_new_at(r, OsStr::new("b"), 0o600).unwrap();
    let exists = |e: io::Error| e.raw_os_error() == Some(libc::EEXIST);
    assert!(exists(
        create_new_at(r, OsStr::new("a"), 0o600).unwrap_err()
    ));
    assert!(exists(
        link_at(r, OsStr::new("a"), r, OsStr::new("b")).unwrap_err()
    ));
    let e = rename_noreplace(r, OsStr::new("a"), r, OsStr::new("b")).unwrap_err();
    assert!(exists(e));
    rename_noreplace(r, OsStr::new("a"), r, OsStr::new("c")).unwrap();
    assert!(open_read_at(r, OsStr::new("a")).unwrap().is_none());
    mkdir_at(r, OsStr::new("d"), 0o700).unwrap();
    assert!(unlink_at(r, OsStr::new("d"), false).is_err());
    unlink_at(r, OsStr::new("d"), true).unwrap();
    let first = open_dir(t.path()).unwrap();
    let second = open_dir(t.path()).unwrap();
    assert!(try_lock(first.as_fd()).unwrap());
    assert!(!try_lock(second.as_fd()).unwrap());
    let mut names = list_dir(r).unwrap();
    names.sort();
    assert_eq!(names, [c"b".to_owned(), c"c".to_owned()]);
    assert_eq!(list_dir(r).unwrap().len(), 2, "a second listing rewinds");
}

#[test]
fn poll_sees_data_and_end_fd_ends_a_pipe() {
    let (r, w) = rustix::pipe::pipe().unwrap();
    let want = [Interest {
        fd: r.as_fd(),
        read: true,
        write: false,
    }];
    assert_eq!(poll(&want, Duration::from_millis(10)).unwrap(), None);
    assert_eq!(write_fd(w.as_fd(), b"hi").unwrap(), 2);
    assert_eq!(poll_readable(&[r.as_fd()], Duration::from_secs(5)), [0]);
    set_nonblocking(r.as_fd(), true).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(read_fd(r.as_fd(), &mut buf).unwrap(), 2);
    let e = read_fd(r.as_fd(), &mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    set_nonblocking(r.as_fd(), false).unwrap();
    end_fd(w.as_fd());
    // The reader sees the end; the writer's descriptor stays valid.
    assert_eq!(read_fd(r.as_fd(), &mut buf).unwrap(), 0);
    let bufs = [io::IoSlice::new(b"a"), io::IoSlice::new(b"bc")];
    assert_eq!(write_fd_vectored(w.as_fd(), &bufs).unwrap(), 3);
}

#[test]
fn process_facts() {
    let want = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(hostname().as_deref(), Some(want.trim()));
    raise_fd_limit();
    let rl = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    assert_eq!(rl.current, rl.maximum);
    assert!(!interface_addrs().iter().any(|ip| ip.is_loopback()));
}

#[test]
fn umask_is_read() {
    assert!(umask() <= 0o777);
}
