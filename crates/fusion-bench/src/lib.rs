//! The shared benchmark workload of docs/benchmarks.md, as a library for the runner
//! (`src/main.rs`, run by `cargo xtask bench`) and for the criterion micro-benchmarks of
//! the hot paths (`benches/hot_paths.rs`, run by `cargo bench -p fusion-bench`).

pub mod layer;
pub mod postgres_schemas;
pub mod redis_conn;
pub mod redis_keys;
pub mod workload;
