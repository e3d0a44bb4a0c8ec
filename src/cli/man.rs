//! `pincat man [VERB [SUBCOMMAND]]`: the manual pages, generated from the
//! clap definitions (clap_mangen) with the sections clap cannot know:
//! EXAMPLES (the table `--help` shows too), EXIT STATUS and SEE ALSO.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use pincat::ExitCode;

use super::examples;
use super::usage::usage;

/// The verbs with a page of their own (`pincat-VERB(1)`), as `pincat`
/// names its subcommands.
pub const VERBS: &[&str] = &[
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

/// `pincat man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The verb whose page to print; none prints pincat(1).
    #[arg(value_name = "VERB", value_parser = VerbParser)]
    pub verb: Option<String>,
    /// For identity and peers: one subcommand's page.
    #[arg(value_name = "SUBCOMMAND", requires = "verb")]
    pub sub: Option<String>,
}

/// A verb with a page, refused in one line that lists them.
#[derive(Debug, Clone, Copy)]
struct VerbParser;

impl TypedValueParser for VerbParser {
    type Value = String;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        match value.to_str() {
            Some(v) if VERBS.contains(&v) => Ok(v.to_string()),
            _ => Err(clap::Error::raw(
                ErrorKind::InvalidValue,
                format!(
                    "no manual page for {:?}; the verbs are: {}\n",
                    value.to_string_lossy(),
                    VERBS.join(", ")
                ),
            )),
        }
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(VERBS.iter().map(PossibleValue::new)))
    }
}

/// Prints the page `a` asks for: through `man -l -` when stdout is a
/// terminal and man(1) reads pages from stdin, else as roff.
pub fn run(top: clap::Command, a: &ManArgs) -> pincat::Result<()> {
    let page = page(top, a.verb.as_deref(), a.sub.as_deref())?;
    if std::io::stdout().is_terminal() && show_in_man(&page) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&page)
        .and_then(|()| out.flush())
        .context("cannot write the manual page to stdout")?;
    Ok(())
}

/// Whether man(1) showed `page` (GNU man reads a page from stdin with -l).
fn show_in_man(page: &[u8]) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let child = std::process::Command::new("man")
        .args(["-l", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let fed = child
        .stdin
        .take()
        .is_some_and(|mut s| s.write_all(page).is_ok());
    child.wait().is_ok_and(|s| s.success()) && fed
}

/// The roff page of `pincat`, of `pincat VERB`, or of `pincat VERB SUB`.
pub fn page(
    mut top: clap::Command,
    verb: Option<&str>,
    sub: Option<&str>,
) -> pincat::Result<Vec<u8>> {
    top.build();
    let Some(verb) = verb else {
        return render(&top, "pincat", &[]);
    };
    let group = top
        .find_subcommand(verb)
        .ok_or_else(|| usage(format!("no manual page for {verb:?}")))?;
    let cmd = match sub {
        None => group,
        Some(s) => group
            .get_subcommands()
            .find(|c| c.get_name() == s && s != "help")
            .ok_or_else(|| {
                let names: Vec<&str> = group
                    .get_subcommands()
                    .map(clap::Command::get_name)
                    .filter(|n| *n != "help")
                    .collect();
                let names = if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                };
                usage(format!(
                    "pincat {verb} has no subcommand {s:?}; its subcommands: {names}"
                ))
            })?,
    };
    render(cmd, verb, VERBS)
}

/// `cmd`'s page: clap_mangen's sections, then EXAMPLES (of `verb`), EXIT
/// STATUS and SEE ALSO (pincat(1) and the pages of `related`).
fn render(cmd: &clap::Command, verb: &str, related: &[&str]) -> pincat::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("pincat {}", env!("CARGO_PKG_VERSION")))
        .manual("pincat manual");
    let mut out = Vec::new();
    (|| -> std::io::Result<()> {
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        if cmd.get_subcommands().next().is_some() {
            man.render_subcommands_section(&mut out)?;
        }
        Ok(())
    })()
    .context("cannot render the manual page")?;
    // Each clap_mangen section repeats the same preamble: keep the first.
    let preamble = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let text = String::from_utf8_lossy(&out).into_owned();
    let mut out = match text.split_once(preamble) {
        Some((head, rest)) => format!("{head}{preamble}{}", rest.replace(preamble, "")),
        None => text,
    }
    .into_bytes();
    out.extend(examples_section(verb).into_bytes());
    out.extend(exit_status_section().into_bytes());
    out.extend(see_also(verb, related).into_bytes());
    Ok(out)
}

/// Text escaped for roff: backslashes, minus signs, and a leading control
/// character.
fn esc(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    match s.starts_with(['.', '\'']) {
        true => format!("\\&{s}"),
        false => s,
    }
}

/// The EXAMPLES section: each example's sentence, then its command in bold.
fn examples_section(verb: &str) -> String {
    let mut s = String::from(".SH EXAMPLES\n");
    for e in examples::of(verb) {
        s.push_str(&format!(
            ".PP\n{}:\n.RS 4\n.nf\n\\fB{}\\fR\n.fi\n.RE\n",
            esc(e.what),
            esc(e.cmd)
        ));
    }
    s
}

/// Every exit code, in the order of [`ExitCode`].
const EXIT_CODES: [ExitCode; 14] = [
    ExitCode::Success,
    ExitCode::Failure,
    ExitCode::Usage,
    ExitCode::PinMismatch,
    ExitCode::Refused,
    ExitCode::NotAllowed,
    ExitCode::Timeout,
    ExitCode::Incomplete,
    ExitCode::Connect,
    ExitCode::CodeNotConfirmed,
    ExitCode::CodeAttempts,
    ExitCode::Skipped,
    ExitCode::Handler,
    ExitCode::Interrupted,
];

/// What an exit code means, for the page (a new code fails to compile
/// until it is described here).
fn meaning(code: ExitCode) -> &'static str {
    match code {
        ExitCode::Success => "Done: everything was delivered and confirmed.",
        ExitCode::Failure => {
            "Any other failure (local I/O, a file that changed while read, an unexpected TLS error)."
        }
        ExitCode::Usage => "A bad command line.",
        ExitCode::PinMismatch => {
            "The peer presented a key other than the pinned one (or a known peer's key changed)."
        }
        ExitCode::Refused => {
            "The receiver refused the transfer (a file exists, a bad name, no space, busy)."
        }
        ExitCode::NotAllowed => "The listener did not accept our client certificate (--allow).",
        ExitCode::Timeout => {
            "A timeout: connecting, the handshake, an idle peer, or waiting for a peer (--timeout)."
        }
        ExitCode::Incomplete => {
            "The peer broke off or broke the protocol; delivery is not confirmed."
        }
        ExitCode::Connect => "Could not connect to the address at all.",
        ExitCode::CodeNotConfirmed => {
            "The code was not confirmed (a wrong code, someone in the middle, or a listener that takes no more codes); nothing was sent."
        }
        ExitCode::CodeAttempts => {
            "A listener ended after its failed code attempts; nothing was given or stored."
        }
        ExitCode::Skipped => {
            "--strict: something in the directories would have been skipped; nothing was sent."
        }
        ExitCode::Handler => {
            "The receiver's handler (serve --exec) failed: a non-zero exit, a signal, its timeout, or it could not start."
        }
        ExitCode::Interrupted => "Stopped by SIGINT or SIGTERM.",
    }
}

/// The EXIT STATUS section: every code and its meaning.
fn exit_status_section() -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for code in EXIT_CODES {
        s.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            code as i32,
            esc(meaning(code))
        ));
    }
    s
}

/// The SEE ALSO section: pincat(1) and the other verbs' pages.
fn see_also(verb: &str, related: &[&str]) -> String {
    let mut pages: Vec<String> = Vec::new();
    if verb != "pincat" {
        pages.push("\\fBpincat\\fR(1)".into());
    }
    pages.extend(
        related
            .iter()
            .filter(|v| **v != verb)
            .map(|v| format!("\\fBpincat\\-{}\\fR(1)", esc(v))),
    );
    if pages.is_empty() {
        pages.extend(
            VERBS
                .iter()
                .map(|v| format!("\\fBpincat\\-{}\\fR(1)", esc(v))),
        );
    }
    format!(
        ".SH \"SEE ALSO\"\n{}\n.PP\nEach page is printed by \\fBpincat man\\fR [\\fIVERB\\fR].\n",
        pages.join(",\n")
    )
}
