//! Files and trees on disk: listings to compare, snapshots that notice any
//! change, big files written cheaply, and a small tmpfs to fill.

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::sha256;

/// Every path under `root` ("" is root itself), never following a link,
/// with what `visit` makes of it.
fn walk<T>(root: &Path, visit: &mut impl FnMut(&Path, &Metadata) -> T) -> BTreeMap<String, T> {
    fn go<T>(
        root: &Path,
        p: &Path,
        visit: &mut impl FnMut(&Path, &Metadata) -> T,
        out: &mut BTreeMap<String, T>,
    ) {
        let m = fs::symlink_metadata(p).unwrap();
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                go(root, &e.unwrap().path(), visit, out);
            }
        }
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        out.insert(rel, visit(p, &m));
    }
    let mut out = BTreeMap::new();
    go(root, root, visit, &mut out);
    out
}

/// Every path under `root`, relative and sorted, with file contents (`None`
/// for a directory): equal for two trees that hold the same data.
pub fn tree(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut all = walk(root, &mut |p, m| {
        (!m.is_dir()).then(|| fs::read(p).unwrap())
    });
    all.remove("");
    all.into_iter().collect()
}

/// What a path is, without following anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
        ino: u64,
        uid: u32,
    },
    File {
        mode: u32,
        ino: u64,
        nlink: u64,
        uid: u32,
        len: u64,
        digest: String,
    },
    Link(PathBuf),
    Other(u32),
}

/// Everything under `root` ("" is root itself) as [`Node`]s: equal only if
/// nothing was added, removed, replaced, rewritten or chmodded.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    walk(root, &mut |p, m| {
        let ft = m.file_type();
        if ft.is_symlink() {
            Node::Link(fs::read_link(p).unwrap())
        } else if ft.is_dir() {
            Node::Dir {
                mode: m.mode(),
                ino: m.ino(),
                uid: m.uid(),
            }
        } else if ft.is_file() {
            Node::File {
                mode: m.mode(),
                ino: m.ino(),
                nlink: m.nlink(),
                uid: m.uid(),
                len: m.len(),
                digest: sha256(&fs::read(p).unwrap()),
            }
        } else {
            Node::Other(m.mode())
        }
    })
}

/// Writes `len` bytes to a new file at `path`: `block` over and over.
pub fn write_repeated(path: &Path, block: &[u8], len: u64) -> File {
    let mut f = File::create(path).unwrap();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f
}

/// A small tmpfs mounted at a new directory, unmounted on drop. Only root
/// can mount one, and not in every container.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) at `at`, a
    /// directory it creates; `None`, with a note, where that is not allowed.
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("cannot mount a tmpfs here; skipping");
        }
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
