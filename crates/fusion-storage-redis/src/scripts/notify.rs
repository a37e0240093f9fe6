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

/// The first lines of the publishing form: a user whom the server's ACL does not let
/// publish on the channel (Redis 7 gives a new ACL user no channel unless told
/// `&PATTERN` or `allchannels`) would have its `PUBLISH` refused after the script's
/// writes, which Redis keeps: a write reported failed although stored, which a retry
/// stores again. So the script asks first (`redis.acl_check_cmd`, Redis 7.0 and newer;
/// an older server runs the script unchecked) and refuses before anything is written.
/// `@PREFIX@` is the Lua expression of the script's key prefix argument.
pub(super) const MAY_PUBLISH: &str = r#"
if redis.acl_check_cmd and not redis.acl_check_cmd('PUBLISH', @PREFIX@ .. ':changes', '') then
  return redis.error_reply('NOPERM fusion: this Redis user may not PUBLISH to the channel '
    .. @PREFIX@ .. ':changes, which publish_changes needs (ACL &' .. @PREFIX@
    .. ':changes or allchannels); nothing was written')
end
"#;

/// The publishing form of a script's full text, whose key prefix is the Lua expression
/// `prefix` (`ARGV[n]`): [`MAY_PUBLISH`], [`NOTIFY`], then the text with every [`MARK`]
/// removed.
pub(super) fn publishing(prefix: &str, source: &str) -> String {
    let check = MAY_PUBLISH.replace("@PREFIX@", prefix);
    [&check, NOTIFY, &source.replace(MARK, "")].concat()
}
