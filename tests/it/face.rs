//! The command line as a newcomer types it: listening addresses in every
//! form, the ncat form refused with the address to type, -k, a man page
//! and examples for every verb, and shell completions of peer names.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::util::{Server, random_bytes, run, sha256, text};

/// Every verb with a page of its own.
const VERBS: &[&str] = &[
    "serve",
    "send",
    "offer",
    "get",
    "pipe",
    "forward",
    "relay",
    "identity",
    "fingerprint",
    "peers",
    "completions",
    "man",
];

/// `pincat send DIAL --pin FP --code CODE FILE` to `srv`, dialing `dial`.
fn send_file(srv: &Server, dial: &str, file: &Path) -> Output {
    crate::util::cli::send_through(srv, dial, &[], &[file])
}

/// The port of a listening event's address (`HOST:PORT` or `[V6]:PORT`).
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// A usage error's one line: `out` exited 2 and said "error:" once.
fn usage_error(out: &Output) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    lines[0].to_string()
}

#[test]
fn every_listen_form_listens_and_takes_a_transfer() {
    let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let mut forms = vec![
        ("0", "127.0.0.1"),
        (":0", "127.0.0.1"),
        ("127.0.0.1:0", "127.0.0.1"),
        ("localhost:0", "localhost"),
    ];
    if v6 {
        forms.push(("[::1]:0", "[::1]"));
    }
    for (form, host) in forms {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("in");
        fs::create_dir(&out).unwrap();
        let srv = Server::start_on(form, dir.path(), &["--out", out.to_str().unwrap()]);
        let port = port_of(&srv.addr);
        assert_ne!(port, 0, "{form}: {}", srv.addr);
        if form.starts_with('[') {
            assert!(srv.addr.starts_with("[::1]:"), "{form}: {}", srv.addr);
        }
        let data = random_bytes(70_000, 26);
        let file = dir.path().join("data.bin");
        fs::write(&file, &data).unwrap();
        let sent = send_file(&srv, &format!("{host}:{port}"), &file);
        assert!(sent.status.success(), "{form}: {}", text(&sent.stderr));
        let got = fs::read(out.join("data.bin")).unwrap();
        assert_eq!(sha256(&got), sha256(&data), "{form}");
    }
}

#[test]
fn bad_listen_forms_are_one_line_usage_errors() {
    let verbs: &[&[&str]] = &[
        &["serve"],
        &["offer"],
        &["pipe"],
        &["forward", "--to", "127.0.0.1:22"],
        &["relay"],
    ];
    let bad = [
        ("127.0.0.1", "127.0.0.1:PORT"),
        ("host:http", "not a port"),
        ("99999", "not a port"),
        ("::1", "[::1]:PORT"),
        ("a b:1", "not a host name"),
    ];
    for verb in verbs {
        for (form, hint) in bad {
            let mut args = verb.to_vec();
            args.extend(["--listen", form]);
            let out = run(&args, |_| {});
            let line = usage_error(&out);
            assert!(line.contains(hint), "{args:?}: {line}");
        }
    }
    let out = run(&["forward", "--to", "h:1", "--local", "127.0.0.1"], |_| {});
    assert!(usage_error(&out).contains("127.0.0.1:PORT"));
}

#[test]
fn the_ncat_form_says_to_type_host_colon_port() {
    let dir = tempfile::tempdir().unwrap();
    let peers = dir.path().join("peers");
    let cases: &[(&[&str], &str)] = &[
        (&["send", "127.0.0.1", "7878"], "pincat send 127.0.0.1:7878"),
        (&["get", "127.0.0.1", "7878"], "pincat get 127.0.0.1:7878"),
        (
            &["pipe", "example.org", "7000"],
            "pincat pipe example.org:7000",
        ),
        (
            &["send", "::1", "7878", "--pin", &"ab".repeat(32)],
            "[::1]:7878",
        ),
        (
            &["forward", "--to", "127.0.0.1", "22", "--local", "2222"],
            "--to 127.0.0.1:22",
        ),
        (
            &["fingerprint", "--remote", "127.0.0.1", "7878"],
            "--remote 127.0.0.1:7878",
        ),
    ];
    for (args, want) in cases {
        let out = run(args, |c| {
            c.current_dir(dir.path()).env("PINCAT_PEERS", &peers);
        });
        let line = usage_error(&out);
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(!line.contains("known peer"), "{args:?}: {line}");
        let usage = format!("Usage: pincat {} ", args[0]);
        assert!(text(&out.stderr).contains(&usage), "{}", text(&out.stderr));
    }
    // A second argument that is a file is a file: the error is the
    // address's, which has no port.
    fs::write(dir.path().join("7878"), b"x").unwrap();
    let out = run(&["send", "127.0.0.1", "7878"], |c| {
        c.current_dir(dir.path()).env("PINCAT_PEERS", &peers);
    });
    let line = usage_error(&out);
    assert!(line.contains("127.0.0.1 has no port"), "{line}");
}

#[test]
fn serve_k_takes_two_transfers_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("in");
    fs::create_dir(&out).unwrap();
    let mut srv = Server::start(dir.path(), &["-k", "--out", out.to_str().unwrap()]);
    for (i, name) in ["one.bin", "two.bin"].into_iter().enumerate() {
        let data = random_bytes(10_000 + i, i as u64);
        let file = dir.path().join(name);
        fs::write(&file, &data).unwrap();
        let sent = send_file(&srv, &srv.addr.clone(), &file);
        assert!(sent.status.success(), "{name}: {}", text(&sent.stderr));
        assert_eq!(fs::read(out.join(name)).unwrap(), data, "{name}");
    }
    assert!(srv.child.try_wait().unwrap().is_none(), "serve -k exited");
}

#[test]
fn every_verb_has_a_man_page_with_examples_exit_status_and_its_flags() {
    for verb in VERBS {
        let out = run(&["man", verb], |_| {});
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
        let page = text(&out.stdout);
        assert!(page.contains(&format!(".TH pincat-{verb} 1")), "{verb}");
        assert!(page.contains(".SH EXAMPLES"), "{verb}");
        assert!(page.contains(".SH \"EXIT STATUS\""), "{verb}");
        assert!(page.contains("\\fB12\\fR"), "{verb}");
        assert!(page.contains(&format!("pincat {verb}")), "{verb}");
        let help = text(&run(&[verb, "--help"], |_| {}).stdout);
        let flags = long_flags(&help);
        if *verb == "serve" {
            assert!(
                flags.len() > 20 && flags.contains(&"--keep-open".into()),
                "{flags:?}"
            );
        }
        for flag in flags {
            let roff = flag.replace('-', "\\-");
            assert!(page.contains(&roff), "{verb}: {flag} not in its page");
        }
    }
    let top = text(&run(&["man"], |_| {}).stdout);
    assert!(top.contains(".TH pincat 1") && top.contains(".SH EXAMPLES"));
    let sub = text(&run(&["man", "peers", "add"], |_| {}).stdout);
    assert!(sub.contains("\\-\\-replace") && sub.contains(".SH EXAMPLES"));
    for (args, lists) in [
        (&["man", "nope"][..], "serve"),
        (&["man", "peers", "nope"], "add"),
    ] {
        let out = run(args, |_| {});
        let line = usage_error(&out);
        assert!(line.contains("nope") && line.contains(lists), "{line}");
    }
}

/// The `--long` flags an options list shows (`--help` and `--version` aside).
fn long_flags(help: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for line in help.lines().map(str::trim_start) {
        // "-k, --keep-open" or "--listen <...>"
        let short = line.starts_with('-') && line.get(2..4) == Some(", ");
        let line = if short { &line[4..] } else { line };
        let Some(name) = line.strip_prefix("--") else {
            continue;
        };
        let name: String = name
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !name.is_empty() && name != "help" && name != "version" {
            flags.push(format!("--{name}"));
        }
    }
    flags
}

#[test]
fn every_verbs_help_ends_with_two_to_four_examples() {
    for verb in VERBS {
        for h in ["-h", "--help"] {
            let help = text(&run(&[verb, h], |_| {}).stdout);
            let (_, examples) = help
                .rsplit_once("\nExamples:\n")
                .unwrap_or_else(|| panic!("{verb} {h}: no Examples section\n{help}"));
            let cmds: Vec<&str> = examples
                .lines()
                .filter(|l| l.starts_with("    "))
                .map(str::trim)
                .collect();
            assert!((2..=4).contains(&cmds.len()), "{verb}: {examples}");
            assert!(
                cmds.iter()
                    .all(|c| c.contains("pincat") || c.starts_with("ssh"))
            );
            // Nothing after the examples.
            let last = examples.trim_end().lines().last().unwrap();
            assert!(last.starts_with("    "), "{verb}: ends with {last:?}");
        }
    }
    let serve = text(&run(&["serve", "--help"], |_| {}).stdout);
    assert!(
        serve
            .trim_end()
            .ends_with("pincat serve --allow FP -k --out ./in"),
        "{serve}"
    );
}

#[test]
fn bash_completion_offers_known_peer_names_for_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let peers = dir.path().join("peers");
    let pin = "cd".repeat(32);
    for name in ["laptop", "lab-box"] {
        let out = run(
            &["peers", "add", name, "127.0.0.1:7878", "--pin", &pin],
            |c| {
                c.env("PINCAT_PEERS", &peers);
            },
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let names = run(&["peers", "list", "--names"], |c| {
        c.env("PINCAT_PEERS", &peers);
    });
    assert_eq!(text(&names.stdout), "laptop\nlab-box\n");
    let script = text(&run(&["completions", "bash"], |_| {}).stdout);
    assert!(script.contains("pincat peers list --names"));
    assert!(script.contains("complete -F _pincat_with_peers"));
    let path = dir.path().join("pincat.bash");
    fs::write(&path, &script).unwrap();
    // Completing in a real bash, with this pincat on the PATH.
    let bin = Path::new(env!("CARGO_BIN_EXE_pincat")).parent().unwrap();
    let probe = r#"source "$1"
t() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
  _pincat_with_peers pincat "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
  echo "${COMPREPLY[*]}"; }
t pincat send la; t pincat get --quiet ""; t pincat forward --to l; t pincat send --pin ""
t pincat se"#;
    let out = std::process::Command::new("bash")
        .args(["-c", probe, "bash"])
        .arg(&path)
        .env("PINCAT_PEERS", &peers)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 5, "{}", text(&out.stderr));
    assert_eq!(lines[0], "laptop lab-box");
    assert_eq!(lines[1], "laptop lab-box");
    assert_eq!(lines[2], "laptop lab-box");
    assert!(
        !lines[3].contains("laptop"),
        "a --pin value is not a peer: {}",
        lines[3]
    );
    assert_eq!(lines[4], "serve send");
    for shell in ["zsh", "fish"] {
        let script = text(&run(&["completions", shell], |_| {}).stdout);
        assert!(script.contains("pincat peers list --names"), "{shell}");
    }
}
