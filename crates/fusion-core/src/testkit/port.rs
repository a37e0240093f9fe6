//! Ports of 127.0.0.1 for the servers tests start themselves (a throwaway PostgreSQL
//! cluster, a `redis-server`, cluster nodes) and for ports a test needs nothing to listen
//! on: each reserved for as long as the test holds it ([`reserve_port`]).
//!
//! Unlike a port found by binding port 0 and released at once, a reserved one is no other
//! test's meanwhile: the tests of a binary run side by side, and so do the binaries of the
//! workspace. A port from port 0 could be drawn again by another test before this one's
//! server bound it (the test then ran against the other test's server, or met a server on
//! a port meant to have nothing listening), or taken by another test's listener while the
//! server was down for a restart (the restart failed). Every crate's tests reserve from
//! one lock directory, so they keep apart from each other's too, and from the servers of
//! `cargo xtask test-all-backends`.
//!
//! The crate `fusion-test-ports`, which xtask uses too without this feature's tokio and
//! serde; re-exported here so every test reaches it through the testkit.
//!
//! ```no_run
//! use fusion_core::testkit::port::reserve_port;
//!
//! let reserved = reserve_port();
//! let url = format!("redis://127.0.0.1:{}", reserved.port);
//! // Start the server on `reserved.port`; keep `reserved` alive as long as the server.
//! # drop(url);
//! ```

pub use fusion_test_ports::{ReservedPort, ephemeral_range, reserve_port, try_reserve_port};
