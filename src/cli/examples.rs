//! The examples of every verb: one table that ends each `--help` and fills
//! each man page's EXAMPLES section, so the two never disagree.
//! Upper-case words (HOST, FP, CODE, ...) stand for what a listener prints.

/// One example: what it does, and the command line.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    /// What it does, one sentence without a final period.
    pub what: &'static str,
    /// The command, as typed in a POSIX shell.
    pub cmd: &'static str,
}

const fn ex(what: &'static str, cmd: &'static str) -> Example {
    Example { what, cmd }
}

/// The examples of `verb` (`pincat` for the top-level page); empty for an
/// unknown one.
pub fn of(verb: &str) -> &'static [Example] {
    match verb {
        "pincat" => TOP,
        "serve" => SERVE,
        "send" => SEND,
        "offer" => OFFER,
        "get" => GET,
        "pipe" => PIPE,
        "forward" => FORWARD,
        "relay" => RELAY,
        "identity" => IDENTITY,
        "fingerprint" => FINGERPRINT,
        "peers" => PEERS,
        "completions" => COMPLETIONS,
        "man" => MAN,
        _ => &[],
    }
}

const TOP: &[Example] = &[
    ex(
        "Receive into ./in; it prints the line to run on the other machine",
        "pincat serve --out ./in",
    ),
    ex(
        "On the other machine, the printed line with the files to send",
        "pincat send HOST:7878 --pin FP --code CODE report.pdf photos/",
    ),
    ex("Read one verb's manual page", "pincat man send"),
];

const SERVE: &[Example] = &[
    ex(
        "Receive files into ./in (the sender runs the line printed here)",
        "pincat serve --out ./in",
    ),
    ex(
        "Listen on port 9000 and keep receiving after the first transfer",
        "pincat serve --listen 9000 -k --out ./in",
    ),
    ex(
        "Receive one stream into a file",
        "pincat serve --listen 127.0.0.1:7878 --out backup.tar",
    ),
    ex(
        "Admit only the sender holding this certificate, no code",
        "pincat serve --allow FP -k --out ./in",
    ),
];

const SEND: &[Example] = &[
    ex(
        "Send files and a directory as the receiver's printed line says",
        "pincat send HOST:7878 --pin FP --code CODE report.pdf photos/",
    ),
    ex(
        "Send a stream from stdin, checked by the code alone",
        "tar c project | pincat send HOST:7878 --code CODE",
    ),
    ex(
        "Send to a known peer by name (see pincat peers)",
        "pincat send laptop notes.txt",
    ),
    ex(
        "Send to an IPv6 address",
        "pincat send [2001:db8::5]:7878 --pin FP notes.txt",
    ),
];

const OFFER: &[Example] = &[
    ex(
        "Offer files to the first taker (it runs the line printed here)",
        "pincat offer report.pdf photos/",
    ),
    ex(
        "Offer a directory on port 9000 to three takers, then exit",
        "pincat offer --listen 9000 -k --max-gets 3 release/",
    ),
    ex(
        "Offer a stream from stdin (one taker)",
        "pg_dump db | pincat offer",
    ),
];

const GET: &[Example] = &[
    ex(
        "Fetch what is offered into ./in, as the offer's printed line says",
        "pincat get HOST:7878 --pin FP --code CODE --out ./in",
    ),
    ex(
        "Fetch an offered stream into a file",
        "pincat get HOST:7878 --code CODE --out db.sql",
    ),
    ex(
        "Bring ./mirror up to date from a known peer, sending only changes",
        "pincat get laptop --update --out ./mirror",
    ),
];

const PIPE: &[Example] = &[
    ex(
        "Listen on port 7000 for a full-duplex session",
        "pincat pipe --listen 7000",
    ),
    ex(
        "Join it from the other machine, with the printed code",
        "pincat pipe HOST:7000 --pin FP --code CODE",
    ),
    ex(
        "Hand the session to a program instead of the terminal",
        "pincat pipe --listen 7000 --exec cat",
    ),
];

const FORWARD: &[Example] = &[
    ex(
        "Exposing end: carry connections on port 2222 to the local SSH server",
        "pincat forward --listen 2222 --to 127.0.0.1:22",
    ),
    ex(
        "Using end: a local port 2222 (loopback) that reaches it",
        "pincat forward --local 2222 --to HOST:2222 --pin FP --code CODE",
    ),
    ex("Then, on the using end", "ssh -p 2222 127.0.0.1"),
];

const RELAY: &[Example] = &[
    ex("Run a relay on port 4001", "pincat relay --listen 4001"),
    ex(
        "A receiver that waits at the relay (it prints the send line)",
        "pincat serve --via RELAY:4001 --out ./in",
    ),
    ex(
        "The sender, through the relay",
        "pincat send --via RELAY:4001/RENDEZVOUS --pin FP --code CODE notes.txt",
    ),
];

const IDENTITY: &[Example] = &[
    ex(
        "Make a persistent identity; it prints the fingerprint",
        "pincat identity new server.id",
    ),
    ex(
        "Receive with it, so senders can pin it once",
        "pincat serve --identity server.id -k --out ./in",
    ),
    ex(
        "Make a CA and print the certificate its peers trust",
        "pincat identity new --ca ca.id && pincat identity cert ca.id > ca.pem",
    ),
];

const FINGERPRINT: &[Example] = &[
    ex("An identity's fingerprint", "pincat fingerprint server.id"),
    ex(
        "Its public-key pin, which survives a renewed certificate",
        "pincat fingerprint --spki server.id",
    ),
    ex(
        "What a listener presents (check it against its printed line)",
        "pincat fingerprint --remote HOST:7878",
    ),
];

const PEERS: &[Example] = &[
    ex(
        "Remember a receiver by name",
        "pincat peers add laptop HOST:7878 --pin FP",
    ),
    ex("Then send to it by name", "pincat send laptop notes.txt"),
    ex(
        "List the known peers, or only their names",
        "pincat peers list --names",
    ),
    ex("Forget one", "pincat peers remove laptop"),
];

const COMPLETIONS: &[Example] = &[
    ex(
        "Bash",
        "pincat completions bash > ~/.local/share/bash-completion/completions/pincat",
    ),
    ex(
        "Zsh (a directory on $fpath)",
        "pincat completions zsh > ~/.zfunc/_pincat",
    ),
    ex(
        "Fish",
        "pincat completions fish > ~/.config/fish/completions/pincat.fish",
    ),
];

const MAN: &[Example] = &[
    ex("The page of one verb", "pincat man serve"),
    ex("A group's subcommand", "pincat man peers add"),
    ex(
        "Write a page to a file",
        "pincat man serve > pincat-serve.1",
    ),
];

/// The text that ends `verb`'s `--help`: a styled `Examples:` heading,
/// then each example's sentence and its indented command.
pub fn help(verb: &str) -> String {
    let h = clap::builder::Styles::default().get_header().to_owned();
    let mut out = format!("{h}Examples:{h:#}\n");
    for e in of(verb) {
        out.push_str(&format!("  {}:\n    {}\n", e.what, e.cmd));
    }
    out.truncate(out.trim_end().len());
    out
}
