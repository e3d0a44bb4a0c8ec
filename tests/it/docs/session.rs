//! One walkthrough: the blocks of one Markdown file, run in order in a
//! private temporary world (its own `HOME`, a sender's directory with the
//! fixtures, a directory per listener), with the documents' placeholders
//! rewritten to what the listeners really print.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::blocks::{Block, Step, missing};
use crate::util::{wait_output, wait_until};

/// How long one command may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// How long a listener may take to print its dial line.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// The placeholders the documents use, with the kind of value each stands
/// for. Longest first, so a rendezvous is replaced before its relay.
const PLACEHOLDERS: &[(&str, Kind)] = &[
    ("relay.example:4001/3f9c0a51d2b87e46a1c0f5d2", Kind::Via),
    ("relay.example:4001", Kind::Relay),
    ("192.0.2.2:7878", Kind::Addr),
    ("[::]:7878", Kind::Addr),
    ("5c1e0d…", Kind::Pin),
    ("acre-canon-doze", Kind::Code),
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Addr,
    Pin,
    Code,
    Via,
    Relay,
}

/// Commands that listen: run in the background, in a directory of their own.
const LISTENERS: &[&str] = &[
    "pincat serve",
    "pincat offer",
    "pincat relay",
    "pincat pipe --listen",
    "pincat forward --listen",
];

struct Listener {
    child: Child,
    cmd: String,
    stderr: PathBuf,
}

/// The state of one file's walkthrough.
pub struct Session {
    root: tempfile::TempDir,
    bin: PathBuf,
    values: Vec<(Kind, String)>,
    listeners: Vec<Listener>,
    count: usize,
}

impl Session {
    pub fn new() -> Session {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pincat"), bin.join("pincat")).unwrap();
        for d in ["home/.config", "home/.local/state", "bob"] {
            fs::create_dir_all(root.path().join(d)).unwrap();
        }
        super::fixtures::write(&root.path().join("bob"));
        Session {
            root,
            bin,
            values: Vec::new(),
            listeners: Vec::new(),
            count: 0,
        }
    }

    /// Runs every step of `block`; panics with the block's place on a failure.
    pub fn run(&mut self, block: &Block) {
        if let Some(name) = block.file_of_script() {
            let path = self.dir("bob").join(name);
            fs::write(&path, block.body.join("\n") + "\n").unwrap();
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            return;
        }
        if block.is_script() {
            let script = self.substitute(&block.body.join("\n"));
            self.command(
                block,
                &Step {
                    cmd: script,
                    expect: Vec::new(),
                },
                "bash",
            );
            return;
        }
        let steps = super::blocks::steps(block);
        let mut dialed = false;
        for step in &steps {
            if is_listener(&step.cmd) {
                self.listen(block, step);
            } else {
                self.command(block, step, "sh");
                dialed = true;
            }
        }
        // A block of listeners only (a `$ pincat serve` shown with its
        // output) leaves them up for the next block, which dials them.
        if dialed {
            self.stop_listeners(block);
        }
    }

    /// Stops what is still listening at the end of the file.
    pub fn finish(&mut self, file: &str) {
        let end = Block {
            file: file.into(),
            line: 0,
            lang: String::new(),
            body: Vec::new(),
        };
        self.stop_listeners(&end);
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn shell(&self, program: &str, script: &str, dir: &Path) -> Command {
        let home = self.dir("home");
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(program);
        cmd.arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("PATH", path)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("NO_COLOR", "1")
            .env_remove("PINCAT_PEERS")
            .env_remove("PINCAT_STATE_DIR")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs one command in the sender's directory: it must exit 0 and show
    /// the lines the block shows.
    fn command(&self, block: &Block, step: &Step, program: &str) {
        let script = format!("exec 2>&1\nset -e\n{}", self.substitute(&step.cmd));
        let child = self
            .shell(program, &script, &self.dir("bob"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, COMMAND_LIMIT);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{}: `{}` failed ({}):\n{text}",
            block.at(),
            step.cmd,
            out.status
        );
        self.check_shown(block, step, &text);
    }

    fn check_shown(&self, block: &Block, step: &Step, text: &str) {
        let shown: Vec<String> = step.expect.iter().map(|l| self.substitute(l)).collect();
        let lacking = missing(&shown, text);
        assert!(
            lacking.is_empty(),
            "{}: `{}` did not show {lacking:?}; it printed:\n{text}",
            block.at(),
            step.cmd
        );
    }

    /// Starts a listener in a directory of its own (empty for `serve`, which
    /// stores there; with the fixtures for the others, which give them),
    /// bound to loopback, and learns its address, pin and code.
    fn listen(&mut self, block: &Block, step: &Step) {
        self.count += 1;
        let dir = self.dir(&format!("alice-{}", self.count));
        fs::create_dir_all(&dir).unwrap();
        if !step.cmd.starts_with("pincat serve") {
            super::fixtures::write(&dir);
        }
        self.share_keys(&dir);
        let stderr = self.dir(&format!("alice-{}.err", self.count));
        let script = format!("exec {}", self.substitute(&loopback(&step.cmd)));
        let child = self
            .shell("sh", &script, &dir)
            .stdout(fs::File::create(self.dir(&format!("alice-{}.out", self.count))).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut l = Listener {
            child,
            cmd: step.cmd.clone(),
            stderr,
        };
        let ready = wait_until(READY_LIMIT, || {
            dial_line(&read(&l.stderr)).is_some() || l.child.try_wait().unwrap().is_some()
        });
        let text = read(&l.stderr);
        let line = dial_line(&text);
        assert!(
            ready && line.is_some(),
            "{}: `{}` printed no dial line:\n{text}",
            block.at(),
            step.cmd
        );
        self.learn(line.unwrap());
        self.check_shown(block, step, &text);
        self.listeners.push(l);
    }

    /// Copies the identities, CA certificates, allow lists and scripts made
    /// in the sender's directory (`*.id`, `*.pem`, `*.allow`, `*.sh`) to a
    /// listener's: the documents make them on one machine and use them on
    /// both.
    fn share_keys(&self, dir: &Path) {
        for entry in fs::read_dir(self.dir("bob")).unwrap() {
            let path = entry.unwrap().path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ["id", "pem", "allow", "sh"].contains(&ext) {
                fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
    }

    /// Records the values of a dial line (or a relay's listening line).
    fn learn(&mut self, line: &str) {
        if let Some(addr) = line.strip_prefix("pincat: relay listening on ") {
            return self.set(Kind::Relay, addr.trim());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| words.iter().position(|w| *w == flag).map(|i| words[i + 1]);
        match (after("--via"), after("--to")) {
            (Some(via), _) => self.set(Kind::Via, via),
            (None, Some(to)) => self.set(Kind::Addr, to),
            (None, None) => self.set(Kind::Addr, words[2]),
        }
        if let Some(pin) = after("--pin") {
            self.set(Kind::Pin, pin);
        }
        match after("--code") {
            Some(code) => self.set(Kind::Code, code),
            None => self.values.retain(|(k, _)| *k != Kind::Code),
        }
    }

    fn set(&mut self, kind: Kind, value: &str) {
        self.values.retain(|(k, _)| *k != kind);
        self.values.push((kind, value.to_string()));
    }

    /// `text` with every placeholder whose value is known replaced by it.
    fn substitute(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (placeholder, kind) in PLACEHOLDERS {
            if let Some((_, v)) = self.values.iter().find(|(k, _)| k == kind) {
                out = out.replace(placeholder, v);
            }
        }
        out
    }

    /// Ends the block's listeners: one that serves many (`--keep-open`, a
    /// relay) is stopped; a one-shot one must have exited 0 by itself.
    fn stop_listeners(&mut self, block: &Block) {
        for mut l in self.listeners.drain(..) {
            let many = serves_many(&l.cmd);
            let done = !many
                && wait_until(Duration::from_secs(10), || {
                    l.child.try_wait().unwrap().is_some()
                });
            if !done {
                let _ = l.child.kill();
                let _ = l.child.wait();
                assert!(
                    many,
                    "{}: `{}` did not exit:\n{}",
                    block.at(),
                    l.cmd,
                    read(&l.stderr)
                );
                continue;
            }
            let status = l.child.wait().unwrap();
            assert!(
                status.success(),
                "{}: `{}` failed ({status}):\n{}",
                block.at(),
                l.cmd,
                read(&l.stderr)
            );
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for l in &mut self.listeners {
            let _ = l.child.kill();
            let _ = l.child.wait();
        }
    }
}

fn is_listener(cmd: &str) -> bool {
    LISTENERS.iter().any(|l| cmd.starts_with(l))
}

/// Whether a listener serves until stopped: `--keep-open` (`-k`), a relay,
/// the exposing end of a forward.
fn serves_many(cmd: &str) -> bool {
    cmd.split_whitespace()
        .any(|w| w == "--keep-open" || w == "-k")
        || cmd.starts_with("pincat relay")
        || cmd.starts_with("pincat forward")
}

/// The listener's command bound to loopback, port 0: the address given to
/// `--listen` (or `-l`) is replaced; without one (and without `--via`, which binds
/// no port) it is added after the verb.
fn loopback(cmd: &str) -> String {
    let mut words: Vec<String> = cmd.split(' ').map(String::from).collect();
    if let Some(i) = words.iter().position(|w| w == "--listen" || w == "-l") {
        match words.get(i + 1) {
            Some(a) if !a.starts_with('-') && !a.is_empty() => words[i + 1] = "127.0.0.1:0".into(),
            _ => words.insert(i + 1, "127.0.0.1:0".into()),
        }
    } else if !cmd.contains("--via") {
        words.insert(2, "--listen 127.0.0.1:0".into());
    }
    words.join(" ")
}

/// The paste-ready line a listener prints (or a relay's listening line).
fn dial_line(stderr: &str) -> Option<&str> {
    stderr.lines().find_map(|l| {
        let t = l.trim();
        (t.starts_with("pincat: relay listening on ")
            || (l.starts_with("  pincat ") && (t.contains("--pin") || t.contains("--code"))))
        .then_some(t)
    })
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}
