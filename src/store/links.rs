//! Symbolic links as links: checked when the offer arrives (a target that
//! is absolute or climbs out of its top-level entry is refused unless the
//! receiver allows it), made at commit once the files are in place, never
//! replacing anything and never followed (the walk to each parent refuses
//! links), each recorded so an abort removes exactly the links it made.

use std::ffi::OsStr;

use super::fail::{exists_fail, io_fail, walk_fail};
use super::walk::{Walker, split_parent};
use super::{Fail, Transfer, lock, out_dir};
use crate::protocol::{RejectCode, escape_name};
use crate::sys;

/// Whether a link named `name` (a '/'-separated path in the offer) with
/// `target` stays inside its own top-level entry: not absolute, and never
/// climbing above that entry, component by component.
pub(super) fn stays_inside(name: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    // Where the link lives, below its top-level entry.
    let mut depth = name.split('/').count() - 1;
    if depth == 0 {
        // A top-level link: any target leaves the transfer.
        return false;
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if depth <= 1 => return false,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    true
}

impl Transfer {
    /// Refuses links that point outside the transfer, unless allowed.
    pub(super) fn check_links(&self) -> Result<(), Fail> {
        if self.store.outside_links {
            return Ok(());
        }
        for e in &self.offer.entries {
            if let Some(t) = &e.link
                && !stays_inside(&e.name, t)
            {
                return Err((
                    RejectCode::BadName,
                    format!(
                        "{} is a symbolic link to {}, outside what is sent; this receiver takes such links only with --allow-outside-links",
                        escape_name(&e.name),
                        escape_name(t)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Makes the offer's links, after every file has its name. Each is
    /// recorded before the next, so a failure leaves the abort exactly the
    /// links made.
    pub(super) fn make_links(&mut self) -> Result<(), Fail> {
        if self.offer.entries.iter().all(|e| e.link.is_none()) {
            return Ok(());
        }
        let store = self.store.clone();
        let _g = lock(&store.walk);
        let root = out_dir(&self.root)?;
        let mut w = Walker::new(root);
        let mut made = Vec::new();
        let r = self
            .offer
            .entries
            .iter()
            .enumerate()
            .try_for_each(|(i, e)| {
                let Some(target) = &e.link else {
                    return Ok(());
                };
                let (parent, leaf) = split_parent(&e.name);
                let leaf = OsStr::new(leaf);
                w.goto(parent, None)
                    .map_err(|err| walk_fail(&e.name, err))?;
                sys::symlink_at(target, w.fd(), leaf).map_err(|err| match err.kind() {
                    std::io::ErrorKind::AlreadyExists => exists_fail(&escape_name(&e.name)),
                    _ => io_fail(
                        format!("cannot make the link {}", escape_name(&e.name)),
                        err,
                    ),
                })?;
                let st = sys::stat_at(w.fd(), leaf)
                    .map_err(|err| io_fail("cannot check a link".into(), err))?
                    .ok_or((RejectCode::Io, "a link vanished".into()))?;
                made.push((i as u32, st.dev, st.ino));
                if let Some(t) = e.mtime.filter(|_| self.store.times) {
                    // Best effort, as for directories: the link is in place.
                    let _ = sys::set_link_mtime(w.fd(), leaf, t.secs, t.nanos);
                }
                Ok(())
            });
        self.linked.extend(made);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::stays_inside;

    #[test]
    fn links_that_leave_their_top_level_entry_are_told_apart() {
        for (name, target) in [
            ("t/l", "a"),
            ("t/l", "./a/b"),
            ("t/d/l", "../a"),
            ("t/d/e/l", "../../x"),
        ] {
            assert!(stays_inside(name, target), "{name} -> {target}");
        }
        for (name, target) in [
            ("l", "a"),
            ("t/l", "/etc"),
            ("t/l", ".."),
            ("t/l", "../t"),
            ("t/d/l", "../../x"),
            // Back into its own top only by way of the output directory.
            ("t/d/l", "../../t/a"),
            ("t/d/l", "a/../../../x"),
        ] {
            assert!(!stays_inside(name, target), "{name} -> {target}");
        }
    }
}
