//! Symbolic links as links: checked when the offer arrives (a target that
//! is absolute or may lead out of its top-level entry is refused unless
//! the receiver allows it), made at commit once the files are in place (a
//! whole new tree has them made inside it before it is renamed into
//! place), never replacing anything and never followed (the walk to each
//! parent refuses links), each recorded so an abort removes exactly the
//! links it made.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;

use super::fail::{exists_fail, io_fail, walk_fail};
use super::walk::{Walker, split_parent};
use super::{Fail, Holding, Transfer, lock, out_dir};
use crate::protocol::{Entry, RejectCode, escape_name};
use crate::sys;

/// Whether a link named `name` (a '/'-separated path in the offer) with
/// `target` stays inside its own top-level entry, whatever the names in
/// the target turn out to be: only leading `..` (never above the top-level
/// entry) followed by plain names. A `..` after a name is refused, since
/// that name may itself be a link (of this offer, or one the receiver
/// has) pointing up: counting it as one level down would be wrong.
pub(super) fn stays_inside(name: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    // How far up the link may climb: to its top-level entry, not above.
    let depth = name.split('/').count() - 1;
    if depth == 0 {
        // A top-level link: any target leaves the transfer.
        return false;
    }
    let mut ups = 0;
    let mut named = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if named => return false,
            ".." => ups += 1,
            _ => named = true,
        }
    }
    ups < depth
}

/// Makes the link `e` in `dir` (its parent), with its own time when kept;
/// returns what it made.
pub(in crate::store) fn make_link(
    dir: BorrowedFd<'_>,
    e: &Entry,
    times: bool,
) -> Result<sys::Stat, Fail> {
    let target = e.link.as_deref().unwrap_or_default();
    let leaf = OsStr::new(split_parent(&e.name).1);
    sys::symlink_at(target, dir, leaf).map_err(|err| match err.kind() {
        std::io::ErrorKind::AlreadyExists => exists_fail(&escape_name(&e.name)),
        _ => io_fail(
            format!("cannot make the link {}", escape_name(&e.name)),
            err,
        ),
    })?;
    let st = sys::stat_at(dir, leaf)
        .map_err(|err| io_fail("cannot check a link".into(), err))?
        .ok_or((RejectCode::Io, "a link vanished".into()))?;
    if let Some(t) = e.mtime.filter(|_| times) {
        // Best effort, as for directories: the link is made.
        let _ = sys::set_link_mtime(dir, leaf, t.secs, t.nanos);
    }
    Ok(st)
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
                        "{} is a symbolic link to {}, which may lead outside what is sent; this receiver takes such links only with --allow-outside-links",
                        escape_name(&e.name),
                        escape_name(t)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Makes the offer's links, after every file has its name (a whole new
    /// tree already has them, made durable with it). Each is recorded
    /// before the next, so a failure leaves the abort exactly the links
    /// made. Returns whether it made any (they then need a sync).
    pub(super) fn make_links(&mut self) -> Result<bool, Fail> {
        let in_tree = matches!(self.holding, Holding::Staged { tree: Some(_), .. });
        if in_tree || self.offer.entries.iter().all(|e| e.link.is_none()) {
            return Ok(false);
        }
        let store = self.store.clone();
        let _g = lock(&store.walk);
        let mut w = Walker::new(out_dir(&self.root)?);
        let mut made = Vec::new();
        let links = self.offer.entries.iter().enumerate();
        let r = links
            .filter(|(_, e)| e.link.is_some())
            .try_for_each(|(i, e)| {
                let parent = split_parent(&e.name).0;
                w.goto(parent, None)
                    .map_err(|err| walk_fail(&e.name, err))?;
                let st = make_link(w.fd(), e, store.times)?;
                made.push((i as u32, st.dev, st.ino));
                Ok(())
            });
        self.linked.extend(made);
        r.map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::stays_inside;

    #[test]
    fn links_that_may_leave_their_top_level_entry_are_told_apart() {
        for (name, target) in [
            ("t/l", "a"),
            ("t/l", "./a/b"),
            ("t/d/l", "../a"),
            ("t/d/e/l", "../../x"),
            ("t/d/l", "./../a/./b/"),
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
            // A name in the target may be a link up (`t/d/up -> ..`): no
            // `..` may follow a name.
            ("t/l", "d/up/d/up/../../../etc/passwd"),
            ("t/l", "d/../x"),
            ("t/d/l", "../d/../x"),
        ] {
            assert!(!stays_inside(name, target), "{name} -> {target}");
        }
    }
}
