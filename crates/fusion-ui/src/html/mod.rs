//! The pages as compiled templates (askama, from the crate's `templates/` folder), and
//! the data each one shows.
//!
//! Templates escape every value by default; the one exception is HTML this crate made
//! safe itself (markdown through [`crate::markdown`], and nested templates, which escape
//! their own values), inserted with `|safe`. Nothing here reads storage: the routes read
//! it and hand these types plain data.

pub(crate) mod bulk;
pub(crate) mod chat;
pub(crate) mod delete;
pub(crate) mod error;
mod page;
pub(crate) mod sessions;
pub(crate) mod transcript;
pub(crate) mod undo;

pub(crate) use error::PageError;
pub(crate) use page::render;
