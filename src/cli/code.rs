//! The pairing code on the command line: `--code CODE|env:VAR|-`, read the
//! same way by listeners, dialers and `fingerprint --remote`.

use anyhow::{Context, anyhow};
use clap::Args;
use pincat::pair::Code;

/// The pairing code: on a listener a fixed one instead of a fresh one, on a
/// dialer the listener's.
#[derive(Debug, Args)]
pub struct CodeArgs {
    /// The code: CODE, env:VAR (read, then removed from the environment), or - (read a line from the terminal, else stdin). A command line is visible to every local user: prefer env:VAR or -.
    #[arg(long, value_name = "CODE")]
    pub code: Option<String>,
}

/// Reads `--code` of a dialer, if given.
pub fn dial_code(code: &CodeArgs) -> pincat::Result<Option<Code>> {
    code.code.as_deref().map(read_code).transpose()
}

/// A code from `--code`: CODE, env:VAR (removed from the environment once
/// read), or - (a line from the terminal, else from stdin).
pub fn read_code(spec: &str) -> pincat::Result<Code> {
    let text = if let Some(var) = spec.strip_prefix("env:") {
        pincat::take_env_secret(var)
            .ok_or_else(|| anyhow!("--code env:{var}: the variable is not set"))?
            .into_string()
            .map_err(|_| anyhow!("--code env:{var}: the code is not UTF-8"))?
    } else if spec == "-" {
        read_code_line()?
    } else {
        spec.to_string()
    };
    Ok(Code::parse(&text).map_err(|e| anyhow!("--code: {e}"))?)
}

fn read_code_line() -> pincat::Result<String> {
    use std::io::{BufRead, Write};
    let mut line = String::new();
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    {
        Ok(tty) => {
            let _ = (&tty).write_all(b"pincat: code: ");
            std::io::BufReader::new(tty).read_line(&mut line).map(drop)
        }
        // A byte at a time: what follows the code on stdin stays unread
        // for the transfer (`pipe` reads the descriptor itself).
        Err(_) => pincat::read_stdin_line(1024).map(|l| line = l),
    }
    .context("--code -: cannot read the code")?;
    Ok(line)
}
