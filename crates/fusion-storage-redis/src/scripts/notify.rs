//! What the scripts that change sessions publish when
//! [`RedisOptions::publish_changes`](crate::RedisOptions::publish_changes) is on, inside
//! the script, so subscribers see changes in the order they were made.
//!
//! A line of a script that starts with [`MARK`] (`--publish `, after any indentation)
//! belongs to the publishing form only. The quiet form keeps it a Lua comment, which
//! compiles to nothing, so a storage that does not publish pays nothing for it (a
//! function defined in every script would cost each run its closure). The publishing
//! form ([`publishing`]) removes the mark and defines [`NOTIFY`] in front.
//!
//! The message is `KIND GENERATION LENGTH ID`, separated by single spaces (a session id
//! has no space, and comes last): the kinds are `created`, `appended`, `replaced`,
//! `truncated`, `updated` (metadata), `deleted` and `expired` (a purge, or a write that
//! met the session past its expiry, removed it; or a write left it with an expiry that
//! had already passed, so Redis dropped it at once, which follows that write's own
//! message); generation and length are the session's after the change (`0 0` once it is
//! gone). `crate::changes` reads them.

/// The mark of a line only the publishing form runs.
pub(super) const MARK: &str = "--publish ";

/// `notify(prefix, kind, generation, length, id)`: publishes one change on
/// `PREFIX:changes`. Defined in the publishing form only.
pub(super) const NOTIFY: &str = r#"
local function notify(prefix, kind, gen, len, id)
  redis.call('PUBLISH', prefix .. ':changes', kind .. ' ' .. gen .. ' ' .. len .. ' ' .. id)
end
"#;

/// The publishing form of a script's full text: [`NOTIFY`], then the text with every
/// [`MARK`] removed.
pub(super) fn publishing(source: &str) -> String {
    [NOTIFY, &source.replace(MARK, "")].concat()
}
