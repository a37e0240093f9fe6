//! What `fusion migrate` and `fusion sessions import` share when they write a session
//! copied from elsewhere: its creation with the metadata and times it had there
//! ([`create`], [`create_once`]), the one rule for a write whose reply was lost
//! ([`write_once`]: read back and decide, never write twice), and how a copy's expiry is
//! said when it ran out before the copy could be read ([`ran_out`]).
//!
//! Copies are written around the retry layer ([`Views::unretried`]), which would give
//! each message without an id one, and the copy would no longer be the history it copies.
//! So a lost reply is settled here rather than retried there.

use std::future::Future;
use std::time::SystemTime;

use fusion::ChatMessage;
use fusion::storage::{
    Change, ConversationStorage, Expect, Expiry, LEGACY_GENERATION, Revision, SessionMeta,
    SessionTimes,
};

use crate::store::Views;
use crate::time;

/// `err`, the error of the write `change` of a copy of a source of `source_len` messages
/// (a creation or a replacement writes them all, an extension the last of them), with
/// "cannot write the target" before it; for a message the target refused, which the
/// storage names by its place in the write ("message 2 (index 1) of the write"), its
/// place in the source too.
pub fn refused_in_copy(err: fusion::Error, source_len: usize, change: Change<'_>) -> anyhow::Error {
    let first = match change {
        Change::Append(written) => source_len - written.len(),
        _ => 0,
    };
    let context = match &err {
        fusion::Error::InvalidMessage { index, .. } => format!(
            "cannot write the target: it refused the source's message {}",
            first + index + 1
        ),
        _ => "cannot write the target".to_string(),
    };
    anyhow::Error::new(err).context(context)
}

/// How many times [`write_once`] makes a write whose reply was lost and that the read back
/// found had not applied: each such loss is a connection dropped in the instant of the
/// write, so more than a few in a row mean a storage better reported than insisted on.
const LOST_REPLY_ATTEMPTS: usize = 3;

/// What a write made by [`write_once`] does to its session's generation, which tells a
/// write that applied from another writer's change that leaves the session alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A creation ([`Revision::ABSENT`] expected): a fresh generation.
    Create,
    /// An append to the session: its generation kept, as other writers' appends keep it.
    Append,
    /// A replace of the session's history: a fresh generation.
    Replace,
}

/// Makes `write`, a write of session `id` (of `kind`) conditional on its revision being
/// `at` (a [`write_if`](ConversationStorage::write_if) with [`Expect::Exactly`], or a
/// creation for [`Revision::ABSENT`]) on [`Views::unretried`], where the session held
/// `before` at `at`, and settles a lost reply by reading the session back (unless retries
/// are off: then the lost reply is the error):
/// - it is still as it was read, at `at` holding `before`: the write did not apply (every
///   write that applies moves the revision, and changes the messages, which a backend
///   that keeps no generations has alone to show it by when the length is kept), and is
///   made again on the same condition, so it never applies twice (a creation that
///   applied already expired reads back absent too; written again, it is just as gone).
///   Asked first: a session still as read may hold `result` already, as a target holding
///   the source's history and more does before `--force` replaces it;
/// - it shows the write applied ([`applied`]: it holds `result`, what the write leaves,
///   alone or with another writer's appends after it, and a creation or a replace left
///   it a generation of its own; not `before` again, which the write changes): the
///   history read back is returned, which a caller checking the write reads in place of
///   the session (read again, it could show only what other writers did since);
/// - anything else: another writer got in first, and the write could no longer apply:
///   the [`fusion::Error::Conflict`] it would have met;
/// - it cannot be read: whether the write applied is unknown, and the error says so
///   (retryable), never the conflict, which says nothing was written.
///
/// A write made again that meets a conflict is settled the same way, by reading back: the
/// write before it may have been on its way still when its session read back unchanged,
/// and applied since (a server still running it when the connection dropped). Then the
/// session holds `result`, written once, rather than another writer's change. At most
/// [`LOST_REPLY_ATTEMPTS`] writes are made.
///
/// `Ok(None)`: the write's own reply said it applied, and nothing was read back.
///
/// What the trait cannot tell (the messages copied carry no id of this write, and a
/// session's metadata is not part of its revision):
/// - a creation that applied, its reply lost, and that another writer deleted before the
///   read back reads back absent, as one that did not apply: it is made again, and the
///   session is back, the delete undone (nothing is lost, and nothing is there twice);
/// - another writer's change that leaves the session holding `result` (another copy of
///   the same history, a creation of the same messages) reads as this write's: the write
///   is reported made, and the session holds what it would have, but for a creation, the
///   metadata and times that writer gave it;
/// - the writes whose replies were all lost may still be on their way when the error
///   says so, and one of them may apply after: the next read shows it;
/// - on a backend that keeps no generations (the trait's default `load_revision` and
///   `write_if`, one generation for every session), a write's condition is the length
///   alone, checked apart from the write: another writer's change that keeps the length
///   between the read back and a write made again is written over, as it would be by
///   any conditional write there (such a backend is not for shared writers);
/// - a replace that applied, after which another writer put back just what the session
///   held before it (appended again exactly the messages it replaced away), reads as one
///   that did not apply while another writer rewrote the session alike: the conflict.
///   Far likelier is the rewrite itself (`sessions rekey`: the same messages, a fresh
///   generation), and the conflict has the session read and decided anew, with those
///   messages seen.
pub async fn write_once<Write, Written>(
    views: &Views,
    id: &str,
    at: Revision,
    before: &[ChatMessage],
    result: &[ChatMessage],
    kind: WriteKind,
    write: Write,
) -> fusion::Result<Option<Vec<ChatMessage>>>
where
    Write: Fn() -> Written,
    Written: Future<Output = fusion::Result<u64>>,
{
    let mut attempt = 1;
    loop {
        let lost = match write().await {
            Err(err @ fusion::Error::Conflict { .. }) if attempt == 1 => return Err(err),
            // Made again after a lost reply: maybe the earlier write's own change.
            Err(err @ fusion::Error::Conflict { .. }) => err,
            Err(err) if views.retries() && err.is_retryable() => err,
            done => return done.map(|_| None),
        };
        let (held, revision) = match views.storage.load_revision(id).await {
            Ok(read) => read,
            Err(err) => return Err(unknown(views, err)),
        };
        let conflict = matches!(lost, fusion::Error::Conflict { .. });
        if revision == at && held == before && !conflict {
            if attempt == LOST_REPLY_ATTEMPTS {
                return Err(all_lost(views, lost));
            }
            attempt += 1;
            continue;
        }
        if applied(kind, at, before, &held, revision, result) {
            return Ok(Some(held));
        }
        if conflict {
            return Err(lost);
        }
        let backend = views.storage.backend_name();
        let expected = Expect::Exactly(at);
        return Err(expected.conflict(backend, id, revision.generation, Some(revision.len)));
    }
}

/// Whether session `held` at `revision`, read back after a write of `kind` conditional on
/// `at` that leaves `result`, shows that write applied: it holds `result`, alone or
/// followed by messages another writer appended since, and for a creation or a replace,
/// under a generation other than `at`'s. An append keeps the generation; under `at`'s, a
/// session holds what it held then and other writers' appends only, which may start with
/// `result` without the write (a target holding the source's history and more, which
/// `--force` replaces, and another writer's message after it). On a backend that keeps
/// no generations, every session is at [`LEGACY_GENERATION`], before a replace and after
/// it: there the messages alone tell.
///
/// A session that holds `before` again, what it held at `at`, does not show the write,
/// which changes it (`result` is never `before`), whatever its generation: a replace of a
/// target holding the source's history and more leaves it `result` and a fresh
/// generation, which another writer's rewrite of the same messages (a `sessions rekey`
/// re-encrypting them) gives it too, the replace not applied.
fn applied(
    kind: WriteKind,
    at: Revision,
    before: &[ChatMessage],
    held: &[ChatMessage],
    revision: Revision,
    result: &[ChatMessage],
) -> bool {
    let renewed = revision.generation != at.generation || at.generation == LEGACY_GENERATION;
    let changed = held != before;
    revision.exists()
        && changed
        && held.starts_with(result)
        && (kind == WriteKind::Append || renewed)
}

/// The error of a write whose reply was lost, or that was made again and refused, when
/// reading its session back to tell whether it applied failed too (`read`, its cause):
/// retryable, as the storage is failing, and never a conflict, which would say that
/// nothing was written (an import would say the session exists, when it may be its own).
fn unknown(views: &Views, read: fusion::Error) -> fusion::Error {
    fusion::Error::Backend {
        backend: views.storage.backend_name(),
        message: "the reply to a write was lost, and reading the session back to tell \
                  whether it applied failed too: whether it applied is unknown; read the \
                  session before writing it again"
            .to_string(),
        retryable: true,
        source: Some(Box::new(read)),
    }
}

/// The error of a write whose reply was lost [`LOST_REPLY_ATTEMPTS`] times, the session
/// reading back unchanged after each: says so, with the last write's error as its cause.
/// Retryable, as that error is: a storage that fails like this is failing.
fn all_lost(views: &Views, last: fusion::Error) -> fusion::Error {
    fusion::Error::Backend {
        backend: views.storage.backend_name(),
        message: format!(
            "the reply to each of {LOST_REPLY_ATTEMPTS} writes was lost, and the session read \
             back unchanged after each"
        ),
        retryable: true,
        source: Some(Box::new(last)),
    }
}

/// Creates session `id` holding exactly `messages`, with `meta` and, when known, the times
/// it had where it came from ([`create`] on [`Views::unretried`]), settling a lost reply
/// as [`write_once`] does (and returning what it does): created once, or
/// [`fusion::Error::Conflict`] if it exists.
pub async fn create_once(
    views: &Views,
    id: &str,
    meta: &SessionMeta,
    times: Option<SessionTimes>,
    messages: &[ChatMessage],
) -> fusion::Result<Option<Vec<ChatMessage>>> {
    let unretried = views.unretried.as_ref();
    let write = move || create(unretried, id, meta, times, messages);
    let absent = Revision::ABSENT;
    write_once(views, id, absent, &[], messages, WriteKind::Create, write).await
}

/// Creates session `id` holding `messages` with `meta` and, when known, the times it had
/// where it came from, in one step that fails with [`fusion::Error::Conflict`] if it
/// exists. Without metadata or times it is the conditional write every backend has, so a
/// copy without them can be written anywhere.
pub async fn create(
    storage: &dyn ConversationStorage,
    id: &str,
    meta: &SessionMeta,
    times: Option<SessionTimes>,
    messages: &[ChatMessage],
) -> fusion::Result<u64> {
    match times {
        Some(times) => {
            storage
                .create_session_with_times(id, meta, messages, times)
                .await
        }
        None if meta.is_empty() => {
            storage
                .write_if(
                    id,
                    Expect::Exactly(Revision::ABSENT),
                    Change::Replace(messages),
                )
                .await
        }
        None => storage.create_session(id, meta, messages).await,
    }
}

/// When `expiry` runs out for a copy that keeps `times`: its instant, or for an idle
/// expiry the last write `times` record plus the span. `None` for an idle expiry of a copy
/// without times, which counts from the write that creates it.
pub fn runs_out_at(expiry: Expiry, times: Option<SessionTimes>) -> Option<SystemTime> {
    match expiry {
        Expiry::At(at) => Some(at),
        Expiry::Idle(span) => times.map(|times| times.updated_at + span),
        // `Expiry` may gain kinds; one this release does not know has no instant it knows.
        _ => None,
    }
}

/// The latest reading of a storage's clock to be had without writing to it: this
/// machine's clock, or `stamped`, a time the storage stamped on a write (a session's
/// `updated_at`), when that is later: the storage's clock runs ahead of this machine's.
///
/// Only a write tells the storage's clock for sure, and a write that replaces a session,
/// or sets its metadata, cannot be taken back once it shows the session expired; so a
/// write like that is decided on this reading before it is made. It is a lower bound:
/// the storage's clock may run further ahead than its last stamp shows, and the write
/// lands a little after the reading; unless that clock runs behind this machine's, which
/// an old stamp cannot show (a stamp this command's own write just got reads it better).
pub fn clock_reading(stamped: Option<SystemTime>) -> SystemTime {
    let now = SystemTime::now();
    stamped.map_or(now, |stamped| stamped.max(now))
}

/// Why `expiry` has run out by `clock` ([`ran_out`]) for a copy that keeps `times`, if it
/// has: [`runs_out_at`] at or before `clock`. `times` is `None` for a write that is the
/// session's last (a replace, a metadata update), from which an idle expiry counts: it
/// never runs out as that write lands, and an expiry instant does once it has passed.
///
/// The one test of whether an expiry is past for every copy the commands write: against
/// this machine's clock before an import is written, against [`clock_reading`] of the
/// target before a write that would take an existing session with it.
pub fn run_out_by(
    expiry: Expiry,
    times: Option<SessionTimes>,
    clock: SystemTime,
) -> Option<String> {
    let runs_out = runs_out_at(expiry, times)?;
    (runs_out <= clock).then(|| ran_out(expiry, times))
}

/// Says that `expiry`, for a copy that keeps `times`, ran out: "its expiry (T) has
/// passed", "its idle expiry ran out at T, 1d after its last write".
pub fn ran_out(expiry: Expiry, times: Option<SessionTimes>) -> String {
    match (expiry, runs_out_at(expiry, times)) {
        (Expiry::At(at), _) => format!("its expiry ({}) has passed", time::rfc3339(at)),
        (Expiry::Idle(span), Some(at)) => format!(
            "its idle expiry ran out at {}, {} after its last write",
            time::rfc3339(at),
            time::format_span(span)
        ),
        (Expiry::Idle(span), None) => format!(
            "its idle expiry ({} after its last write) ran out",
            time::format_span(span)
        ),
        _ => "its expiry ran out".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fusion::storage::{InMemoryStorage, Intercept, Intercepted};
    use fusion_core::testkit::faults::LoseReplies;

    use super::*;
    use crate::testing::{AppliesLate, DropsNextWrite, conversation, views};

    /// An append to the session `id` holds (`held`), made through `write_once`.
    async fn append_once(
        views: &Views,
        held: &[ChatMessage],
    ) -> fusion::Result<Option<Vec<ChatMessage>>> {
        let (_, at) = views.storage.load_revision("s").await.unwrap();
        let more = [ChatMessage::user("And of Italy?")];
        let result = [held, &more].concat();
        let writer = views.unretried.as_ref();
        let more = &more;
        let write = move || writer.write_if("s", Expect::Exactly(at), Change::Append(more));
        write_once(views, "s", at, held, &result, WriteKind::Append, write).await
    }

    #[tokio::test]
    async fn a_write_whose_reply_was_lost_and_that_applied_is_not_made_again() {
        let raw = Arc::new(Intercepted(LoseReplies::new(InMemoryStorage::new())));
        let views = views(raw.clone());
        let held = conversation();
        raw.append("s", &held).await.unwrap();
        raw.0.arm();
        append_once(&views, &held).await.unwrap();
        assert_eq!(raw.0.lost(), 1, "the append applied and lost its reply");
        assert_eq!(raw.load("s").await.unwrap().len(), 3, "appended once");

        // A creation alike: read back, it holds the messages, so it is not created again
        // (which would have met the session it made, and said it exists).
        raw.0.arm();
        let meta = SessionMeta::new().title("Once");
        let created = create_once(&views, "t", &meta, None, &held).await;
        assert!(created.is_ok(), "{created:?}");
        assert_eq!(raw.0.lost(), 2);
        assert_eq!(
            raw.load("t").await.unwrap(),
            held,
            "no id given, none gained"
        );
    }

    #[tokio::test]
    async fn a_write_that_failed_before_it_applied_is_made_again_on_the_same_condition() {
        let raw = Arc::new(Intercepted(DropsNextWrite::new(InMemoryStorage::new())));
        let views = views(raw.clone());
        let held = conversation();
        raw.0.inner().append("s", &held).await.unwrap();
        append_once(&views, &held).await.unwrap();
        assert_eq!(raw.load("s").await.unwrap().len(), 3, "appended once");
    }

    #[tokio::test]
    async fn another_writers_change_met_after_a_lost_reply_is_the_conflict_the_write_met() {
        let raw = Arc::new(Intercepted(DropsNextWrite::new(InMemoryStorage::new())));
        let views = views(raw.clone());
        let held = conversation();
        raw.0.inner().append("s", &held).await.unwrap();
        let (_, at) = views.storage.load_revision("s").await.unwrap();
        let more = [ChatMessage::user("And of Italy?")];
        let result = [&held[..], &more].concat();
        let (writer, inner, more) = (views.unretried.as_ref(), raw.0.inner(), &more);
        let write = move || async move {
            // The write is dropped; meanwhile another writer appends its own message.
            let outcome = writer
                .write_if("s", Expect::Exactly(at), Change::Append(more))
                .await;
            if outcome.is_err() {
                let theirs = [ChatMessage::user("Someone else's")];
                inner.append("s", &theirs).await.unwrap();
            }
            outcome
        };
        let err = write_once(&views, "s", at, &held, &result, WriteKind::Append, write)
            .await
            .unwrap_err();
        assert!(matches!(err, fusion::Error::Conflict { .. }), "{err}");
        let stored = raw.load("s").await.unwrap();
        assert_eq!(stored.len(), 3, "theirs kept, ours not written over it");
        assert_eq!(stored[2].content, "Someone else's");
    }

    /// A creation still on its way when its reply was lost applies after the read back
    /// found nothing: the creation made again meets the session it made, which holds the
    /// messages. Created once, and said so, not refused as a session that exists.
    #[tokio::test]
    async fn a_write_that_applied_after_its_read_back_is_not_taken_for_another_writers() {
        let raw = Arc::new(Intercepted(AppliesLate::new(InMemoryStorage::new())));
        let views = views(raw.clone());
        let held = conversation();
        let now = SystemTime::now();
        let times = Some(SessionTimes::new(now, now));
        let meta = SessionMeta::new().title("Late");
        let created = create_once(&views, "s", &meta, times, &held).await;
        assert!(created.is_ok(), "{created:?}");
        assert_eq!(raw.load("s").await.unwrap(), held, "created once");
    }

    #[tokio::test]
    async fn without_retries_a_lost_reply_is_the_error() {
        let raw = Arc::new(Intercepted(LoseReplies::new(InMemoryStorage::new())));
        let layers = crate::store::Layers::new(
            fusion::layers::encryption::EncryptionLayer::without_keys(),
            false,
        );
        let views = layers.views(raw.clone());
        raw.0.arm();
        let err = create_once(&views, "s", &SessionMeta::new(), None, &conversation())
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(raw.load("s").await.unwrap().len(), 2, "yet it applied");
    }

    #[test]
    fn an_expiry_is_said_with_the_instant_it_runs_out() {
        use std::time::{Duration, UNIX_EPOCH};
        let day = Duration::from_secs(86_400);
        let written = UNIX_EPOCH + 20_000 * day;
        let times = Some(SessionTimes::new(written, written));
        assert_eq!(runs_out_at(Expiry::Idle(day), times), Some(written + day));
        assert_eq!(runs_out_at(Expiry::Idle(day), None), None);
        assert_eq!(
            ran_out(Expiry::Idle(day), times),
            "its idle expiry ran out at 2024-10-05T00:00:00Z, 1d after its last write"
        );
        assert_eq!(
            ran_out(Expiry::At(written), None),
            "its expiry (2024-10-04T00:00:00Z) has passed"
        );
        assert_eq!(
            ran_out(Expiry::Idle(day), None),
            "its idle expiry (1d after its last write) ran out"
        );
    }
}
