//! Unit tests of the store, without sockets.
