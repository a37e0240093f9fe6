//! The cross-backend conformance suites (messages, then session metadata and listing),
//! each case in a schema of its own on the server at `FUSION_POSTGRES_URL` (see
//! `support`).
//!
//! `cargo test -p fusion-storage-postgres conformance_postgres::` (or `metadata_postgres::`)
//! runs one suite; without a server each case prints a skip (or fails under
//! `FUSION_REQUIRE_BACKENDS`).

mod support;

use support::harness;

fusion_core::conformance_suite!(conformance_postgres, harness);
