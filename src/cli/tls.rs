//! The identity and handshake limit every verb has, and loading an
//! identity named on the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use pincat::Identity;

use super::duration::parse_duration;

/// The identity and handshake limit every verb has.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Use this persistent identity (a file, mode 0600, or env:VAR holding its PEM; listening: instead of an ephemeral one; dialing: as client certificate for --allow).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Limit for the TLS handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
}

/// The identity at `path` (a file or env:VAR), if one was given.
pub fn load_identity(path: Option<&Path>) -> pincat::Result<Option<Identity>> {
    Ok(match path {
        Some(p) => Some(Identity::load_spec(p.as_os_str())?),
        None => None,
    })
}
