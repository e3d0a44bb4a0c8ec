//! `serve --exec PROG [ARGS...]` and its companions: the flags, and the
//! known peers' names a handler is told (`PINCAT_PEER_NAME`).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use pincat::exec::ExecOptions;
use pincat::peers::PeersFile;

use super::duration::parse_duration;

/// A program each transfer is handed to.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run PROG for each transfer (no shell), the message on its stdin, its stdout the sender's reply, its exit status the sender's; everything after it is its arguments, so give it last.
    #[arg(long, value_name = "PROG", num_args = 1.., allow_hyphen_values = true, conflicts_with = "raw")]
    pub exec: Vec<OsString>,
    /// Start PROG at once and feed it the data as it arrives; a cut message ends it with SIGTERM and no end of file.
    #[arg(long, requires = "exec")]
    pub exec_stream: bool,
    /// Kill PROG (SIGTERM, then SIGKILL) when it runs longer; the sender exits 12.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "exec")]
    pub exec_timeout: Option<Duration>,
    /// Pass this variable of pincat's environment to PROG (repeatable; PINCAT_* names are never passed).
    #[arg(long, value_name = "NAME", requires = "exec")]
    pub exec_env: Vec<String>,
    /// Run PROG for one transfer at a time, in the order the senders arrived.
    #[arg(long, requires = "exec")]
    pub serial: bool,
}

/// The library's options for these flags (`None` without `--exec`);
/// `out` is serve's `--out`, which with `--exec` must be a directory.
pub fn exec_options(a: &ExecArgs, out: Option<&Path>) -> pincat::Result<Option<ExecOptions>> {
    let Some((program, args)) = a.exec.split_first() else {
        return Ok(None);
    };
    if let Some(o) = out.filter(|o| o.exists() && !o.is_dir()) {
        return Err(super::usage::usage(format!(
            "--exec hands streams to PROG and files from a directory: --out {} is not a directory",
            o.display()
        )));
    }
    Ok(Some(ExecOptions {
        program: program.clone(),
        args: args.to_vec(),
        env: a.exec_env.clone(),
        stream: a.exec_stream,
        timeout: a.exec_timeout,
        serial: a.serial,
        names: known_names()?,
    }))
}

/// Every pin of the peers file with its peer's name (none without a
/// peers file).
fn known_names() -> pincat::Result<Vec<(pincat::Pin, String)>> {
    let Ok(file) = PeersFile::default_location() else {
        return Ok(Vec::new());
    };
    let peers = file.read()?;
    Ok(peers
        .iter()
        .flat_map(|p| p.pins.iter().map(|pin| (*pin, p.name.clone())))
        .collect())
}
