//! What tests do to the processes they start, and read back from them:
//! signals, limits and umask set between fork and exec, another user, and
//! the kernel's accounts of a process in /proc.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The conventional uid (and gid) of `nobody`.
pub const NOBODY: u32 = 65534;

/// Sends signal `sig` to process `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a pid this test started and has not reaped.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A resource limit a test lowers for a child.
#[derive(Clone, Copy)]
pub enum Limit {
    /// RLIMIT_FSIZE: writes past it fail as on a full disk.
    FileSize,
    /// RLIMIT_NOFILE: how many descriptors the child may hold.
    OpenFiles,
    /// RLIMIT_NOFILE, the hard limit too: the child cannot raise it.
    OpenFilesHard,
}

/// Lowers the child's soft `limit` to at most `max` (the hard limit stays).
pub fn lower_limit(cmd: &mut Command, limit: Limit, max: u64) {
    let resource = match limit {
        Limit::FileSize => libc::RLIMIT_FSIZE,
        Limit::OpenFiles | Limit::OpenFilesHard => libc::RLIMIT_NOFILE,
    };
    let hard = matches!(limit, Limit::OpenFilesHard);
    // SAFETY: getrlimit/setrlimit are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut rl = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(resource, &mut rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            rl.rlim_cur = rl.rlim_cur.min(max as libc::rlim_t);
            if hard {
                rl.rlim_max = rl.rlim_cur;
            }
            if libc::setrlimit(resource, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The child starts with signal `sig` ignored.
pub fn ignore_signal(cmd: &mut Command, sig: i32) {
    // SAFETY: signal(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(sig, libc::SIG_IGN);
            Ok(())
        });
    }
}

/// The child starts with `umask`.
pub fn umask(cmd: &mut Command, umask: u32) {
    // SAFETY: umask(2) is async-signal-safe and cannot fail.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
}

/// The child runs as `uid` (and the group of the same number), if given.
pub fn as_user(cmd: &mut Command, uid: Option<u32>) {
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
}

/// A line of /proc/PID/status, such as `VmRSS:`, as a number.
pub fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// How many descriptors a process holds.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A child (an external tool, most often) killed and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
