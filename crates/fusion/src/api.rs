//! The high-level API: [`session`] creates, resumes, lists and deletes agent sessions;
//! [`export`] writes a session as a json, jsonl or markdown file and reads one back; [`time`]
//! holds the notations of instants and spans those files and the `fusion` command use.

pub mod export;
pub mod session;
pub mod time;
