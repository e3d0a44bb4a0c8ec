//! Every direct OS call pincat makes, behind safe functions. The receiver's
//! disk access goes through the `*at` functions here, always relative to a
//! directory descriptor. The calls go through `rustix`, except these,
//! hand-written with a SAFETY comment each:
//! - `set_notsent_lowat` (and its test-only reader): rustix has no
//!   TCP_NOTSENT_LOWAT socket option, and no raw setsockopt.
//! - `stat_readable_at`: its callers take a `libc::stat`, which has
//!   private padding fields and no safe constructor, so the stat rustix
//!   returns is copied into a zeroed one.
//! - `reset_on_close`: rustix's SO_LINGER wants a borrowed descriptor, the
//!   callers pass `impl AsRawFd`.
//! - `end_fd`: rustix's `dup2` replaces an `OwnedFd`, the caller keeps
//!   ownership and lends a `BorrowedFd`.
//! - `interface_addrs`: rustix has no getifaddrs; the list is copied out
//!   and freed inside one block.
//! - `tune_allocator`: mallopt is glibc's, not a system call.
//! - `take_env`: `std::env::remove_var` is unsafe in edition 2024.
#![allow(unsafe_code)]

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

mod exec;
mod fs;
mod net;
mod poll;
mod process;
#[cfg(test)]
mod tests;

pub use exec::*;
pub use fs::*;
pub use net::*;
pub use poll::*;
pub use process::*;
