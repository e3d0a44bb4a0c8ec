//! How `send` and `offer` plan the directories they send: what becomes of
//! symbolic links, and whether anything left out is an error.

use std::path::PathBuf;

use clap::Args;
use pincat::{Links, Paths, UpdateMode};

/// Planning flags shared by `send` and `offer`.
#[derive(Debug, Args)]
pub struct PathsArgs {
    /// Fail (exit 11) instead of skipping what the directories hold and pincat does not send (special files; symbolic links with --no-links).
    #[arg(long)]
    pub strict: bool,
    /// Skip symbolic links inside the directories (reported on both sides) instead of sending them as links.
    #[arg(long, conflicts_with = "follow_links")]
    pub no_links: bool,
    /// Send what symbolic links inside the directories point to instead of the links (a link back to a directory being sent is skipped).
    #[arg(long)]
    pub follow_links: bool,
    /// Compare with what the receiver has: identical files (same size and modification time) are skipped, changed ones send only their changed chunks and replace the old ones where the receiver allows it (`serve --allow-update`), new ones are added.
    #[arg(long)]
    pub update: bool,
    /// With --update: compare content (chunk hashes) instead of size and modification time.
    #[arg(long, requires = "update")]
    pub checksum: bool,
}

impl PathsArgs {
    /// The library's planning options for `paths`.
    pub fn paths(&self, paths: Vec<PathBuf>) -> Paths {
        Paths {
            paths,
            strict: self.strict,
            links: match (self.no_links, self.follow_links) {
                (true, _) => Links::Skip,
                (_, true) => Links::Follow,
                _ => Links::Send,
            },
            sync: UpdateMode {
                update: self.update,
                checksum: self.checksum,
            },
        }
    }
}
