//! The cross-backend conformance suite, run against the Redis server at `REDIS_URL`.
//!
//! `cargo test -p fusion-storage-redis conformance_redis::` runs it, `metadata_redis::`
//! the cases of session metadata and listing; without `REDIS_URL` each case prints a
//! skip (or fails under `FUSION_REQUIRE_BACKENDS`).

mod common;

use common::{harness, publishing_harness};

fusion_core::conformance_suite!(conformance_redis, harness);
// Every write script in its publishing form (`RedisOptions::publish_changes`).
fusion_core::conformance_suite!(conformance_redis_publishing, publishing_harness);
