//! The sessions page: a filter form, and a table of one page of sessions with a link to
//! the next; the table alone is the fragment htmx swaps in. Each row's token total is a
//! cell of its own ([`TokensCell`]), fetched once the row is in view.

use askama::Template;
use fusion::storage::{SessionInfo, SessionPage};

use crate::assets::{AssetUrls, URLS};
use crate::format::utc_or_dash;

/// What the listing is filtered and sorted by, as the page's links and form carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Only this owner's sessions ("" for every owner).
    pub owner: String,
    /// Only sessions with this tag ("" for any).
    pub tag: String,
    /// Only sessions whose id or title contains this ("" for any).
    pub search: String,
    /// Sorted by id rather than newest first.
    pub by_id: bool,
    /// The page size, when the request chose one.
    pub limit: Option<usize>,
}

impl Filter {
    /// The sessions page under this filter, starting after `cursor`.
    pub(crate) fn href(&self, cursor: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if !self.owner.is_empty() {
            query.append_pair("owner", &self.owner);
        }
        if !self.tag.is_empty() {
            query.append_pair("tag", &self.tag);
        }
        if !self.search.is_empty() {
            query.append_pair("search", &self.search);
        }
        if self.by_id {
            query.append_pair("order", "id");
        }
        if let Some(limit) = self.limit {
            query.append_pair("limit", &limit.to_string());
        }
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        let query = query.finish();
        if query.is_empty() {
            "/sessions".to_string()
        } else {
            format!("/sessions?{query}")
        }
    }

    fn is_filtered(&self) -> bool {
        !self.owner.is_empty() || !self.tag.is_empty() || !self.search.is_empty()
    }
}

/// A name that links to the listing filtered by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterLink {
    pub name: String,
    pub href: String,
}

/// One session in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub id: String,
    /// The title, or the id when there is none.
    pub label: String,
    pub titled: bool,
    pub owner: Option<FilterLink>,
    pub tags: Vec<FilterLink>,
    pub updated: String,
    pub count: usize,
}

/// The table of one page of sessions, with its paging links: the fragment a filter or
/// paging request from htmx gets.
#[derive(Template, Debug)]
#[template(path = "sessions_table.html")]
pub(crate) struct SessionsTable {
    rows: Vec<Row>,
    filtered: bool,
    first_page: bool,
    first_href: String,
    next_href: Option<String>,
}

impl SessionsTable {
    /// The table of `page`, listed under `filter`; `first_page` when it was read without
    /// a cursor.
    pub(crate) fn new(filter: &Filter, page: SessionPage, first_page: bool) -> Self {
        let rows = page
            .sessions
            .into_iter()
            .map(|info| row(filter, info))
            .collect();
        Self {
            rows,
            filtered: filter.is_filtered(),
            first_page,
            first_href: filter.href(None),
            next_href: page.next.map(|cursor| filter.href(Some(cursor.as_str()))),
        }
    }
}

fn row(filter: &Filter, info: SessionInfo) -> Row {
    let owner = info.meta.owner.map(|owner| FilterLink {
        href: Filter {
            owner: owner.clone(),
            ..filter.clone()
        }
        .href(None),
        name: owner,
    });
    let tags = info
        .meta
        .tags
        .into_iter()
        .map(|tag| FilterLink {
            href: Filter {
                tag: tag.clone(),
                ..filter.clone()
            }
            .href(None),
            name: tag,
        })
        .collect();
    Row {
        label: info.meta.title.clone().unwrap_or_else(|| info.id.clone()),
        titled: info.meta.title.is_some(),
        id: info.id,
        owner,
        tags,
        updated: utc_or_dash(info.updated_at),
        count: info.message_count,
    }
}

/// One session's token total: the cell a row's `hx-get` swaps in for its "counting…"
/// placeholder.
#[derive(Template, Debug)]
#[template(
    source = r#"<td class="num tokens" title="{{ how }}">{{ text }}</td>"#,
    ext = "html"
)]
pub(crate) struct TokensCell {
    text: String,
    how: String,
}

impl TokensCell {
    /// `tokens` in the `messages` stored messages.
    pub(crate) fn counted(tokens: usize, messages: usize) -> Self {
        let plural = if messages == 1 { "" } else { "s" };
        Self {
            text: format!("{} tokens", with_thousands(tokens)),
            how: format!(
                "The {} stored message{plural}, each with its framing, counted with \
                 the o200k_base encoding (GPT-4o and later) as the transcript counts its \
                 turns: the model a session talks to is not stored, so this is a guide to \
                 its size.",
                with_thousands(messages)
            ),
        }
    }

    /// The cell of a session deleted since its row was shown.
    pub(crate) fn gone() -> Self {
        Self {
            text: "—".to_string(),
            how: "This session is no longer stored.".to_string(),
        }
    }

    /// The cell of a session that could not be counted, saying why in its tooltip.
    pub(crate) fn failed(why: &str) -> Self {
        Self {
            text: "not counted".to_string(),
            how: format!("Not counted: {why}"),
        }
    }
}

/// `n` with a comma between each group of three digits: `1,234,567`.
fn with_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// The whole sessions page.
#[derive(Template, Debug)]
#[template(path = "sessions.html")]
pub(crate) struct SessionsPage {
    title: &'static str,
    assets: &'static AssetUrls,
    filter: Filter,
    table: SessionsTable,
}

impl SessionsPage {
    /// The page with its filter form showing `filter`, around `table`.
    pub(crate) fn new(filter: Filter, table: SessionsTable) -> Self {
        Self {
            title: "Sessions",
            assets: &URLS,
            filter,
            table,
        }
    }
}

#[cfg(test)]
mod tests {
    use fusion::storage::SessionMeta;

    use super::*;

    #[test]
    fn the_page_renders_rows_filters_and_the_next_link() {
        let mut info = SessionInfo::new("s-1", 3);
        info.meta = SessionMeta::new()
            .owner("alice")
            .title("<b>Plan</b>")
            .tags(["ops & dev"]);
        let filter = Filter {
            tag: "x y".into(),
            by_id: true,
            ..Filter::default()
        };
        let next = "i.s-1".parse().unwrap();
        let table = SessionsTable::new(&filter, SessionPage::new(vec![info], Some(next)), true);
        let html = SessionsPage::new(filter, table).render().unwrap();
        assert!(
            html.contains(r#"<a href="/sessions/s-1">&#60;b&#62;Plan&#60;/b&#62;</a>"#),
            "{html}"
        );
        assert!(
            html.contains("/sessions?owner=alice&#38;tag=x+y&#38;order=id"),
            "{html}"
        );
        assert!(
            html.contains("/sessions?tag=ops+%26+dev&#38;order=id"),
            "{html}"
        );
        assert!(
            html.contains(r#"href="/sessions?tag=x+y&#38;order=id&#38;cursor=i.s-1""#),
            "{html}"
        );
        assert!(html.contains(r#"<option value="id" selected>"#), "{html}");
    }

    #[test]
    fn token_cells_group_thousands_and_say_how_they_counted() {
        assert_eq!(with_thousands(0), "0");
        assert_eq!(with_thousands(999), "999");
        assert_eq!(with_thousands(1_234), "1,234");
        assert_eq!(with_thousands(12_345_678), "12,345,678");
        let html = TokensCell::counted(1_234, 1).render().unwrap();
        assert!(
            html.starts_with(r#"<td class="num tokens" title="The 1 stored message, "#),
            "{html}"
        );
        assert!(html.ends_with(">1,234 tokens</td>"), "{html}");
    }

    #[test]
    fn the_fragment_is_the_table_alone_and_says_when_nothing_matches() {
        let filter = Filter {
            owner: "nobody".into(),
            ..Filter::default()
        };
        let html = SessionsTable::new(&filter, SessionPage::new(Vec::new(), None), true)
            .render()
            .unwrap();
        assert!(html.starts_with(r#"<div id="sessions-table">"#), "{html}");
        assert!(html.contains("No sessions match these filters."), "{html}");
        assert!(!html.contains("<html"), "{html}");
    }
}
