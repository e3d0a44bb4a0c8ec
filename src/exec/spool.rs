//! Bytes held until they are complete: a message before its handler may
//! see it, a handler's reply before it is sent. In memory up to a bound,
//! then in an unnamed file in the private state directory (nothing ever
//! reachable by name, gone when dropped).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys;

/// Most bytes all the spools of this process hold in memory at once: past
/// it, a spool goes to its file at once (many senders at the bound each
/// cannot exhaust memory).
pub(crate) const MEMORY_TOTAL: u64 = 64 << 20;

/// Bytes held in memory by all spools.
static HELD: AtomicU64 = AtomicU64::new(0);

/// Takes `n` bytes of [`MEMORY_TOTAL`]; false when they are not left.
fn reserve(n: u64) -> bool {
    HELD.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| {
        (h + n <= MEMORY_TOTAL).then_some(h + n)
    })
    .is_ok()
}

fn release(n: u64) {
    HELD.fetch_sub(n, Ordering::SeqCst);
}

/// Held bytes.
pub(crate) struct Spool {
    memory: Vec<u8>,
    file: Option<File>,
    len: u64,
    /// Most bytes held in memory.
    bound: usize,
    /// Where the unnamed file goes.
    dir: PathBuf,
}

/// How [`Spool::fill_from`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Filled {
    /// The reader ended within the bound.
    Whole,
    /// It had more than the bound (what is held is its start).
    Over,
}

impl Spool {
    /// An empty spool holding up to `bound` bytes in memory, then in `dir`.
    pub(crate) fn new(bound: usize, dir: PathBuf) -> Spool {
        Spool {
            memory: Vec::new(),
            file: None,
            len: 0,
            bound,
            dir,
        }
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the bytes moved to a file.
    #[cfg(test)]
    pub(crate) fn on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// Appends `data`.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let n = data.len() as u64;
        let fits = || self.memory.len() + data.len() <= self.bound;
        if self.file.is_none() && !(fits() && reserve(n)) {
            let mut f = self.unnamed_file()?;
            f.write_all(&self.memory)?;
            release(self.memory.len() as u64);
            self.memory = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(data)?,
            None => self.memory.extend_from_slice(data),
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Reads `r` to its end into the spool, but no more than `max` bytes.
    pub(crate) fn fill_from(&mut self, r: &mut dyn Read, max: u64) -> io::Result<Filled> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(Filled::Whole),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if self.len + n as u64 > max {
                let fits = (max - self.len) as usize;
                self.write(&buf[..fits])?;
                return Ok(Filled::Over);
            }
            self.write(&buf[..n])?;
        }
    }

    /// The bytes as a file at its start, for a program's standard input:
    /// the spool's own, or (held in memory) an unnamed in-memory one.
    pub(crate) fn into_file(mut self) -> io::Result<File> {
        let mut f = match self.file.take() {
            Some(f) => f,
            None => {
                let mut f = match sys::memory_file() {
                    Ok(f) => f,
                    Err(_) => unnamed_in(&self.dir)?,
                };
                f.write_all(&self.memory)?;
                f
            }
        };
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    }

    /// The bytes, to read from their start.
    pub(crate) fn into_reader(mut self) -> io::Result<Box<dyn Read + Send>> {
        Ok(match self.file.take() {
            Some(mut f) => {
                f.seek(SeekFrom::Start(0))?;
                Box::new(f)
            }
            None => {
                release(self.memory.len() as u64);
                Box::new(io::Cursor::new(std::mem::take(&mut self.memory)))
            }
        })
    }

    fn unnamed_file(&self) -> io::Result<File> {
        unnamed_in(&self.dir)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        release(self.memory.len() as u64);
    }
}

/// An unnamed file in `dir`, which must be a directory (never a link).
fn unnamed_in(dir: &std::path::Path) -> io::Result<File> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let d = sys::open_dir(dir)?;
    let fresh = format!(
        ".spool-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    sys::unnamed_rw_in(d.as_fd(), fresh.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory total is one for the process: tests that fill it or
    /// count on room in it go one at a time.
    static TOTAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn alone() -> std::sync::MutexGuard<'static, ()> {
        TOTAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[test]
    fn memory_up_to_the_bound_then_an_unnamed_file() {
        let _alone = alone();
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(10, dir.path().to_path_buf());
        s.write(b"0123456789").unwrap();
        assert!(!s.on_disk(), "exactly the bound stays in memory");
        s.write(b"abc").unwrap();
        assert!(s.on_disk());
        assert_eq!(s.len(), 13);
        // Nothing reachable by name.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut back = Vec::new();
        s.into_file().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, b"0123456789abc");
    }

    #[test]
    fn all_spools_together_stay_within_the_memory_total() {
        let _alone = alone();
        let dir = tempfile::tempdir().unwrap();
        let chunk = vec![7u8; 1 << 20];
        let n = (MEMORY_TOTAL >> 20) as usize + 4;
        let spools: Vec<Spool> = (0..n)
            .map(|_| {
                let mut s = Spool::new(1 << 20, dir.path().to_path_buf());
                s.write(&chunk).unwrap();
                s
            })
            .collect();
        // Other tests' spools may hold some too: at least the excess went to disk.
        assert!(spools.iter().filter(|s| s.on_disk()).count() >= 4);
        assert!(HELD.load(Ordering::SeqCst) <= MEMORY_TOTAL);
        drop(spools);
    }

    #[test]
    fn a_small_message_is_read_back_whole_from_memory() {
        let _alone = alone();
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(1 << 20, dir.path().to_path_buf());
        s.write(b"hello").unwrap();
        assert!(!s.on_disk());
        let mut back = Vec::new();
        s.into_file().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, b"hello");
    }

    #[test]
    fn a_reply_is_read_up_to_its_bound_and_no_further() {
        let _alone = alone();
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let mut s = Spool::new(1000, dir.path().to_path_buf());
        let r = s.fill_from(&mut &data[..], data.len() as u64).unwrap();
        assert_eq!(r, Filled::Whole);
        let mut back = Vec::new();
        s.into_reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        let mut s = Spool::new(1000, dir.path().to_path_buf());
        let r = s.fill_from(&mut &data[..], 100_000).unwrap();
        assert_eq!(r, Filled::Over);
        assert_eq!(s.len(), 100_000);
        let mut back = Vec::new();
        s.into_reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data[..100_000]);
    }
}
