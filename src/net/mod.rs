//! Transport roles: who dials and who listens, apart from who gives and who
//! takes. Both end in an established, pinned [`crate::session::Session`].

pub mod dialer;
pub mod endpoint;
pub mod listener;
pub mod relay;
