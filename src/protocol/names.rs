//! Received path names: which ones a taker accepts, and why it refuses the rest.

use thiserror::Error;

use super::{MAX_COMPONENT, MAX_NAME, escape_name, truncate_utf8};

/// Why a received name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// Empty name or empty component (`a//b`).
    #[error("refused an empty file name or path component")]
    Empty,
    /// Not UTF-8.
    #[error("refused a file name that is not UTF-8")]
    NotUtf8,
    /// Absolute path, drive prefix or backslash.
    #[error("refused file name {0}: absolute paths and drive prefixes are not allowed")]
    Absolute(String),
    /// `.` or `..` component.
    #[error("refused file name {0}: '.' and '..' components are not allowed")]
    DotDot(String),
    /// NUL, control, or escape characters.
    #[error("refused file name {0}: control characters are not allowed")]
    Control(String),
    /// Too long.
    #[error(
        "refused file name {0}: longer than {MAX_NAME} bytes or a component longer than {MAX_COMPONENT}"
    )]
    TooLong(String),
    /// Same name twice, or a file that is also a directory.
    #[error("refused file name {0}: it appears twice in the offer, or also as a directory")]
    Duplicate(String),
}

/// Checks a received relative path: only normal components, no control
/// characters, no absolute or drive-prefixed paths, bounded length.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(escape_name(truncate_utf8(name, 64))));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(NameError::Control(escape_name(name)));
    }
    let first = name.split('/').next().unwrap_or_default();
    let drive = first.len() >= 2
        && first.as_bytes()[0].is_ascii_alphabetic()
        && first.as_bytes()[1] == b':';
    if name.starts_with('/') || name.contains('\\') || drive {
        return Err(NameError::Absolute(escape_name(name)));
    }
    for comp in name.split('/') {
        match comp {
            "" => return Err(NameError::Empty),
            "." | ".." => return Err(NameError::DotDot(escape_name(name))),
            c if c.len() > MAX_COMPONENT => {
                return Err(NameError::TooLong(escape_name(truncate_utf8(name, 64))));
            }
            _ => {}
        }
    }
    Ok(())
}
