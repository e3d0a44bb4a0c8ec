//! Every command block of README.md and docs/*.md, run against the real
//! binary on loopback, so the documents cannot rot.
//!
//! The convention (also in docs/contributing.md):
//! - Fenced blocks tagged `sh`, `bash`, `shell` or `console` are commands;
//!   blocks tagged `text`, `rust`, `toml` or `json` are not run, and any
//!   other tag (or none) fails the test.
//! - `sh` blocks: each line is a command (`\` continues a line; `#` lines
//!   are comments). `console` blocks: `$ ` lines are commands, the lines
//!   after one are what it shows. Shown lines must appear in its output
//!   (stdout and stderr together), in order; lines left out are not compared, and
//!   `…` in a shown line stands for any text.
//! - Every command must exit 0. To show a failure, end the command with
//!   `|| echo "exit $?"` and show `exit N`.
//! - A command starting `pincat serve`, `pincat offer`, `pincat relay`,
//!   `pincat pipe --listen` or `pincat forward --listen` listens: it runs
//!   in the background in a directory of its own (empty for `serve`), bound
//!   to `127.0.0.1:0`, and its dial line gives the values of the
//!   placeholders the later commands use: `192.0.2.2:7878` (its address),
//!   `5c1e0d…` (its pin), `acre-canon-doze` (its code), and for relays
//!   `relay.example:4001` and `relay.example:4001/3f9c0a51d2b87e46a1c0f5d2`.
//!   Listeners stop at the end of their block (one that serves many,
//!   `--keep-open`/`-k`, a relay, `forward --listen`, is stopped; a one-shot
//!   one must have exited 0 by itself), or at the end of the next block if their own
//!   block runs nothing else (a `$ pincat serve` shown with its output).
//! - The other commands run with `sh -c` (set -e) in the sender's
//!   directory, which holds small fixtures (report.pdf, notes.txt, data,
//!   dump.sql, photos/, project/); the `*.id`, `*.pem`, `*.allow` and
//!   `*.sh` files made there are copied to each later listener's directory.
//!   Each file's blocks run in order in one
//!   private world: its own HOME (so its own peers file and state).
//! - A block starting `#!` is a script: run whole with bash. One whose
//!   second line is `# NAME: what it does` (one word, e.g. `collect.sh`)
//!   is the contents of NAME: written, executable, into the sender's
//!   directory (and so into later listeners'), not run.
//! - A block that cannot run here is in `SKIPS` with its reason. A block
//!   neither run nor skipped cannot exist: every command block is run
//!   unless skipped, and a skip that names no block fails.

mod blocks;
mod fixtures;
mod session;

use std::path::Path;

use blocks::Block;

/// Blocks not run: (file, the block's first line, why).
const SKIPS: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "cargo install --locked --path .",
        "installs into ~/.cargo/bin; the test runs the binary cargo built",
    ),
    (
        "README.md",
        "cargo run --release -- serve",
        "builds the release binary and runs the test suite itself; the quick start runs the same serve",
    ),
    (
        "docs/cli.md",
        "# on the database host:",
        "needs a PostgreSQL server behind the tunnel; tests/it/verbs.rs forwards to an echo service",
    ),
    (
        "docs/cli.md",
        "$ pincat send HOST:PORT --pin FP big.iso     # cut at 50%",
        "needs a transfer cut halfway; tests/it/resume.rs cuts one through a proxy",
    ),
    (
        "docs/interop.md",
        "pincat send --raw host:4433 --pin \"$(openssl x509 -in cert.pem -noout -fingerprint -sha256)\" < data",
        "alternatives for both ends, each with openssl, socat or ncat and cert.pem; tests/it/interop.rs runs every pair",
    ),
];

/// The documents whose blocks are run: README.md, then docs/*.md by name.
fn documents() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    names.sort();
    names.insert(0, "README.md".into());
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(root.join(&n)).unwrap();
            (n, text)
        })
        .collect()
}

/// The skip-list entry naming `block` (its first line starts with the
/// entry's), if any.
fn skip_of(block: &Block) -> Option<usize> {
    SKIPS
        .iter()
        .position(|(file, first, _)| *file == block.file && block.first_line().starts_with(first))
}

#[test]
fn every_command_block_of_the_documents_runs() {
    let mut used = vec![false; SKIPS.len()];
    let (mut ran, mut skipped) = (0, 0);
    for (file, text) in documents() {
        let mut session = session::Session::new();
        for block in blocks::extract(&file, &text) {
            if let Some(i) = skip_of(&block) {
                used[i] = true;
                skipped += 1;
                continue;
            }
            session.run(&block);
            ran += 1;
        }
        session.finish(&file);
    }
    let stale: Vec<_> = SKIPS
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(s, _)| (s.0, s.1))
        .collect();
    assert!(
        stale.is_empty(),
        "skip-list entries that name no block: {stale:?}"
    );
    eprintln!("docs: ran {ran} blocks, skipped {skipped}");
    assert!(ran > 0, "no command block found");
}

#[test]
fn shown_lines_match_with_ellipses() {
    use blocks::line_matches;
    assert!(line_matches("a…c", "abbbc"));
    assert!(line_matches(
        "…report.pdf…",
        "pincat: error: report.pdf exists"
    ));
    assert!(!line_matches("a…c", "abd"));
    assert!(!line_matches("exit 4", "exit 41"));
    assert!(line_matches("x…y…z", "x1y2z"));
}
