//! The high-level API: [`session`] creates, resumes, lists and deletes agent sessions.

pub mod session;
