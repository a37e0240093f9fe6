//! The page handlers: what each route reads from storage and which template it fills.
//!
//! Every handler answers a problem with a [`PageError`](crate::html::PageError) page:
//! invalid input (an id, a cursor, a sort order) is a 400 that says what was wrong, an
//! unknown session a 404, a storage failure a 500 naming the error. An htmx request gets
//! the same words as a fragment for the page's refusal area ([`show_refusals`]).

pub(crate) mod bulk;
mod busy;
pub(crate) mod chat;
pub(crate) mod delete;
pub(crate) mod export;
pub(crate) mod fork;
mod form;
pub(crate) mod meta;
mod query;
mod refusal;
mod request;
pub(crate) mod sessions;
pub(crate) mod tokens;
pub(crate) mod transcript;
pub(crate) mod undo;

pub(crate) use refusal::show_refusals;
pub(crate) use request::not_found;
