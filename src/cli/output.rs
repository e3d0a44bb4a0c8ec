//! The output flags every transfer verb has (--json, --quiet, --verbose)
//! and the event sink they ask for.

use clap::Args;
use pincat::{Events, Mode};

use super::progress::{Seat, watched};

/// Output options shared by serve and send.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print every event as one JSON object per line on stderr.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print nothing but errors and warnings.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also print each connection's peer and TLS parameters (version, cipher suite, key exchange).
    #[arg(long, short, conflicts_with = "quiet")]
    pub verbose: bool,
}

impl OutputArgs {
    /// The event mode the flags ask for.
    pub fn mode(&self) -> Mode {
        if self.json {
            Mode::Json
        } else if self.quiet {
            Mode::Quiet
        } else {
            Mode::Human
        }
    }

    /// The event sink the flags ask for, on stderr, with progress for
    /// people (see `progress`).
    pub fn events(&self) -> Events {
        watched(self.mode(), Seat::Other).verbose(self.verbose)
    }
}
