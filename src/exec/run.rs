//! One run of a handler: started in its own process group with the
//! allowlisted environment, its input (a spooled message, or a pipe fed
//! as data arrives), its stdout read as the reply (bounded), its stderr
//! turned into events line by line, and its end: an exit, a timeout
//! (SIGTERM, then SIGKILL), or a cut message (SIGTERM with its input still
//! open, so it never sees an end of file).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IoSlice, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::spool::{Filled, Spool};
use super::{Exec, KILL_GRACE, Peer, REPLY_MAX, SPOOL_MEMORY, Status};
use crate::events::Event;
use crate::sys;

/// Longest stderr line passed on whole; a longer one is cut.
const LINE_MAX: usize = 4096;

/// How long the reply may stay open after the handler exited (a child of
/// its own that kept it).
const REPLY_AFTER_EXIT: Duration = Duration::from_secs(5);

/// What a handler reads on its standard input.
pub(crate) enum Input {
    /// The whole message, spooled.
    File(File),
    /// A pipe the caller feeds as the data arrives (`--exec-stream`).
    Pipe,
    /// Nothing (files mode: the files are in its working directory).
    Null,
}

/// A handler that was started.
pub(crate) struct Running {
    child: Child,
    pidfd: Option<OwnedFd>,
    stdin: Option<ChildStdin>,
    reply: Receiver<io::Result<(Spool, Filled)>>,
    over: Arc<AtomicBool>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    /// The handler closed its input: what else arrives is dropped.
    input_closed: bool,
    /// The receiver is shutting down: the handler is ended.
    stop: Arc<AtomicBool>,
    _live: Live,
}

/// Counts a handler in [`Exec::live`] while its `Running` lives (until
/// it was reaped or killed).
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Live {
        count.fetch_add(1, Ordering::SeqCst);
        Live(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts `x`'s program for `peer`, with `env` only, in `cwd`.
pub(crate) fn start(
    x: &Exec,
    env: Vec<(String, OsString)>,
    cwd: Option<&Path>,
    input: Input,
    peer: &Peer,
) -> Result<Running, Status> {
    let (opts, spool_dir, events) = (&x.opts, &x.dir, &x.events);
    let mut cmd = Command::new(&opts.program);
    cmd.args(&opts.args)
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a timeout or a cut ends what it started too.
        .process_group(0);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    match input {
        Input::File(f) => cmd.stdin(Stdio::from(f)),
        Input::Pipe => cmd.stdin(Stdio::piped()),
        Input::Null => cmd.stdin(Stdio::null()),
    };
    let shown = opts.program.to_string_lossy();
    let mut child = cmd
        .spawn()
        .map_err(|e| Status::NotStarted(format!("{shown}: {e}")))?;
    let pidfd = sys::child_pidfd(&child);
    let stdin = child.stdin.take();
    if let Some(i) = &stdin {
        // Fed with a bound on each wait (see `Running::feed`).
        let _ = sys::set_nonblocking(i.as_fd(), true);
    }
    let over = Arc::new(AtomicBool::new(false));
    let (tx, reply) = channel();
    if let Some(mut out) = child.stdout.take() {
        let (over, dir) = (over.clone(), spool_dir.to_path_buf());
        std::thread::spawn(move || {
            let mut spool = Spool::new(SPOOL_MEMORY, dir);
            let r = spool.fill_from(&mut out, REPLY_MAX);
            if matches!(r, Ok(Filled::Over)) {
                over.store(true, Ordering::SeqCst);
            }
            let _ = tx.send(r.map(|f| (spool, f)));
        });
    }
    if let Some(err) = child.stderr.take() {
        let (events, addr, fp) = (events.clone(), peer.addr, peer.fingerprint);
        std::thread::spawn(move || {
            each_line(err, |line| {
                events.emit(Event::HandlerOutput {
                    peer: addr,
                    fingerprint: fp,
                    line,
                })
            })
        });
    }
    Ok(Running {
        child,
        pidfd,
        stdin,
        reply,
        over,
        deadline: opts.timeout.map(|t| Instant::now() + t),
        timeout: opts.timeout,
        input_closed: false,
        stop: x.stop.clone(),
        _live: Live::new(&x.live),
    })
}

/// Calls `f` with each line of `r` (lossy UTF-8, at most [`LINE_MAX`]
/// bytes, the rest of a longer one dropped) until its end.
fn each_line(r: impl Read, mut f: impl FnMut(String)) {
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut r).take(LINE_MAX as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let whole = line.last() == Some(&b'\n');
        if whole {
            line.pop();
        } else if n == LINE_MAX {
            // Cut: skip to the end of this line.
            let mut rest = Vec::new();
            if (&mut r).take(1 << 20).read_until(b'\n', &mut rest).is_err() {
                return;
            }
            line.extend_from_slice("…".as_bytes());
        }
        f(String::from_utf8_lossy(&line).into_owned());
    }
}

impl Running {
    /// Feeds `data` to the handler's input, waiting at most `idle` for it
    /// to read each part. A handler that closed its input gets no more (its
    /// exit status decides); one that reads nothing for `idle` fails.
    pub(crate) fn feed(&mut self, data: &[IoSlice<'_>], idle: Duration) -> Result<(), Status> {
        let Some(stdin) = &self.stdin else {
            return Ok(());
        };
        if self.input_closed {
            return Ok(());
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Status::Timeout(self.timeout.unwrap_or_default()));
        }
        for part in data {
            let mut at = 0;
            while at < part.len() {
                match sys::write_fd(stdin.as_fd(), &part[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let want = [sys::Interest {
                            fd: stdin.as_fd(),
                            read: false,
                            write: true,
                        }];
                        if let Ok(None) = sys::poll(&want, idle) {
                            return Err(Status::Failed(format!(
                                "it read none of its input for {}",
                                humantime::format_duration(idle)
                            )));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.input_closed = true;
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits for the handler's end (closing its input first): its status
    /// and its reply. Past its timeout, past the reply's bound, or as the
    /// receiver shuts down, it is killed.
    pub(crate) fn finish(mut self) -> (Status, Option<Spool>) {
        drop(self.stdin.take());
        let status = match self.wait_until(self.deadline, true) {
            Ok(Some(_)) if self.over.load(Ordering::SeqCst) => Status::ReplyTooLarge,
            Ok(Some(st)) => status_of(st),
            Ok(None) if self.over.load(Ordering::SeqCst) => {
                self.kill();
                Status::ReplyTooLarge
            }
            Ok(None) if self.stop.load(Ordering::SeqCst) => {
                self.kill();
                return (Status::Failed("the receiver is shutting down".into()), None);
            }
            Ok(None) => {
                self.kill();
                Status::Timeout(self.timeout.unwrap_or_default())
            }
            Err(e) => {
                self.kill();
                Status::Failed(format!("cannot wait for it: {e}"))
            }
        };
        let reply = match self.reply.recv_timeout(REPLY_AFTER_EXIT) {
            Ok(Ok((spool, Filled::Whole))) => Some(spool),
            Ok(Ok((_, Filled::Over))) => return (Status::ReplyTooLarge, None),
            Ok(Err(e)) => return (Status::Failed(format!("cannot read its reply: {e}")), None),
            Err(_) => {
                let _ = sys::signal_child(&self.child, true);
                let e = "its output stayed open after it exited (a program it started holds it)";
                return (Status::Failed(e.into()), None);
            }
        };
        (status, reply)
    }

    /// The message was cut: SIGTERM (its input stays open: no end of
    /// file), SIGKILL after a grace; how it ended.
    pub(crate) fn terminate(mut self) -> Status {
        let _ = sys::signal_child(&self.child, false);
        let st = match self.wait_until(Some(Instant::now() + KILL_GRACE), false) {
            Ok(Some(st)) => status_of(st),
            _ => {
                let _ = sys::signal_child(&self.child, true);
                let _ = self.child.wait();
                Status::Signaled(9)
            }
        };
        drop(self.stdin.take());
        st
    }

    /// SIGTERM, then SIGKILL after a grace; reaps it.
    fn kill(&mut self) {
        let _ = sys::signal_child(&self.child, false);
        if !matches!(
            self.wait_until(Some(Instant::now() + KILL_GRACE), false),
            Ok(Some(_))
        ) {
            let _ = sys::signal_child(&self.child, true);
            let _ = self.child.wait();
        }
    }

    /// Waits for the exit until `deadline` (with `watch`, also until a
    /// reply past its bound or a shutdown); `None` when it still runs.
    fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        watch: bool,
    ) -> io::Result<Option<ExitStatus>> {
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(Some(st));
            }
            if watch && (self.over.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst)) {
                return Ok(None);
            }
            let step = Duration::from_millis(100);
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => step,
            };
            if left.is_zero() {
                return Ok(None);
            }
            match &self.pidfd {
                Some(fd) => drop(sys::poll_readable(&[fd.as_fd()], left.min(step))),
                None => std::thread::sleep(left.min(Duration::from_millis(5))),
            }
        }
    }
}

impl Drop for Running {
    /// A handler whose run was neither finished nor terminated (a panic on
    /// the way) is killed with its group, never left behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = sys::signal_child(&self.child, true);
            let _ = self.child.wait();
        }
    }
}

fn status_of(st: ExitStatus) -> Status {
    match (st.code(), st.signal()) {
        (Some(c), _) => Status::Exited(c),
        (None, Some(s)) => Status::Signaled(s),
        (None, None) => Status::Failed("it ended in an unknown way".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_split_and_capped() {
        let mut long = vec![b'x'; LINE_MAX + 100];
        long.extend_from_slice(b"\nshort\nlast");
        let mut input = b"one\n".to_vec();
        input.extend_from_slice(&long);
        let mut lines = Vec::new();
        each_line(&input[..], |l| lines.push(l));
        assert_eq!(
            lines.len(),
            4,
            "{:?}",
            lines.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], "one");
        assert!(lines[1].len() <= LINE_MAX + 3 && lines[1].ends_with('…'));
        assert_eq!(lines[2], "short");
        assert_eq!(lines[3], "last");
    }
}
