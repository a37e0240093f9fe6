//! `GET /` (to the sessions page), `GET /sessions` (one page of the listing, filtered by
//! owner, tag and a search of ids and titles, and sorted) and `GET /go?id=` (to a session
//! by its id).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};
use fusion::storage::{Cursor, SessionOrder, SessionQuery};
use serde::Deserialize;

use super::request::{Params, valid_id, wants_fragment};
use crate::html::sessions::{Filter, SessionsPage, SessionsTable};
use crate::html::{PageError, render};
use crate::state::AppState;

/// `GET /`: the sessions page is the home page.
pub(crate) async fn home() -> Redirect {
    Redirect::to("/sessions")
}

/// The query of `GET /sessions`, as text so each field's error can be explained.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    owner: Option<String>,
    tag: Option<String>,
    search: Option<String>,
    order: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// `GET /sessions`: one page of sessions, the whole page or (for htmx) the table alone.
/// Reads one page through `list_page`, never the whole listing.
pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(params): Params<ListParams>,
) -> Result<Response, PageError> {
    let (filter, listing) = parse(params)?;
    let page = state
        .storage
        .list_page(&listing)
        .await
        .map_err(|err| PageError::storage(&err))?;
    let table = SessionsTable::new(&filter, page, listing.cursor.is_none());
    Ok(if wants_fragment(&headers) {
        render(StatusCode::OK, &table)
    } else {
        render(StatusCode::OK, &SessionsPage::new(filter, table))
    })
}

/// The filter the page shows and the query it runs, from the request's text.
fn parse(params: ListParams) -> Result<(Filter, SessionQuery), PageError> {
    // A form sends empty fields for "any", and pasted ids (or a search typed with a
    // trailing space) may carry spaces.
    let given = |field: Option<String>| {
        field
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty())
    };
    let by_id = match given(params.order).as_deref() {
        None | Some("updated") => false,
        Some("id") => true,
        Some(other) => {
            return Err(PageError::bad_request(format!(
                "Unknown sort order {other:?}: use \"updated\" (newest first) or \"id\"."
            )));
        }
    };
    let limit = given(params.limit)
        .map(|text| {
            text.parse::<usize>().map_err(|_| {
                PageError::bad_request(format!("The page size {text:?} is not a whole number."))
            })
        })
        .transpose()?;
    let cursor = given(params.cursor)
        .map(|text| {
            text.parse::<Cursor>()
                .map_err(|err| PageError::bad_request(format!("{err} (start from the first page)")))
        })
        .transpose()?;
    let filter = Filter {
        owner: given(params.owner).unwrap_or_default(),
        tag: given(params.tag).unwrap_or_default(),
        search: given(params.search).unwrap_or_default(),
        by_id,
        limit,
    };
    let mut listing = SessionQuery::new()
        .order(if by_id {
            SessionOrder::Id
        } else {
            SessionOrder::UpdatedDesc
        })
        .limit(limit.unwrap_or(SessionQuery::DEFAULT_LIMIT))
        .after(cursor);
    if !filter.owner.is_empty() {
        listing = listing.owner(filter.owner.clone());
    }
    if !filter.tag.is_empty() {
        listing = listing.tag(filter.tag.clone());
    }
    if !filter.search.is_empty() {
        listing = listing.search(filter.search.clone());
    }
    listing
        .validate()
        .map_err(|err| PageError::bad_request(err.to_string()))?;
    Ok((filter, listing))
}

/// The query of `GET /go`.
#[derive(Debug, Deserialize)]
pub(crate) struct GoParams {
    #[serde(default)]
    id: String,
}

/// `GET /go?id=X`: to the page of session X (400 for an id no backend accepts).
pub(crate) async fn go(Params(params): Params<GoParams>) -> Result<Redirect, PageError> {
    let id = params.id.trim().to_string();
    valid_id(&id)?;
    Ok(Redirect::to(&format!("/sessions/{id}")))
}
