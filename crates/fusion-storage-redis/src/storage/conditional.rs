//! The conditional writes of issue #13 on Redis: `load_revision` and `write_if`.
//!
//! A session's generation is the `gen` field of its meta hash, which shares the list's
//! hash tag, TTL and lifetime: the scripts set it whenever they create, replace or
//! shorten a session, and `DEL` removes it with the list. A session stored before
//! generations existed has a list but no `gen`, and reads as [`LEGACY_GENERATION`] until
//! its first rewrite. `write_if` is the unconditional write's own script with an
//! expectation, so the check and the write are one atomic step on the server: for
//! [`Expect::UnwrittenSince`] the read of `updated_at` too, so a metadata update
//! (`update_session`, a script on the same keys) lands before the check or after the
//! write, never between.

use fusion_core::{Change, ChatMessage, Expect, LEGACY_GENERATION, Result, Revision};

use super::{RedisStorage, decode};
use crate::error::{BACKEND, parse_redis_error};
use crate::scripts::Outcome;
use crate::stored::{generation, is_past};

impl RedisStorage {
    /// The messages of `id` and its revision, read in one `MULTI` (`snapshot`) so they
    /// belong to the same instant, with the server's `TIME`: a session whose expiry has passed is
    /// absent. `id` is already validated.
    pub(super) async fn read_revision(&self, id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        let (list, meta) = (self.keys.list(id), self.keys.meta(id));
        type Read = (Vec<Vec<u8>>, (Option<String>, Option<String>), (i64, i64));
        let (raw, (stored, expires_at), time): Read = self
            .snapshot(&list, &meta, &["gen", "expires_at"])
            .await
            .map_err(|err| {
                let op = self.op("load_revision", Some(id));
                parse_redis_error(err, op.on_keys(&[&list, &meta]))
            })?;
        if is_past(expires_at.as_deref(), time) {
            return Ok((Vec::new(), Revision::ABSENT));
        }
        let history = decode(id, &list, &raw)?;
        // Without a list there is no session, whatever a leftover meta hash says; the
        // scripts read it the same way.
        let generation = match (history.is_empty(), stored) {
            (true, _) => 0,
            (false, None) => LEGACY_GENERATION,
            (false, Some(text)) => generation(&self.keys, id, &text)?,
        };
        let len = history.len();
        Ok((history, Revision { generation, len }))
    }

    /// Applies `change` if `id` meets `expected`; returns the generation after. `id`
    /// and the messages are already checked. A change that leaves the session empty also
    /// takes it out of the indexes: in the script on one server, after it on a cluster.
    pub(super) async fn write_conditionally(
        &self,
        id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let expect = Some(expected);
        let outcome = match change {
            Change::Append(messages) => {
                self.write("conditional append", id, "append", expect, messages, &[])
                    .await?
            }
            Change::Replace([]) | Change::Rewrite([]) => {
                self.trim("conditional replace", id, 0, expect).await?
            }
            Change::Replace(history) => {
                self.write("conditional replace", id, "replace", expect, history, &[])
                    .await?
            }
            Change::Rewrite(history) => {
                self.write("conditional rewrite", id, "rewrite", expect, history, &[])
                    .await?
            }
            Change::Truncate(len) => self.trim("conditional truncate", id, len, expect).await?,
        };
        let Outcome {
            applied,
            generation: stored,
            len,
            ..
        } = outcome;
        let generation = generation(&self.keys, id, &stored)?;
        if !applied {
            return Err(expected.conflict(BACKEND, id, generation, Some(len)));
        }
        Ok(generation)
    }
}
