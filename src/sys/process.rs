//! The process itself: its limits, umask, standard streams, allocator,
//! host name and environment.

use super::*;

/// The effective user id.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The process umask, read without changing it (from /proc, else by the
/// classic set-and-restore, which is only safe before threads start).
pub fn umask() -> u32 {
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        for line in s.lines() {
            if let Some(v) = line.strip_prefix("Umask:")
                && let Ok(m) = u32::from_str_radix(v.trim(), 8)
            {
                return m;
            }
        }
    }
    let old = rustix::process::umask(Mode::from_bits_retain(0o022));
    rustix::process::umask(old);
    old.bits()
}

/// Raises the soft limit on open descriptors to the hard limit, so a busy
/// receiver is bounded by its own caps, not by a low default.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let rl = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY.
    let below = match (rl.current, rl.maximum) {
        (Some(cur), Some(max)) => cur < max,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        // Failure leaves the old limit.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: rl.maximum,
                maximum: rl.maximum,
            },
        );
    }
}

/// Points `fd` at /dev/null: whoever reads what it was (a pipe, a
/// terminal) sees its end, while the descriptor number stays valid for its
/// owner (who closes it later as usual).
pub fn end_fd(fd: BorrowedFd<'_>) {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: `fd` is open for the whole call. The OwnedFd is only the
        // target rustix's dup2 asks for: ManuallyDrop never closes it, so
        // the descriptor stays its owner's to close.
        let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd.as_raw_fd()) });
        // dup2 closes the old open file behind `fd` atomically and leaves
        // `null` ours to drop.
        let _ = rustix::io::dup2(&null, &mut target);
    }
}

/// [`end_fd`] on standard output.
pub fn end_stdout() {
    end_fd(stdio().1);
}

/// Standard output without std's line buffer: each write goes to fd 1 as
/// it is (`writev` for a record's slices), where `std::io::stdout()` would
/// scan binary data for newlines and copy it through an 8 KiB buffer.
/// For the receiver's stream, the only writer of stdout.
pub struct RawStdout;

impl std::io::Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_fd(stdio().1, buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        write_fd_vectored(stdio().1, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Standard input and output as borrowed descriptors (they stay open for
/// the life of the process; [`end_stdout`] keeps fd 1 valid).
pub fn stdio() -> (BorrowedFd<'static>, BorrowedFd<'static>) {
    (rustix::stdio::stdin(), rustix::stdio::stdout())
}

/// Keeps freed buffers in the process instead of returning them to the OS
/// after every TLS record: with glibc's defaults the sender spent about a
/// third of its system time in mmap/brk churn and page faults (perf).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator thresholds; the binary calls
    // this first thing, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// The host's name, if it has a printable one.
pub fn hostname() -> Option<String> {
    // gethostname(2) is the nodename of uname(2) on Linux.
    let uts = rustix::system::uname();
    let name = uts.nodename().to_str().ok()?.to_string();
    (!name.is_empty()).then_some(name)
}

/// fsync standard output when it is a regular file (`> out.bin`); pipes
/// and terminals cannot be synced.
pub fn sync_stdout() {
    let fd = rustix::stdio::stdout();
    if matches!(
        stat_fd(fd),
        Ok(Stat {
            kind: Kind::File,
            ..
        })
    ) {
        let _ = fsync(fd);
    }
}

/// Reads the environment variable `var` and removes it from this
/// process's environment, so no program started later inherits it (a
/// secret such as a private key or a code).
///
/// Call it before the process starts threads (the command line does, while
/// it turns flags into options).
#[allow(unsafe_code)]
pub fn take_env(var: &std::ffi::OsStr) -> Option<std::ffi::OsString> {
    let value = std::env::var_os(var)?;
    // SAFETY: the environment is only changed here, from the main thread
    // before any other thread exists (see above), so no other thread reads
    // or writes it at the same time.
    unsafe { std::env::remove_var(var) };
    Some(value)
}
