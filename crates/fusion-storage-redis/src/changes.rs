//! Changes to sessions as they happen, from any process: what the write scripts publish
//! when [`RedisOptions::publish_changes`](crate::RedisOptions::publish_changes) is on,
//! read by [`RedisStorage::subscribe_changes`](crate::RedisStorage::subscribe_changes).
//!
//! Redis pub/sub delivers to whoever is subscribed when a message is published and keeps
//! nothing: these are notices, not a log. A subscriber that connects late, or whose
//! connection drops (the stream then ends), misses the changes made meanwhile, so one
//! that caches sessions reloads them after subscribing again. The message format is in
//! `scripts/notify.rs`.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use fusion_core::{Error, Result, SessionId};
use futures::Stream;
use redis::aio::PubSubStream;

use crate::error::BACKEND;

/// One change to a session, published by the write that made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SessionChange {
    /// The session changed: always a valid [`SessionId`], since a message whose id is
    /// not one is no change a write script published.
    pub session_id: String,
    /// What happened to it.
    pub kind: ChangeKind,
    /// Its generation after the change (see `fusion_core::Revision`); 0 once it is gone.
    pub generation: u64,
    /// How many messages it holds after the change; 0 once it is gone.
    pub len: usize,
}

/// What a [`SessionChange`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// The session was created (by an append, a save or `create_session`), or created
    /// anew after it expired.
    Created,
    /// Messages were appended.
    Appended,
    /// Its history was replaced (`save`, or a conditional replace).
    Replaced,
    /// Its last messages were removed (`truncate` to a length above 0).
    Truncated,
    /// Its metadata changed (`update_session`).
    Updated,
    /// It was deleted (`delete`, `save` of nothing, `truncate` to 0).
    Deleted,
    /// It was removed because its expiry had passed: by `purge_expired`, or by a write
    /// that met it expired; or a write gave it an expiry already past, so Redis dropped
    /// it at once (this follows that write's own change). A session whose keys Redis
    /// dropped at their expiry is reported when a purge removes what is left of it, and
    /// not at all if a write creates it again first (that write reports `Created`). On a
    /// cluster a purge that failed may report one twice (see the crate's README).
    Expired,
}

impl ChangeKind {
    /// The word the scripts publish for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Appended => "appended",
            ChangeKind::Replaced => "replaced",
            ChangeKind::Truncated => "truncated",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Expired => "expired",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        [
            ChangeKind::Created,
            ChangeKind::Appended,
            ChangeKind::Replaced,
            ChangeKind::Truncated,
            ChangeKind::Updated,
            ChangeKind::Deleted,
            ChangeKind::Expired,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == word)
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SessionChange {
    /// Reads a published `KIND GENERATION LENGTH ID`; `None` for anything else.
    ///
    /// The scripts publish only ids a storage accepted, so an id that breaks the rule
    /// ([`SessionId::validate`]) came from someone else's `PUBLISH`. It is refused here,
    /// for every subscriber: a line feed in it would read as a second change to a line
    /// reader, an escape sequence would reach a terminal, and `../` a path.
    fn parse(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut words = text.splitn(4, ' ');
        let kind = ChangeKind::parse(words.next()?)?;
        let generation = words.next()?.parse().ok()?;
        let len = words.next()?.parse().ok()?;
        let session_id = words
            .next()
            .filter(|id| SessionId::validate(id).is_ok())?
            .to_string();
        Some(Self {
            session_id,
            kind,
            generation,
            len,
        })
    }
}

/// The changes published on one storage's channel, each session's in the order they
/// were made: a [`Stream`] of [`SessionChange`]s from
/// [`RedisStorage::subscribe_changes`](crate::RedisStorage::subscribe_changes).
///
/// It ends when the connection to the server drops; subscribe again, and reload what
/// you keep, since changes made while no one listened are not replayed. A message on the
/// channel that no write script published (someone else's `PUBLISH`), one naming a
/// session id that is not a valid [`SessionId`] included, is an error item showing the
/// message escaped and shortened, and the stream goes on after it.
pub struct SessionChanges {
    messages: PubSubStream,
    channel: String,
    url: Arc<str>,
}

impl SessionChanges {
    pub(crate) fn new(messages: PubSubStream, channel: String, url: Arc<str>) -> Self {
        Self {
            messages,
            channel,
            url,
        }
    }

    /// The channel subscribed to: `PREFIX:changes`.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn read(&self, payload: &[u8]) -> Result<SessionChange> {
        SessionChange::parse(payload).ok_or_else(|| {
            let shown = String::from_utf8_lossy(&payload[..payload.len().min(80)]);
            Error::Backend {
                backend: BACKEND,
                message: format!(
                    "subscribe_changes on {}: channel {} carried a message that is not a \
                     session change: {shown:?}",
                    self.url, self.channel
                ),
                retryable: false,
                source: None,
            }
        })
    }
}

impl Stream for SessionChanges {
    type Item = Result<SessionChange>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.messages).poll_next(cx);
        polled.map(|message| message.map(|message| self.read(message.get_payload_bytes())))
    }
}

impl fmt::Debug for SessionChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionChanges")
            .field("url", &self.url)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_changes_are_read_back() {
        let change = SessionChange::parse(b"appended 1733370000123456 12 user-1").unwrap();
        assert_eq!(
            change,
            SessionChange {
                session_id: "user-1".into(),
                kind: ChangeKind::Appended,
                generation: 1_733_370_000_123_456,
                len: 12,
            }
        );
        for kind in [
            "created",
            "replaced",
            "truncated",
            "updated",
            "deleted",
            "expired",
        ] {
            let change = SessionChange::parse(format!("{kind} 0 0 a:b@c").as_bytes()).unwrap();
            assert_eq!(change.kind.as_str(), kind);
            assert_eq!(change.session_id, "a:b@c");
        }
        // The longest id a storage accepts is a change too.
        let longest = "x".repeat(SessionId::MAX_LEN);
        let change = SessionChange::parse(format!("deleted 0 0 {longest}").as_bytes()).unwrap();
        assert_eq!(change.session_id, longest);
    }

    #[test]
    fn anything_else_is_not_a_change() {
        for bad in [
            &b""[..],
            b"appended",
            b"appended 1 2",
            b"appended 1 2 ",
            b"grew 1 2 s",
            b"appended x 2 s",
            b"appended 1 -2 s",
            b"appended 1 2 s\xff",
            b"appended  1 2 s",
        ] {
            assert_eq!(SessionChange::parse(bad), None, "{bad:?}");
        }
    }

    /// A change naming an id no storage accepts is someone else's message: a line feed
    /// in it would forge a second change for a reader of lines, an escape sequence
    /// would reach a terminal, and `/` or a leading `.` would name a path.
    #[test]
    fn a_change_of_an_invalid_session_id_is_not_a_change() {
        let too_long = format!("appended 1 2 {}", "x".repeat(SessionId::MAX_LEN + 1));
        for bad in [
            "appended 1 2 x\ncreated 9 9 forged",
            "appended 1 2 x\r",
            "appended 1 2 \u{1b}]0;title\u{7}",
            "appended 1 2 \u{1b}[2J",
            "appended 1 2 two words",
            "appended 1 2 ../etc",
            "appended 1 2 a/b",
            "appended 1 2 .hidden",
            "appended 1 2 a\0b",
            "appended 1 2 {tag}",
            "appended 1 2 caf\u{e9}",
            &too_long,
        ] {
            assert_eq!(SessionChange::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
