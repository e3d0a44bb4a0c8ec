//! Files transfers with `serve --out DIR --exec`: once the store made
//! them durable, the handler runs in the output directory with
//! `PINCAT_FILES_LIST` naming a file (private, removed after) that lists
//! the received regular files, NUL-separated, as offered.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::super::{Outcome, Taker};
use crate::exec::{About, Input, Peer, Status, Ticket};
use crate::fingerprint::Fingerprint;
use crate::protocol::{Entry, Offer, TransferKind};
use crate::session::Session;

/// What a files transfer hands its handler once it is stored.
pub(in crate::take) struct Handed {
    peer: Peer,
    /// The offer's regular files (no directories, links or others).
    names: Vec<String>,
    /// `--serial`: its place, drawn as it arrived.
    ticket: Option<Ticket>,
}

/// The files list, removed when dropped.
struct ListFile(PathBuf);

impl ListFile {
    fn write(dir: &Path, names: &[String]) -> std::io::Result<ListFile> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("files-{}-{n}.list", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let list = ListFile(path);
        let mut bytes = Vec::new();
        for name in names {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
        }
        f.write_all(&bytes)?;
        Ok(list)
    }
}

impl Drop for ListFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The regular files among an offer's `entries`, by their names.
fn regular_files(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.is_file())
        .map(|e| e.name.clone())
        .collect()
}

impl Taker {
    /// For a files transfer this taker hands over: who sent it, what, and
    /// (`--serial`) its place in the queue.
    pub(in crate::take) fn handed(
        &self,
        s: &Session,
        client: Option<Fingerprint>,
        offer: &Offer,
    ) -> Option<Handed> {
        let x = self.exec.as_ref()?;
        (offer.kind == TransferKind::Files).then(|| Handed {
            peer: x.peer(s.peer(), client),
            names: regular_files(&offer.entries),
            ticket: x.opts.serial.then(|| x.queue.ticket()),
        })
    }

    /// Runs the handler on files now durable (after their digests went
    /// out) and sends its reply; when it failed, the outcome (the sender
    /// was told). Nothing without a handler.
    pub(in crate::take) fn exec_files(
        &self,
        s: &mut Session,
        handed: Option<Handed>,
    ) -> Result<(), Outcome> {
        let (Some(h), Some(x)) = (handed, self.exec.as_ref()) else {
            return Ok(());
        };
        // The sender hears KEEPALIVE while the handler waits its turn and runs.
        let (st, reply) = s.keep_alive_while(|| {
            if !h
                .ticket
                .as_ref()
                .is_none_or(|t| t.wait_turn(&self.shutdown))
            {
                return (Status::Failed("the receiver is shutting down".into()), None);
            }
            let list = match ListFile::write(&x.dir, &h.names) {
                Ok(l) => l,
                Err(e) => {
                    return (
                        Status::Failed(format!("cannot write the files list: {e}")),
                        None,
                    );
                }
            };
            let about = About {
                files_list: Some(list.0.clone()),
                ..About::default()
            };
            match x.start(&h.peer, &about, Input::Null) {
                Ok(run) => run.finish(),
                Err(st) => (st, None),
            }
        });
        drop(h.ticket);
        let reply = self
            .answer(s, &h.peer, st, reply)
            .map_err(|e| Outcome::Transfer(Err(e)))?;
        // The handler ran whether or not the sender hears it.
        let _ = super::send_reply(s, reply);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_regular_files_only_and_goes_away() {
        let entry = |name: &str, is_dir: bool, link: Option<&str>| Entry {
            name: name.into(),
            is_dir,
            mode: 0o644,
            size: 1,
            mtime: None,
            link: link.map(str::to_string),
        };
        let entries = [
            entry("d", true, None),
            entry("d/a.txt", false, None),
            entry("d/link", false, Some("a.txt")),
            entry("b bin", false, None),
        ];
        let names = regular_files(&entries);
        assert_eq!(names, ["d/a.txt", "b bin"]);
        let dir = tempfile::tempdir().unwrap();
        let list = ListFile::write(dir.path(), &names).unwrap();
        assert_eq!(std::fs::read(&list.0).unwrap(), b"d/a.txt\0b bin\0");
        let path = list.0.clone();
        drop(list);
        assert!(!path.exists());
    }
}
