//! Write-behind for the receiver: file (or stdout) writes run on a helper
//! thread while the connection thread receives and decrypts the next frame.
//! On tmpfs, writing was half the receiver's time (perf), all of it serial
//! with the network before.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// Buffers in flight between the two threads.
const DEPTH: usize = 4;

enum Cmd {
    /// Later writes go here.
    Target(Box<dyn Write + Send>),
    /// Write `buf[start..end]` to the current target.
    Data(Arc<Vec<u8>>, usize, usize),
    /// Reply once everything before has been written.
    Barrier(SyncSender<()>),
}

/// A writer thread fed in order; the first error sticks and is reported by
/// the next call.
pub struct WriteBehind {
    tx: Option<SyncSender<Cmd>>,
    spare: Receiver<Arc<Vec<u8>>>,
    error: Arc<Mutex<Option<io::Error>>>,
    handle: Option<JoinHandle<()>>,
}

impl WriteBehind {
    /// Starts the writer thread.
    pub fn new() -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Cmd>(DEPTH);
        let (spare_tx, spare) = mpsc::sync_channel::<Arc<Vec<u8>>>(DEPTH + 2);
        let error: Arc<Mutex<Option<io::Error>>> = Arc::default();
        let err2 = error.clone();
        let handle = thread::Builder::new()
            .name("pincat-write".into())
            .spawn(move || {
                let mut target: Option<Box<dyn Write + Send>> = None;
                let mut failed = false;
                for cmd in rx {
                    match cmd {
                        Cmd::Target(t) => target = Some(t),
                        Cmd::Data(buf, start, end) => {
                            if !failed {
                                let res = match target.as_mut() {
                                    Some(t) => t.write_all(&buf[start..end]),
                                    None => Err(io::Error::other("no output selected")),
                                };
                                if let Err(e) = res {
                                    failed = true;
                                    *err2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                                }
                            }
                            let _ = spare_tx.try_send(buf);
                        }
                        Cmd::Barrier(reply) => {
                            if let Some(t) = target.as_mut()
                                && !failed
                                && let Err(e) = t.flush()
                            {
                                failed = true;
                                *err2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            }
                            let _ = reply.send(());
                        }
                    }
                }
            })?;
        Ok(WriteBehind {
            tx: Some(tx),
            spare,
            error,
            handle: Some(handle),
        })
    }

    fn check(&self) -> io::Result<()> {
        match self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn send(&self, cmd: Cmd) -> io::Result<()> {
        self.check()?;
        match &self.tx {
            Some(tx) => tx
                .send(cmd)
                .map_err(|_| io::Error::other("the writer thread stopped")),
            None => Err(io::Error::other("the writer thread stopped")),
        }
    }

    /// A buffer of `len` bytes to fill, recycled when possible.
    pub fn buffer(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .spare
            .try_recv()
            .ok()
            .and_then(|a| Arc::try_unwrap(a).ok())
            .unwrap_or_default();
        v.resize(len, 0);
        v
    }

    /// Directs later writes to `w`.
    pub fn set_target(&self, w: Box<dyn Write + Send>) -> io::Result<()> {
        self.send(Cmd::Target(w))
    }

    /// Queues `buf[start..end]` for the current target.
    pub fn write(&self, buf: Arc<Vec<u8>>, start: usize, end: usize) -> io::Result<()> {
        self.send(Cmd::Data(buf, start, end))
    }

    /// Waits until everything queued is written (and flushed); reports the
    /// first error.
    pub fn drain(&self) -> io::Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Cmd::Barrier(tx))?;
        rx.recv()
            .map_err(|_| io::Error::other("the writer thread stopped"))?;
        self.check()
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_arrive_in_order_across_targets() {
        let wb = WriteBehind::new().unwrap();
        let (a, b) = (Shared::default(), Shared::default());
        wb.set_target(Box::new(a.clone())).unwrap();
        for i in 0..100u8 {
            let mut buf = wb.buffer(3);
            buf.copy_from_slice(&[i, i, i]);
            let buf = Arc::new(buf);
            wb.write(buf.clone(), 0, 2).unwrap();
            if i == 50 {
                wb.set_target(Box::new(b.clone())).unwrap();
            }
            wb.write(buf, 2, 3).unwrap();
        }
        wb.drain().unwrap();
        let a = a.0.lock().unwrap().clone();
        let b = b.0.lock().unwrap().clone();
        assert_eq!(a.len() + b.len(), 300);
        let mut all = a.clone();
        all.extend(b);
        let want: Vec<u8> = (0..100u8).flat_map(|i| [i, i, i]).collect();
        assert_eq!(all, want);
        assert_eq!(a.len(), 50 * 3 + 2);
    }

    #[test]
    fn first_error_is_reported() {
        let wb = WriteBehind::new().unwrap();
        wb.set_target(Box::new(Broken)).unwrap();
        let _ = wb.write(Arc::new(vec![1, 2, 3]), 0, 3);
        let err = wb.drain().unwrap_err();
        assert!(err.to_string().contains("disk on fire"));
    }
}
