//! Known peers: the peers file (add, list, remove; modes, locking, refusals),
//! dialing a peer by NAME, trust on first use and a changed key, the
//! public-key pin of a remote server, and the `-v` connected line.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::util::cli::feed;
use crate::util::{Server, WAIT, pincat, random_bytes, text, wait_output};

/// A peers file in a fresh private directory (not created yet).
pub(crate) fn peers_file(base: &Path) -> PathBuf {
    base.join("config").join("peers")
}

/// `pincat ARGS` with the peers file at `file`, `input` on stdin.
pub(crate) fn with_peers(file: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = command(file, args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn pincat");
    let writer = feed(&mut child, input);
    let out = wait_output(child, WAIT);
    let _ = writer.join();
    out
}

pub(crate) fn command(file: &Path, args: &[&str]) -> Command {
    let mut cmd = pincat();
    cmd.args(args)
        .env("PINCAT_PEERS", file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub(crate) fn ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

pub(crate) fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A persistent identity file and its public-key pin.
pub(crate) fn identity(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(name);
    let out = pincat()
        .args(["identity", "new"])
        .arg(&path)
        .output()
        .unwrap();
    ok(&out);
    let out = pincat()
        .args(["fingerprint", "--spki"])
        .arg(&path)
        .output()
        .unwrap();
    ok(&out);
    let spki = text(&out.stdout).trim().to_string();
    assert!(spki.starts_with("sha256//"), "{spki}");
    (path.to_str().unwrap().to_string(), spki)
}

/// `peers list` and `peers list --json` show the three peers the test
/// above added, aligned and with every field.
fn check_listing(file: &Path, pin: &str, spki: &str) {
    let list = with_peers(file, &["peers", "list"], b"");
    ok(&list);
    let lines: Vec<String> = text(&list.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], format!("nas         10.0.0.3:7878  {pin}"));
    assert_eq!(lines[1], format!("laptop.lan  [::1]:9000     {spki} {pin}"));
    assert!(lines[2].starts_with("new-box     h.example:1    (no pin yet"));

    let json = with_peers(file, &["peers", "list", "--json"], b"");
    ok(&json);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["file"], file.to_str().unwrap());
    assert_eq!(v["peers"][1]["name"], "laptop.lan");
    assert_eq!(v["peers"][1]["addr"], "[::1]:9000");
    assert_eq!(v["peers"][1]["pins"], serde_json::json!([spki, pin]));
    assert_eq!(v["peers"][2]["pins"], serde_json::json!([]));
}

#[test]
fn peers_are_added_listed_and_removed_in_a_private_file() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let pin = "ab".repeat(32);
    let spki = format!("sha256//{}=", "A".repeat(43));
    ok(&with_peers(
        &file,
        &["peers", "add", "nas", "10.0.0.2:7878", "--pin", &pin],
        b"",
    ));
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    assert_eq!(mode(&file), 0o600);
    // A comment and a blank line written by hand survive every rewrite.
    let mut t = fs::read_to_string(&file).unwrap();
    t.insert_str(0, "# my machines\n\n");
    fs::write(&file, &t).unwrap();
    ok(&with_peers(
        &file,
        &[
            "peers",
            "add",
            "laptop.lan",
            "[::1]:9000",
            "-p",
            &spki,
            "-p",
            &pin,
        ],
        b"",
    ));
    ok(&with_peers(
        &file,
        &["peers", "add", "new-box", "h.example:1"],
        b"",
    ));
    // An existing name needs --replace.
    let dup = with_peers(&file, &["peers", "add", "nas", "h:2"], b"");
    assert_eq!(dup.status.code(), Some(1));
    assert!(
        text(&dup.stderr).contains("--replace"),
        "{}",
        text(&dup.stderr)
    );
    ok(&with_peers(
        &file,
        &[
            "peers",
            "add",
            "nas",
            "10.0.0.3:7878",
            "--pin",
            &pin,
            "--replace",
        ],
        b"",
    ));
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!(
            "# my machines\n\nnas 10.0.0.3:7878 {pin}\nlaptop.lan [::1]:9000 {spki} {pin}\nnew-box h.example:1\n"
        )
    );
    assert_eq!(mode(&file), 0o600);

    check_listing(&file, &pin, &spki);

    ok(&with_peers(&file, &["peers", "remove", "laptop.lan"], b""));
    let gone = with_peers(&file, &["peers", "remove", "laptop.lan"], b"");
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("# my machines\n\nnas 10.0.0.3:7878 {pin}\nnew-box h.example:1\n")
    );
    // Names can never be taken for HOST:PORT or a flag.
    for bad in ["a:b", "-x", "bad name", "\u{1b}[2J"] {
        let out = with_peers(&file, &["peers", "add", "--", bad, "h:1"], b"");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(!text(&out.stderr).contains('\u{1b}'));
    }
}

#[test]
fn concurrent_adds_lose_no_update() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let children: Vec<_> = (0..12)
        .map(|i| {
            command(
                &file,
                &["peers", "add", &format!("p{i}"), &format!("h:{}", i + 1)],
            )
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        ok(&wait_output(c, WAIT));
    }
    let t = fs::read_to_string(&file).unwrap();
    for i in 0..12 {
        assert!(t.contains(&format!("p{i} h:{}\n", i + 1)), "{t}");
    }
    assert_eq!(t.lines().count(), 12, "{t}");
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(file.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn send_and_get_by_name_deliver_exact_bytes() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let mut srv = Server::start(base.path(), &["--allow-any", "--out", "got"]);
    ok(&with_peers(
        &file,
        &["peers", "add", "rx", &srv.addr, "--pin", &srv.fingerprint],
        b"",
    ));
    let data = random_bytes(200_000, 7);
    ok(&with_peers(&file, &["send", "rx"], &data));
    assert_eq!(srv.wait_exit().0, Some(0));
    assert_eq!(fs::read(base.path().join("got")).unwrap(), data);

    // get: the same name resolution on another dialing verb.
    let input = base.path().join("offered");
    fs::write(&input, &data).unwrap();
    let mut off = Server::listen(
        "offer",
        base.path(),
        &["--allow-any"],
        Stdio::from(fs::File::open(&input).unwrap()),
    );
    ok(&with_peers(
        &file,
        &["peers", "add", "src", &off.addr, "--pin", &off.fingerprint],
        b"",
    ));
    let got = with_peers(&file, &["get", "src"], b"");
    ok(&got);
    assert_eq!(got.stdout, data);
    assert_eq!(off.wait_exit().0, Some(0));
}

#[test]
fn names_and_pins_do_not_mix_and_unknown_names_say_what_to_do() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let pin = "ab".repeat(32);
    ok(&with_peers(
        &file,
        &["peers", "add", "rx", "127.0.0.1:9", "--pin", &pin],
        b"",
    ));
    ok(&with_peers(
        &file,
        &["peers", "add", "fresh", "127.0.0.1:9"],
        b"",
    ));
    let cases: &[(&[&str], &str)] = &[
        (&["send", "rx", "--pin", &pin], "drop --pin"),
        (&["get", "rx", "--pin", &pin], "drop --pin"),
        (&["pipe", "rx", "--pin", &pin], "drop --pin"),
        (&["send", "nobody"], "pincat peers add nobody"),
        (&["get", "nobody"], "pincat peers add nobody"),
        (
            &["send", "127.0.0.1:9"],
            "--pin PIN, --code CODE or --ca CA.pem is required",
        ),
        (&["send", "127.0.0.1:9", "--tofu"], "pincat peers add"),
        // An entry with no pin is never trusted without --tofu.
        (&["send", "fresh"], "--tofu"),
        (
            &["fingerprint", "--remote", "nobody"],
            "pincat peers add nobody",
        ),
    ];
    for (args, says) in cases {
        let out = with_peers(&file, args, b"x");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// A symbolic link at the peers path is not followed, for reading or
/// writing, and what it points to stays as it was.
fn a_symlinked_peers_file_is_not_followed(file: &Path, base: &Path, pin: &str) {
    let elsewhere = base.join("elsewhere");
    fs::write(&elsewhere, format!("rx 127.0.0.1:9 {pin}\n")).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(file).unwrap();
    std::os::unix::fs::symlink(&elsewhere, file).unwrap();
    for args in [&["peers", "list"][..], &["peers", "add", "x", "h:1"]] {
        let out = with_peers(file, args, b"");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("symbolic link"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        fs::read_to_string(&elsewhere).unwrap(),
        format!("rx 127.0.0.1:9 {pin}\n")
    );
    assert!(fs::symlink_metadata(file).unwrap().file_type().is_symlink());
}

#[test]
fn unsafe_or_malformed_peers_files_are_refused_and_left_alone() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let pin = "ab".repeat(32);
    ok(&with_peers(
        &file,
        &["peers", "add", "rx", "127.0.0.1:9", "--pin", &pin],
        b"",
    ));

    // Writable by group: refused, one line, for reading and for writing.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o620)).unwrap();
    for args in [
        &["peers", "list"][..],
        &["send", "rx"],
        &["peers", "add", "x", "h:1"],
    ] {
        let out = with_peers(&file, args, b"x");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let msg = text(&out.stderr);
        assert!(
            msg.contains("writable by group or others") && msg.lines().count() == 1,
            "{msg}"
        );
    }
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();

    // A group-writable directory: refused too.
    let dir = file.parent().unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o770)).unwrap();
    let out = with_peers(&file, &["peers", "list"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("directory"),
        "{}",
        text(&out.stderr)
    );
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();

    // Malformed: the line number, one line, and the file is never rewritten.
    let bad = format!("# ok\nrx 127.0.0.1:9 {pin}\nbroken-line\n");
    fs::write(&file, &bad).unwrap();
    for args in [
        &["peers", "list"][..],
        &["peers", "add", "x", "h:1"],
        &["peers", "remove", "rx"],
        &["send", "rx"],
    ] {
        let out = with_peers(&file, args, b"x");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let msg = text(&out.stderr);
        assert!(msg.contains(&format!("{}:3:", file.display())), "{msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert_eq!(fs::read_to_string(&file).unwrap(), bad);
    }

    a_symlinked_peers_file_is_not_followed(&file, base.path(), &pin);
}

#[test]
fn remote_key_pin_equals_the_identity_files() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let (id, spki) = identity(base.path(), "a.id");
    let srv = Server::start(
        base.path(),
        &[
            "--allow-any",
            "--identity",
            &id,
            "--out",
            "got",
            "--keep-open",
        ],
    );
    let out = with_peers(
        &file,
        &["fingerprint", "--spki", "--remote", &srv.addr],
        b"",
    );
    ok(&out);
    assert_eq!(text(&out.stdout).trim(), spki);
    let out = with_peers(
        &file,
        &["fingerprint", "--spki", "--remote", &srv.addr, "--json"],
        b"",
    );
    ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spki"], spki.as_str());
    assert_eq!(v["remote"], srv.addr.as_str());
    // A known peer's name works as the address.
    ok(&with_peers(&file, &["peers", "add", "box", &srv.addr], b""));
    let out = with_peers(&file, &["fingerprint", "--remote", "box"], b"");
    ok(&out);
    assert_eq!(text(&out.stdout).trim(), srv.fingerprint);
    // Nothing was sent: the receiver stored nothing.
    assert!(!base.path().join("got").exists());
}

#[test]
fn verbose_prints_the_connected_line() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let inbox = base.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let srv = Server::start(&inbox, &["--allow-any", "--out", ".", "--keep-open"]);
    let send = |args: &[&str]| {
        let mut all = vec!["send", &srv.addr, "--pin", &srv.fingerprint];
        all.extend_from_slice(args);
        with_peers(&file, &all, b"x")
    };
    let f = base.path().join("v1");
    fs::write(&f, b"x").unwrap();
    let out = send(&["-v", f.to_str().unwrap()]);
    ok(&out);
    let want = format!("pincat: connected to {} (TLSv1.3, TLS13_", srv.addr);
    let line = text(&out.stderr)
        .lines()
        .find(|l| l.starts_with(&want))
        .map(String::from)
        .unwrap_or_else(|| panic!("{}", text(&out.stderr)));
    assert!(line.contains(", X25519MLKEM768)"), "{line}");
    assert!(
        line.ends_with(&format!("certificate sha256:{}", srv.fingerprint)),
        "{line}"
    );
    let g = base.path().join("v2");
    fs::write(&g, b"x").unwrap();
    let out = send(&[g.to_str().unwrap()]);
    ok(&out);
    assert!(
        !text(&out.stderr).contains("connected to"),
        "{}",
        text(&out.stderr)
    );
    // --quiet and -v contradict each other.
    assert_eq!(send(&["-v", "-q"]).status.code(), Some(2));
}

#[test]
fn pipe_by_name_with_tofu_says_so_even_though_people_see_only_warnings() {
    let base = tempfile::tempdir().unwrap();
    let file = peers_file(base.path());
    let a = random_bytes(100_000, 8);
    let b = random_bytes(100_000, 9);
    let input = base.path().join("a");
    fs::write(&input, &a).unwrap();
    let mut lis = Server::listen(
        "pipe",
        base.path(),
        &["--allow-any"],
        Stdio::from(fs::File::open(&input).unwrap()),
    );
    ok(&with_peers(&file, &["peers", "add", "pp", &lis.addr], b""));
    let out = with_peers(&file, &["pipe", "pp", "--tofu"], &b);
    ok(&out);
    assert!(out.stdout == a, "the dialer got {} bytes", out.stdout.len());
    let (code, got) = lis.wait_exit();
    assert_eq!(code, Some(0));
    assert!(got == b, "the listener got {} bytes", got.len());
    let said = text(&out.stderr);
    assert!(
        said.contains("FIRST USE") && said.contains(&lis.fingerprint),
        "{said}"
    );
    let recorded = fs::read_to_string(&file).unwrap();
    let pin = recorded.trim().rsplit(' ').next().unwrap();
    assert!(
        pin.starts_with("sha256//") && said.contains(pin),
        "{recorded}"
    );
}
