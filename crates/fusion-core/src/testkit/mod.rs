//! The storage conformance kit: one behaviour suite that every backend runs.
//!
//! A backend crate provides a [`StorageHarness`] (how to open a fresh, private storage
//! location, and further instances on that same location) and invokes
//! [`conformance_suite!`](crate::conformance_suite) in its `tests/conformance.rs`:
//!
//! ```ignore
//! struct Harness(tempfile::TempDir);
//!
//! #[async_trait::async_trait]
//! impl fusion_core::testkit::StorageHarness for Harness {
//!     type Storage = FileSystemStorage;
//!     async fn open(&self) -> fusion_core::Result<FileSystemStorage> {
//!         FileSystemStorage::connect(self.0.path()).await
//!     }
//! }
//!
//! async fn harness() -> Option<Harness> {
//!     Some(Harness(tempfile::tempdir().unwrap()))
//! }
//!
//! fusion_core::conformance_suite!(conformance_fs, harness);
//! ```
//!
//! That expands to `conformance_fs::<case>` tests, one `#[tokio::test]` per case in
//! [`cases`], so `cargo test conformance_fs::concurrent` picks one backend and one case.
//! A server-backed backend whose server is not configured returns `None` from its setup
//! through [`unavailable`], which prints a `skipped:` line under plain `cargo test` and
//! panics when [`REQUIRE_BACKENDS_ENV`] is on (as `cargo xtask test-all-backends` sets it).
//!
//! Backend-specific tests of concurrent writers check their result with
//! [`assert_nothing_lost_in_writer_order`], the same check the conformance case uses.

pub mod cases;
#[cfg(unix)]
pub mod child;
pub mod conditional;
pub mod exactly_once;
pub mod faults;
pub mod logs;
pub mod metadata;
pub mod owners;
pub mod port;
pub mod retention;
pub mod search;
pub mod times;
pub mod writes;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{self, AtomicU64};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::{ChatMessage, ConversationStorage, Intercepted, Layer, Result};

/// When this environment variable is on (`1`, `true`, `yes` or `on`), an unavailable
/// backend fails its tests instead of skipping them; unset, empty, `0`, `false`, `no` or
/// `off`, it skips them.
pub const REQUIRE_BACKENDS_ENV: &str = "FUSION_REQUIRE_BACKENDS";

/// A private storage location for one test case.
///
/// Every call to [`open`](Self::open) returns a new storage instance (new connection pool,
/// new client) on the same location, so cases can check that one instance sees another's
/// writes and that writers with separate instances do not lose each other's messages.
#[async_trait]
pub trait StorageHarness: Send + Sync + 'static {
    /// The storage type under test.
    type Storage: ConversationStorage + 'static;

    /// Opens a new storage instance on this harness's location.
    async fn open(&self) -> Result<Self::Storage>;
}

/// A harness whose every instance is a clone of one storage value: for storages whose
/// clones share their sessions (`InMemoryStorage`, SQLite's `sqlite::memory:`), where a
/// second connection would open a different, empty store.
pub struct Clones<S>(pub S);

#[async_trait]
impl<S: ConversationStorage + Clone + 'static> StorageHarness for Clones<S> {
    type Storage = S;

    async fn open(&self) -> Result<S> {
        Ok(self.0.clone())
    }
}

/// `harness`'s storage seen through `layer`: how the conformance suite runs on a layered
/// storage (`conformance_encrypted_<backend>`, ...). Every instance goes through the same
/// layer value, as processes sharing a store share its configuration.
pub struct Layered<H, L> {
    /// The backend's own harness.
    pub harness: H,
    /// The layer every instance is wrapped in.
    pub layer: L,
}

#[async_trait]
impl<H: StorageHarness, L: Layer + Send + Sync + 'static> StorageHarness for Layered<H, L> {
    type Storage = Intercepted<Arc<dyn ConversationStorage>>;

    async fn open(&self) -> Result<Self::Storage> {
        let inner = self.harness.open().await?;
        Ok(Intercepted(self.layer.layer(Arc::new(inner))))
    }
}

/// A fresh instance of `harness`'s storage.
pub(crate) async fn open<H: StorageHarness>(harness: &H) -> H::Storage {
    harness
        .open()
        .await
        .expect("opening the storage under test")
}

/// What `session_info` reports of `id`, which must exist.
pub(crate) async fn info(
    store: &(impl ConversationStorage + ?Sized),
    id: &str,
) -> crate::SessionInfo {
    store
        .session_info(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("session {id} should exist"))
}

/// The ids of `infos` in `order`, computed from what `session_info` reports.
pub(crate) fn expected_order(
    mut infos: Vec<crate::SessionInfo>,
    order: crate::SessionOrder,
) -> Vec<String> {
    infos.sort_by_key(|i| crate::Position::of(order, i));
    infos.into_iter().map(|i| i.id).collect()
}

/// Every page of `query`, concatenated, checking that no page is larger than the limit
/// and that only the last page has no cursor.
pub async fn all_pages(
    store: &(impl ConversationStorage + ?Sized),
    query: crate::SessionQuery,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut query = query;
    for _ in 0..10_000 {
        let crate::SessionPage { sessions, next } = store.list_page(&query).await.unwrap();
        assert!(
            sessions.len() <= query.limit,
            "a page holds at most its limit"
        );
        ids.extend(sessions.into_iter().map(|s| s.id));
        match next {
            Some(cursor) => query = query.after(Some(cursor)),
            None => return ids,
        }
    }
    panic!("paging did not end");
}

/// A turn as most cases write it: the user's `text` and the reply `ok`.
pub fn said(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::user(text), ChatMessage::assistant("ok")]
}

/// A name no other test, run or process uses, for a test's own place on a shared server
/// (a Redis key prefix): `kind`, then `:` and this process's id, the time in nanoseconds
/// and a count of the calls in this process, as in `fusion-test:4242-1765000000123456789-0`.
/// `kind` says which tests made it, so what a failed run leaves on the server says whose
/// it is. What follows `kind` is some 30 to 40 characters; a Redis key prefix holds 64.
///
/// ```
/// let (first, second) = (
///     fusion_core::testkit::unique_name("fusion-test"),
///     fusion_core::testkit::unique_name("fusion-test"),
/// );
/// assert!(first.starts_with("fusion-test:"));
/// assert_ne!(first, second);
/// ```
pub fn unique_name(kind: &str) -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let call = CALLS.fetch_add(1, atomic::Ordering::Relaxed);
    format!("{kind}:{}-{nanos}-{call}", std::process::id())
}

/// Deletes every session in `store`: what a test stored in its place on a shared server.
pub async fn delete_every_session(store: &(impl ConversationStorage + ?Sized)) -> Result<()> {
    for id in store.list_sessions().await? {
        store.delete(&id).await?;
    }
    Ok(())
}

/// Runs `clean_up` (say, a [`delete_every_session`]) from a test's `Drop`, which cannot
/// await, even when the test failed: on a runtime of its own, on a thread of its own (the
/// test's runtime may be the one being dropped from). Panics when it fails, unless the
/// test is panicking already.
pub fn clean_up_from_drop<F>(clean_up: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = Result<()>>,
{
    let cleaned = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(clean_up())
    })
    .join();
    if !matches!(cleaned, Ok(Ok(()))) && !std::thread::panicking() {
        panic!("could not clean up after this test: {cleaned:?}");
    }
}

/// Now, cut to the microsecond every backend keeps, so an instant built from it round
/// trips exactly.
pub fn now_micros() -> SystemTime {
    crate::from_unix_micros(crate::unix_micros(SystemTime::now()))
}

/// Sleeps until the wall clock is past `instant`, plus 20 ms for backends that round to
/// the millisecond or read a server's clock, however long the scheduler takes: tests of
/// expiry wait on the clock, never on a sleep being long enough.
pub async fn wait_past(instant: SystemTime) {
    let past = instant + Duration::from_millis(20);
    while let Ok(left) = past.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(1)).await;
    }
}

/// Reports a backend whose server is not available to the tests.
///
/// Returns `None` after printing `skipped: <reason>` so the case passes trivially under
/// plain `cargo test`, or panics with the reason when [`REQUIRE_BACKENDS_ENV`] is on.
pub fn unavailable<T>(backend: &str, reason: &str) -> Option<T> {
    if backends_required(std::env::var(REQUIRE_BACKENDS_ENV)) {
        panic!("{backend} backend unavailable and {REQUIRE_BACKENDS_ENV} is on: {reason}");
    }
    // Written to the stderr handle rather than with `eprintln!`, which libtest captures
    // and hides for passing tests: a skip must be visible.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {backend}: {reason}");
    None
}

/// Whether [`REQUIRE_BACKENDS_ENV`]'s value turns skips into failures, read as every
/// yes-or-no setting is ([`parse_flag`](crate::parse_flag)), an empty value as off: a
/// `FUSION_REQUIRE_BACKENDS=0` meant to turn it off did not skip, since any value counted.
/// A value that is neither yes nor no panics naming it rather than guess either way.
fn backends_required(value: Result<String, std::env::VarError>) -> bool {
    match value {
        Err(std::env::VarError::NotPresent) => false,
        Ok(text) if text.trim().is_empty() => false,
        Ok(text) => {
            crate::parse_flag(REQUIRE_BACKENDS_ENV, &text).unwrap_or_else(|err| panic!("{err}"))
        }
        Err(err) => panic!("{REQUIRE_BACKENDS_ENV}: {err}"),
    }
}

/// Asserts that concurrent writers lost nothing and each writer's messages kept their order.
///
/// Each writer tags its `k`-th message `"{writer}-{k}"` (`k` in decimal, zero padding
/// allowed: `w3-007`) and appends its messages in the order of `k`. `history` is what a
/// load returned after every writer finished. It must hold, for each tag in `writers`,
/// exactly that writer's messages `0..per_writer`, in that order; the writers may
/// interleave freely. A lost, duplicated or reordered message, an untagged one or one from
/// an unknown writer panics, naming the writer, the index and the position. Messages that
/// carry no tag (say, replies appended with a tagged message) are filtered out first by
/// the caller.
///
/// ```
/// use fusion_core::ChatMessage;
/// use fusion_core::testkit::assert_nothing_lost_in_writer_order;
///
/// let history: Vec<ChatMessage> = ["a-0", "b-0", "a-1", "b-1"]
///     .into_iter()
///     .map(ChatMessage::user)
///     .collect();
/// assert_nothing_lost_in_writer_order(&history, &["a", "b"], 2);
/// ```
pub fn assert_nothing_lost_in_writer_order<S: AsRef<str>>(
    history: &[ChatMessage],
    writers: &[S],
    per_writer: usize,
) {
    let mut next: HashMap<&str, usize> = writers.iter().map(|w| (w.as_ref(), 0)).collect();
    assert_eq!(next.len(), writers.len(), "writer tags must be distinct");
    for (pos, message) in history.iter().enumerate() {
        let content = message.content.as_str();
        let tagged = content
            .rsplit_once('-')
            .and_then(|(tag, k)| Some((tag, k.parse::<usize>().ok()?)));
        let Some((tag, k)) = tagged else {
            panic!("message {pos} ({content:?}) is not tagged `writer-index`");
        };
        let Some(expected) = next.get_mut(tag) else {
            panic!("message {pos} ({content:?}) comes from no known writer");
        };
        match k.cmp(expected) {
            Ordering::Equal => *expected += 1,
            Ordering::Less => {
                let first = history.iter().position(|m| m.content == content);
                panic!(
                    "writer {tag}: message {k} duplicated or out of order at position {pos} \
                     (first at {first:?})"
                )
            }
            Ordering::Greater => panic!(
                "writer {tag}: message {expected} lost or out of order ({k} found first, at position {pos})"
            ),
        }
    }
    for writer in writers {
        let stored = next[writer.as_ref()];
        assert_eq!(
            stored,
            per_writer,
            "writer {}: {stored} of its {per_writer} messages stored (messages lost or duplicated)",
            writer.as_ref()
        );
    }
}

/// Expands to a module `$module` holding one `#[tokio::test]` per conformance case.
///
/// `$setup` is an `async fn() -> Option<impl StorageHarness>` visible from the invoking
/// module; `None` means "backend unavailable" (see [`unavailable`]).
#[macro_export]
macro_rules! conformance_suite {
    ($module:ident, $setup:path) => {
        #[cfg(test)]
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_cases!(
                $setup, cases;
                round_trip_keeps_every_field,
                large_message_round_trips,
                load_of_unknown_session_is_empty,
                append_after_save_extends_history,
                append_creates_a_new_session,
                append_of_nothing_changes_nothing,
                save_replaces_existing_history,
                save_of_empty_history_removes_session,
                delete_removes_session_and_unknown_is_ok,
                list_returns_every_session_once,
                sessions_are_isolated,
                hostile_ids_are_rejected_and_nothing_is_written,
                concurrent_appends_lose_nothing_and_keep_order,
                second_instance_sees_writes,
                truncate_keeps_a_prefix,
                session_info_counts_messages,
                a_message_too_deep_to_read_back_is_refused_and_nothing_stored,
            );
            $crate::__conformance_cases!(
                $setup, conditional;
                generations_change_on_every_rewrite_and_never_on_append,
                conditional_writes_apply_only_when_expected,
                a_deleted_session_is_not_resurrected_by_a_conditional_append,
                concurrent_creators_store_the_opening_once,
                racing_rewrites_of_one_revision_let_exactly_one_through,
                a_conditional_write_refuses_unstorable_messages,
                a_scope_never_creates_a_session_without_its_owner,
                a_rewrite_keeps_the_sessions_times,
            );
            $crate::__conformance_cases!(
                $setup, metadata;
                metadata_round_trips_and_survives_rewrites,
                creation_refuses_what_it_cannot_store_and_writes_nothing,
                updates_change_only_what_they_name,
                renames_conditional_on_the_title_never_overwrite_another,
                pages_follow_the_order_and_filters,
                cursors_stay_correct_while_sessions_are_written,
                listing_refuses_a_bad_query,
            );
            $crate::__conformance_cases!(
                $setup, owners;
                owners_never_see_each_others_sessions,
                a_scoped_update_never_changes_a_session_another_owner_took_over,
            );
            $crate::__conformance_cases!(
                $setup, search;
                search_finds_ids_and_titles_in_either_ascii_case,
                search_combines_with_owner_tag_and_order,
                search_pages_continue_after_their_cursor,
                listing_refuses_a_bad_search,
            );
            $crate::__conformance_cases!(
                $setup, exactly_once;
                an_append_stores_each_id_once,
                a_retry_finds_its_messages_after_others_appended,
                ids_survive_rewrites_and_repeats_are_refused,
                conditional_writes_and_creation_store_each_id_once,
                racing_copies_of_one_batch_store_it_once,
                a_retry_that_stores_nothing_leaves_the_last_write_alone,
            );
            $crate::__conformance_cases!(
                $setup, times;
                a_copy_keeps_the_times_it_is_given,
                a_copy_under_the_id_of_a_deleted_session_is_listed,
                times_later_than_the_storages_clock_are_stored_as_its_own,
                an_idle_expiry_counts_from_the_given_last_write,
                times_that_cannot_be_are_refused_and_nothing_is_written,
            );
            $crate::__conformance_cases!(
                $setup, retention;
                an_expiry_round_trips_and_an_idle_one_moves_with_writes,
                an_expired_session_is_gone_for_every_reader,
                a_write_to_an_expired_session_starts_it_afresh,
                purge_removes_expired_sessions_in_bounded_batches,
                a_delete_conditional_on_the_last_write_keeps_a_session_written_since,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($setup:path, $module:ident; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(harness) = $setup().await {
                    $crate::testkit::$module::$case(&harness).await;
                }
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use std::env::VarError;

    use super::backends_required;

    #[test]
    fn require_backends_is_read_as_a_flag() {
        for off in ["0", "false", "no", "off", "No", "", " "] {
            assert!(!backends_required(Ok(off.into())), "{off:?}");
        }
        for on in ["1", "true", "yes", "on", " TRUE "] {
            assert!(backends_required(Ok(on.into())), "{on:?}");
        }
        assert!(!backends_required(Err(VarError::NotPresent)));
        let unreadable = std::panic::catch_unwind(|| backends_required(Ok("maybe".into())));
        assert!(
            unreadable.is_err(),
            "a value neither yes nor no is guessed at"
        );
    }
}
