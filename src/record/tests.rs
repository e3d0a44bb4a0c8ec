//! The record layer against real rustls peers, over the in-memory pump.

use super::*;
