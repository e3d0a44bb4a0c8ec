//! Usage mistakes found after parsing, where one flag's meaning depends on
//! another's value: a typed error that `cli::run` reports the way clap
//! reports its own (the message, the usage line, exit 2).

use pincat::Error;

/// A command-line mistake, in one sentence.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(String);

/// The error for a usage mistake; `cli::run` prints it as clap would.
pub fn usage(msg: impl Into<String>) -> Error {
    Error::Other(anyhow::Error::new(Usage(msg.into())))
}

/// The sentence of a usage mistake, if `e` is one.
pub fn message(e: &Error) -> Option<&str> {
    match e {
        Error::Other(e) => e.downcast_ref::<Usage>().map(|u| u.0.as_str()),
        _ => None,
    }
}
