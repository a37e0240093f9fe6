//! `notify(prefix, kind, generation, length, id)`: what the scripts that change sessions
//! call after each change, in one of two forms chosen when the storage is opened
//! ([`RedisOptions::publish_changes`](crate::RedisOptions::publish_changes)). [`QUIET`]
//! does nothing; [`PUBLISH`] publishes the change on `PREFIX:changes`, inside the
//! script, so subscribers see changes in the order they were made.
//!
//! The message is `KIND GENERATION LENGTH ID`, separated by single spaces (a session id
//! has no space, and comes last): the kinds are `created`, `appended`, `replaced`,
//! `truncated`, `updated` (metadata), `deleted` and `expired` (a purge, or a write that
//! met the session past its expiry, removed it); generation and length are the
//! session's after the change (`0 0` once it is gone). `crate::changes` reads them.

/// Calls nothing: the form of storages that do not publish.
pub(super) const QUIET: &str = r#"
local function notify(prefix, kind, gen, len, id) end
"#;

/// Publishes the change.
pub(super) const PUBLISH: &str = r#"
local function notify(prefix, kind, gen, len, id)
  redis.call('PUBLISH', prefix .. ':changes', kind .. ' ' .. gen .. ' ' .. len .. ' ' .. id)
end
"#;
