//! Disk errors turned into what the sender is told: a refusal code and one
//! sentence (out of space, already exists, a link on the way, plain I/O).

use std::io;

use super::Fail;
use crate::protocol::{RejectCode, escape_name};

pub(super) fn io_fail(what: String, e: io::Error) -> Fail {
    let code = match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => RejectCode::NoSpace,
        _ => RejectCode::Io,
    };
    (code, format!("{what}: {e}"))
}

pub(super) fn exists_fail(name: &str) -> Fail {
    (
        RejectCode::Exists,
        format!("{name} already exists on the receiver; it is never overwritten"),
    )
}

pub(super) fn walk_fail(name: &str, e: io::Error) -> Fail {
    match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV) => (
            RejectCode::Exists,
            format!(
                "on the way to {}, the receiver has a file or a symbolic link where the sender has a directory; it is never followed or replaced",
                escape_name(name)
            ),
        ),
        Some(libc::ENOENT) => (
            RejectCode::Io,
            format!(
                "a directory on the way to {} vanished on the receiver during the transfer",
                escape_name(name)
            ),
        ),
        _ => io_fail(
            format!("cannot reach the directory of {}", escape_name(name)),
            e,
        ),
    }
}

pub(super) fn link_fail(name: &str, e: io::Error) -> Fail {
    match e.raw_os_error() {
        Some(libc::EEXIST) => (
            RejectCode::Exists,
            format!("{name} appeared on the receiver during the transfer; it was not overwritten"),
        ),
        Some(libc::EXDEV) => (
            RejectCode::Io,
            format!("{name} is on another file system than the receiver's output; not supported"),
        ),
        _ => io_fail(format!("cannot store {name}"), e),
    }
}
