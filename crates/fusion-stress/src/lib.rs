//! Fusion's randomized multi-process checker of shared sessions (issue #13's stress test).
//!
//! Several worker processes run seeded random mixes of turns, undos, summaries, forks,
//! deletes, labels, expiry changes and reloads on a few shared sessions, against one
//! loopback LLM server, append to sessions that expire mid-run while purging, and retitle
//! idle sessions while purging those not written since a cutoff; each journals what it was
//! told. Afterwards the [`checker`] verifies that every
//! acknowledged message is stored, in its writer's order, unless that writer's own undo or
//! a delete removed it, that the system prompt is stored exactly once, that no summary
//! hides a message it does not name, and that no call fails as no interleaving may;
//! [`brief`], that an expired session's messages stay gone and its successor's stay;
//! [`idle`], that a purge of stale sessions keeps one retitled after its cutoff; and
//! [`listing`], that the storage's listings agree with what it stores. Run it with `cargo
//! xtask stress --seconds N`, or as `fusion-stress run --backend
//! fs|sqlite|redis|redis-cluster|postgres`.
//!
//! With `--faults P`, each worker's storage loses replies after they applied (a cut
//! connection, or a write reported failed), under the retry layer ([`faults`]); every
//! journaled operation says how many it met, and the checker accepts either outcome of an
//! operation that failed after one, never a message stored twice or a lost acknowledged
//! one.
//!
//! Layers, bottom up: [`tags`], [`journal`], [`report`], [`backend`] and [`faults`]; [`mock`],
//! [`brief`], [`idle`], [`duplicates`], [`checker`] and [`listing`] over them; [`worker`], then [`coordinator`] on top.

pub mod backend;
pub mod brief;
pub mod checker;
pub mod coordinator;
pub mod duplicates;
pub mod faults;
pub mod idle;
pub mod journal;
pub mod journal_rules;
pub mod listing;
pub mod mock;
pub mod report;
pub mod tags;
pub mod worker;
