//! `fusion sessions list`: one page of sessions, newest first (or by id), filtered by
//! owner, tag and a search of ids and titles, as a table or JSON, and the cursor (with the
//! command) for the next page.
//!
//! A page costs what the backend's paged listing costs
//! ([`fusion::storage::list_sessions_page`]), not a read of every session, so listing stays
//! quick however many sessions the storage holds.

use std::io::Write;

use anyhow::{Context, Result};
use fusion::storage::{
    ConversationStorage, Cursor, SessionInfo, SessionOrder, SessionPage, SessionQuery, StorageType,
    list_sessions_page,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::store::Store;
use crate::{ListArgs, ListOrder, render, time};

/// `sessions list --json`: one page and where the next starts.
#[derive(Serialize)]
struct PageDoc<'a> {
    sessions: Vec<Entry<'a>>,
    next: Option<&'a str>,
}

/// One session of `sessions list --json`; a struct so the keys keep this order.
#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    title: Option<&'a str>,
    owner: Option<&'a str>,
    tags: &'a [String],
    data: &'a Map<String, Value>,
    message_count: usize,
    created_at: Option<String>,
    updated_at: Option<String>,
    /// When the session expires (for an idle expiry, if nobody writes it before), or null.
    expires_at: Option<String>,
}

impl<'a> Entry<'a> {
    fn of(info: &'a SessionInfo) -> Self {
        Entry {
            id: &info.id,
            title: info.meta.title.as_deref(),
            owner: info.meta.owner.as_deref(),
            tags: &info.meta.tags,
            data: &info.meta.data,
            message_count: info.message_count,
            created_at: info.created_at.map(time::rfc3339),
            updated_at: info.updated_at.map(time::rfc3339),
            expires_at: info.expires_at.map(time::rfc3339),
        }
    }
}

/// `sessions list`: the page `args` asks for. `storage_url` is the `--storage` given (or
/// `FUSION_STORAGE`), repeated in the command for the next page.
pub async fn list(store: &Store, storage_url: Option<&str>, args: &ListArgs) -> Result<()> {
    let query = query(args)?;
    let storage = store.open_existing().await?;
    let storage_type = store.kind();
    let page = read_page(storage.as_ref(), storage_type, &query).await?;
    let mut out = render::stdout();
    if args.json {
        let doc = PageDoc {
            sessions: page.sessions.iter().map(Entry::of).collect(),
            next: page.next.as_ref().map(Cursor::as_str),
        };
        // Rendered first, then written: serde_json's error for a failed write hides the
        // io::Error, so a closed pipe would read as a failure to `render::report`.
        let json = serde_json::to_string_pretty(&doc)?;
        writeln!(out, "{json}")?;
    } else if page.sessions.is_empty() {
        render::note(nothing_found(storage_type, args));
    } else {
        out.write_all(render::session_table(&page.sessions, None).as_bytes())?;
        if let Some(next) = &page.next {
            writeln!(
                out,
                "next page: {}",
                next_command(args, next, storage_type, storage_url)
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The table of chat's `/sessions`: the newest sessions of `storage` (of `owner` only, when
/// the chat has one), `current` marked with `*`.
pub async fn print_table(
    storage: &dyn ConversationStorage,
    storage_type: &StorageType,
    owner: Option<&str>,
    current: &str,
) -> Result<()> {
    let mut query = SessionQuery::new();
    query.owner = owner.map(str::to_string);
    let page = read_page(storage, storage_type, &query).await?;
    if page.sessions.is_empty() {
        render::note(format_args!("no sessions in {storage_type}"));
        return Ok(());
    }
    let mut out = render::stdout();
    out.write_all(render::session_table(&page.sessions, Some(current)).as_bytes())?;
    if page.next.is_some() {
        writeln!(
            out,
            "(the {} most recent; `fusion sessions list` pages through the rest)",
            page.sessions.len()
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The query `args` describe, checked (owner, tag, search, cursor) before any storage is
/// opened.
fn query(args: &ListArgs) -> Result<SessionQuery> {
    let order = match args.order {
        ListOrder::Updated => SessionOrder::UpdatedDesc,
        ListOrder::Id => SessionOrder::Id,
    };
    let cursor = args
        .cursor
        .as_deref()
        .map(str::parse::<Cursor>)
        .transpose()
        .context("bad --cursor: pass the cursor the previous page printed")?;
    let mut query = SessionQuery::new()
        .order(order)
        .limit(usize::from(args.limit))
        .after(cursor);
    query.owner.clone_from(&args.owner);
    query.tag.clone_from(&args.tag);
    query.search.clone_from(&args.search);
    query
        .validate()
        .map_err(|err| match (&err, &query.cursor) {
            // A cursor handed out by the other order.
            (fusion::Error::InvalidQuery(detail), Some(_)) if detail.contains("cursor") => {
                anyhow::Error::new(err)
                    .context("bad --cursor: pass it with the --order it came from")
            }
            _ => anyhow::Error::new(err),
        })?;
    Ok(query)
}

async fn read_page(
    storage: &dyn ConversationStorage,
    storage_type: &StorageType,
    query: &SessionQuery,
) -> Result<SessionPage> {
    list_sessions_page(storage, query)
        .await
        .with_context(|| format!("cannot list sessions in {storage_type}"))
}

/// What an empty page says on stderr.
fn nothing_found(storage_type: &StorageType, args: &ListArgs) -> String {
    let mut filters = Vec::new();
    if let Some(owner) = &args.owner {
        filters.push(format!("of owner {owner}"));
    }
    if let Some(tag) = &args.tag {
        filters.push(format!("tagged {tag}"));
    }
    if let Some(text) = &args.search {
        filters.push(format!("with {text:?} in the id or title"));
    }
    let after = if args.cursor.is_some() {
        " after the cursor"
    } else {
        ""
    };
    let filters = if filters.is_empty() {
        String::new()
    } else {
        format!(" {}", filters.join(" "))
    };
    format!("no sessions{filters}{after} in {storage_type}")
}

/// The command that prints the page after `next`: these arguments with `--cursor next`.
///
/// `--storage` is repeated when it was given, unless it holds a password (which the
/// printed line would show), in which case the line asks for the same one.
fn next_command(
    args: &ListArgs,
    next: &Cursor,
    storage_type: &StorageType,
    storage_url: Option<&str>,
) -> String {
    let mut command = String::from("fusion sessions list");
    if let Some(owner) = &args.owner {
        command.push_str(&format!(" --owner {}", shell_quote(owner)));
    }
    if let Some(tag) = &args.tag {
        command.push_str(&format!(" --tag {}", shell_quote(tag)));
    }
    if let Some(text) = &args.search {
        command.push_str(&format!(" --search {}", shell_quote(text)));
    }
    if args.order == ListOrder::Id {
        command.push_str(" --order id");
    }
    command.push_str(&format!(" --limit {}", args.limit));
    command.push_str(&format!(" --cursor {}", shell_quote(next.as_str())));
    if args.json {
        command.push_str(" --json");
    }
    match storage_url {
        None => {}
        Some(_) if storage_type.to_string().contains("***") => {
            command.push_str(" --storage URL (the same as above)");
        }
        Some(url) => command.push_str(&format!(" --storage {}", shell_quote(url))),
    }
    command
}

/// `text` as one shell word: as it is when it has nothing a shell would interpret, else
/// in single quotes.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ListArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            list: ListArgs,
        }
        let argv = std::iter::once("list").chain(extra.iter().copied());
        Wrapper::parse_from(argv).list
    }

    #[test]
    fn the_next_command_repeats_the_filters_and_quotes_what_a_shell_would_read() {
        let cursor: Cursor = "u.17.chat-1".parse().unwrap();
        let storage: StorageType = "sqlite://s.db".parse().unwrap();
        let line = next_command(
            &args(&["--owner", "u-1", "--tag", "to do", "--limit", "2"]),
            &cursor,
            &storage,
            Some("sqlite://s.db"),
        );
        assert_eq!(
            line,
            "fusion sessions list --owner u-1 --tag 'to do' --limit 2 --cursor u.17.chat-1 \
             --storage sqlite://s.db"
        );
        let line = next_command(
            &args(&["--search", "50% of it's", "--order", "id"]),
            &cursor,
            &storage,
            None,
        );
        assert_eq!(
            line,
            r"fusion sessions list --search '50% of it'\''s' --order id --limit 50 --cursor u.17.chat-1"
        );
        let secret: StorageType = "postgres://app:pw@db/x".parse().unwrap();
        let line = next_command(&args(&[]), &cursor, &secret, Some("postgres://app:pw@db/x"));
        assert!(!line.contains("pw"), "{line}");
        assert!(
            line.ends_with("--storage URL (the same as above)"),
            "{line}"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_bad_cursor_or_filter_is_refused_before_storage_is_opened() {
        let err = format!("{:#}", query(&args(&["--cursor", "nope"])).unwrap_err());
        assert!(err.contains("bad --cursor"), "{err}");
        let err = format!(
            "{:#}",
            query(&args(&["--order", "id", "--cursor", "u.1.a"])).unwrap_err()
        );
        assert!(err.contains("--order"), "{err}");
        let err = format!("{:#}", query(&args(&["--owner", "../x"])).unwrap_err());
        assert!(err.contains("invalid owner"), "{err}");
        let err = format!("{:#}", query(&args(&["--search", " "])).unwrap_err());
        assert!(err.contains("invalid search text"), "{err}");
        let found = query(&args(&["--search", "Deploy"])).unwrap();
        assert_eq!(found.search.as_deref(), Some("Deploy"));
        assert_eq!(query(&args(&[])).unwrap().limit, 50);
    }

    /// A page read from the memory backend the way `sessions list --json` reads it.
    #[tokio::test]
    async fn json_entries_carry_the_expiry_instant_or_null() {
        use fusion::ChatMessage;
        use fusion::storage::{Expiry, InMemoryStorage, SessionMeta};
        use std::time::{Duration, UNIX_EPOCH};
        let store = InMemoryStorage::new();
        let at = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        let meta = SessionMeta::new().expiry(Expiry::At(at));
        let said = [ChatMessage::user("hi")];
        store.create_session("fixed", &meta, &said).await.unwrap();
        store.append("forever", &said).await.unwrap();
        let page = read_page(
            &store,
            &StorageType::Memory,
            &query(&args(&["--order", "id"])).unwrap(),
        )
        .await
        .unwrap();
        let json =
            serde_json::to_value(page.sessions.iter().map(Entry::of).collect::<Vec<_>>()).unwrap();
        assert_eq!(json[0]["id"], "fixed");
        assert_eq!(json[0]["expires_at"], "2100-01-01T00:00:00Z");
        assert_eq!(json[1]["id"], "forever");
        assert_eq!(json[1]["expires_at"], Value::Null);
    }
}
