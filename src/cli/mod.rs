//! The binary's face: the top-level command line and the one place a
//! failure becomes a message and an exit code. Each verb group's clap flags
//! live beside their translation into library options in a child module;
//! clap types stop here, the library takes plain option structs.
//!
//! Dependencies point one way: this module uses its children, a child uses
//! only siblings that do not use it back, and no child uses this module
//! (a usage mistake is returned as a [`usage::Usage`] error and reported
//! here, with clap's usage line).

mod addr;
mod code;
mod completions;
mod dial;
mod duration;
mod examples;
mod exec;
mod forward;
mod identity;
mod listen;
mod man;
mod offer;
mod output;
mod paths;
mod peers;
mod pipe;
mod progress;
mod relay;
mod send;
mod serve;
mod tls;
mod usage;
mod via;

use clap::{CommandFactory, Parser, Subcommand};
use pincat::{Event, Events, ExitCode, Mode};

/// Move data between two machines over TLS 1.3, trusting only a pinned
/// certificate fingerprint.
#[derive(Debug, Parser)]
#[command(name = "pincat", version, about, long_about = None, max_term_width = 100)]
#[command(after_help = examples::help("pincat"))]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive: listen, print the fingerprint and a send command, store what arrives.
    #[command(after_help = examples::help("serve"))]
    Serve(serve::ServeArgs),
    /// Send stdin or files to a pinned receiver; exit 0 only on its receipt.
    #[command(after_help = examples::help("send"))]
    Send(send::SendArgs),
    /// Offer stdin or files: listen, print the fingerprint and a get command, give to takers.
    #[command(after_help = examples::help("offer"))]
    Offer(offer::OfferArgs),
    /// Fetch from a pinned `pincat offer` and store it as serve would; exit 0 once durable.
    #[command(after_help = examples::help("get"))]
    Get(offer::GetArgs),
    /// Full duplex: stdin to the peer and the peer to stdout, at the same time.
    #[command(after_help = examples::help("pipe"))]
    Pipe(pipe::PipeArgs),
    /// Carry a TCP service over pinned TLS (exposing end: --listen; using end: --local).
    #[command(after_help = examples::help("forward"))]
    Forward(forward::ForwardArgs),
    /// Run a relay that pairs two listeners' and dialers' connections by token and splices them (magic-wormhole transit relay protocol); it never sees the data.
    #[command(after_help = examples::help("relay"))]
    Relay(relay::RelayArgs),
    /// Manage persistent identities.
    #[command(subcommand, after_help = examples::help("identity"))]
    Identity(identity::IdentityCommand),
    /// Print the SHA-256 fingerprint of a certificate/identity file or of a remote server.
    #[command(after_help = examples::help("fingerprint"))]
    Fingerprint(identity::FingerprintArgs),
    /// Known peers: names for HOST:PORT and their pins, usable in place of HOST:PORT --pin.
    #[command(subcommand, after_help = examples::help("peers"))]
    Peers(peers::PeersCommand),
    /// Print a shell completion script (known peer names complete the targets of send, get, pipe and forward --to).
    #[command(after_help = examples::help("completions"))]
    Completions(completions::CompletionsArgs),
    /// Print the manual page of pincat or of one verb (roff; through man(1) on a terminal).
    #[command(after_help = examples::help("man"))]
    Man(man::ManArgs),
}

impl Command {
    /// The verb, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Serve(_) => "serve",
            Command::Send(_) => "send",
            Command::Offer(_) => "offer",
            Command::Get(_) => "get",
            Command::Pipe(_) => "pipe",
            Command::Forward(_) => "forward",
            Command::Relay(_) => "relay",
            Command::Identity(_) => "identity",
            Command::Fingerprint(_) => "fingerprint",
            Command::Peers(_) => "peers",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }

    /// Whether failures are reported as a JSON `error` event (--json).
    fn json(&self) -> bool {
        match self {
            Command::Serve(a) => a.output.json,
            Command::Send(a) => a.output.json,
            Command::Offer(a) => a.output.json,
            Command::Get(a) => a.output.json,
            Command::Pipe(a) => a.output.json,
            Command::Forward(a) => a.output.json,
            Command::Relay(a) => a.output.json,
            _ => false,
        }
    }
}

/// Runs one command and returns the process exit code; every failure is
/// reported exactly once (a JSON `error` event with --json, else one line).
/// A usage mistake ends the process the way clap's own do (exit 2).
pub fn run(cli: Cli) -> ExitCode {
    let json = cli.command.json();
    let verb = cli.command.name();
    let Err(e) = dispatch(cli) else {
        return ExitCode::Success;
    };
    if let Some(msg) = usage::message(&e) {
        // With the verb's own usage line, as clap shows for its mistakes.
        let mut top = Cli::command();
        top.build();
        let mut cmd = top.find_subcommand_mut(verb).cloned().unwrap_or(top);
        cmd.error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit();
    }
    if json {
        Events::stderr(Mode::Json).emit(match e.handler_status() {
            // The receiver's handler failed: its status too.
            Some(status) => Event::Handler {
                peer: None,
                status: status.to_string(),
                ok: false,
                message: format!("{e:#}"),
                reply_bytes: 0,
            },
            None => Event::Error {
                peer: None,
                code: e.code(),
                message: format!("{e:#}"),
            },
        });
    } else if !e.shown() {
        eprintln!("pincat: error: {e:#}");
    }
    e.exit_code()
}

fn dispatch(cli: Cli) -> pincat::Result<()> {
    pincat::tune_allocator();
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Send(a) => send::run(a),
        Command::Offer(a) => offer::offer(a),
        Command::Get(a) => offer::get(a),
        Command::Pipe(a) => pipe::run(a),
        Command::Forward(a) => forward::run(a),
        Command::Relay(a) => relay::run(a),
        Command::Identity(cmd) => identity::identity(cmd),
        Command::Fingerprint(a) => identity::fingerprint(a),
        Command::Peers(cmd) => peers::run(cmd),
        Command::Completions(a) => completions::run(Cli::command(), &a),
        Command::Man(a) => man::run(Cli::command(), &a),
    }
}

#[cfg(test)]
mod tests {
    use super::duration::ZERO_DURATION;
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn zero_is_the_same_usage_error_for_every_duration_flag() {
        let pin = "ab".repeat(32);
        let cases: &[(&[&str], &str)] = &[
            (&["serve"], "--handshake-timeout"),
            (&["serve"], "--idle-timeout"),
            (&["serve"], "--timeout"),
            (&["send", "h:1", "--pin", &pin], "--connect-timeout"),
            (&["send", "h:1", "--pin", &pin], "--retry-for"),
            (&["send", "h:1", "--pin", &pin], "--handshake-timeout"),
            (&["send", "h:1", "--pin", &pin], "--idle-timeout"),
            (&["fingerprint", "--remote", "h:1"], "--connect-timeout"),
            (&["offer"], "--expire"),
            (&["offer"], "--resume-wait"),
            (&["serve"], "--resume-wait"),
            (&["serve"], "--exec-timeout"),
            (&["offer"], "--idle-timeout"),
            (&["offer"], "--timeout"),
            (&["offer"], "--handshake-timeout"),
            (&["get", "h:1", "--pin", &pin], "--connect-timeout"),
            (&["get", "h:1", "--pin", &pin], "--retry-for"),
            (&["get", "h:1", "--pin", &pin], "--handshake-timeout"),
            (&["get", "h:1", "--pin", &pin], "--idle-timeout"),
            (&["pipe", "h:1"], "--connect-timeout"),
            (&["pipe", "h:1"], "--retry-for"),
            (&["pipe", "h:1"], "--handshake-timeout"),
            (&["pipe", "h:1"], "--idle-timeout"),
            (&["pipe", "h:1"], "--timeout"),
            (&["relay"], "--line-timeout"),
            (&["relay"], "--pending-timeout"),
            (&["relay"], "--idle-timeout"),
            (
                &["forward", "--to", "h:1", "--local", "127.0.0.1:1"],
                "--connect-timeout",
            ),
            (
                &["forward", "--to", "h:1", "--local", "127.0.0.1:1"],
                "--retry-for",
            ),
            (
                &["forward", "--to", "h:1", "--local", "127.0.0.1:1"],
                "--handshake-timeout",
            ),
            (
                &["forward", "--to", "h:1", "--local", "127.0.0.1:1"],
                "--idle-timeout",
            ),
        ];
        for (args, flag) in cases {
            for zero in ["0", "0s", "0ms"] {
                let mut argv = vec!["pincat"];
                argv.extend_from_slice(args);
                argv.extend([*flag, zero]);
                let err = Cli::try_parse_from(argv).unwrap_err();
                assert_eq!(err.exit_code(), 2, "{flag} {zero}");
                let msg = err.to_string();
                assert!(msg.contains(flag) && msg.contains(ZERO_DURATION), "{msg}");
            }
        }
        // Every duration flag is in the list above.
        let mut seen = 0;
        for sub in Cli::command().get_subcommands() {
            for a in sub.get_arguments() {
                if a.get_value_names() == Some(&["DURATION".into()]) {
                    let flag = format!("--{}", a.get_long().unwrap_or_default());
                    let sub = sub.get_name();
                    assert!(
                        cases.iter().any(|(c, f)| c[0] == sub && *f == flag),
                        "{sub} {flag} is not tested"
                    );
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, cases.len());
    }

    /// The verbs a person can ask `pincat man` and `--help` about.
    fn verbs() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|n| n != "help")
            .collect()
    }

    #[test]
    fn every_verb_has_a_page_and_two_to_four_examples() {
        assert_eq!(verbs(), man::VERBS);
        for v in verbs().iter().map(String::as_str).chain(["pincat"]) {
            let n = examples::of(v).len();
            assert!((2..=4).contains(&n), "{v}: {n} examples");
            let page = man::page(Cli::command(), (v != "pincat").then_some(v), None).unwrap();
            let page = String::from_utf8(page).unwrap();
            for section in [".SH EXAMPLES", ".SH \"EXIT STATUS\"", ".SH OPTIONS"] {
                assert!(page.contains(section), "{v}: no {section}");
            }
            assert!(page.contains("\\fB12\\fR\nThe receiver's handler"), "{v}");
        }
    }

    #[test]
    fn every_example_parses() {
        let fp = "ab".repeat(32);
        for v in verbs().iter().map(String::as_str).chain(["pincat"]) {
            for e in examples::of(v) {
                // The pincat command of the line: after a pipe, before a
                // redirection or a second command.
                let cmd = e.cmd.rsplit("| ").next().unwrap_or(e.cmd);
                let cmd = cmd.split(['>', '&']).next().unwrap_or(cmd);
                if !cmd.starts_with("pincat ") {
                    continue;
                }
                let argv: Vec<String> = cmd
                    .split_whitespace()
                    .map(|w| match w {
                        "FP" => fp.clone(),
                        "CODE" => "spend-zoom-churn".into(),
                        w => w
                            .replace("HOST", "192.0.2.1")
                            .replace("RENDEZVOUS", "3f9c0a51d2b87e46a1c0f5d2"),
                    })
                    .collect();
                if let Err(err) = Cli::try_parse_from(&argv) {
                    panic!("{v}: {cmd}: {err}");
                }
            }
        }
    }

    #[test]
    fn keep_open_is_k_wherever_it_is() {
        let mut seen = 0;
        for sub in Cli::command().get_subcommands() {
            for a in sub.get_arguments() {
                if a.get_long() == Some("keep-open") {
                    assert_eq!(a.get_short(), Some('k'), "{}", sub.get_name());
                    seen += 1;
                }
            }
        }
        assert!(seen >= 2);
    }

    #[test]
    fn bad_pin_is_a_usage_error_naming_the_flag() {
        let err = Cli::try_parse_from(["pincat", "send", "h:1", "--pin", "abcd"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--pin"), "{err}");
    }

    #[test]
    fn usage_mistakes_found_after_parsing_are_recognised() {
        let e = usage::usage("give --listen (exposing end) or --local (using end)");
        assert_eq!(
            usage::message(&e),
            Some("give --listen (exposing end) or --local (using end)")
        );
        let other: pincat::Error = anyhow::anyhow!("not a usage mistake").into();
        assert_eq!(usage::message(&other), None);
    }
}
