//! Upkeep of the session index: which indexed ids still have a message list, and
//! removing those that do not without dropping one a concurrent writer recreated.

use fusion_core::Result;
use futures::future::try_join_all;
use redis::{Cmd, RedisResult};

use super::{RedisStorage, Request};
use crate::error::parse_redis_error;

/// How many commands `existing` sends per pipeline, so a huge index does not build one
/// enormous request and reply.
const PIPELINE_CHUNK: usize = 1000;

impl RedisStorage {
    /// Which of `ids` still have a message list, in chunks of pipelined `TYPE`s. A key
    /// of another type under the list's name (something else wrote there, and our
    /// writes to it failed) is no session either. `name` is the operation, for errors.
    ///
    /// A cluster refuses a pipeline across slots, and each session has a slot of its
    /// own, so there a chunk's commands are sent side by side instead: the cluster
    /// client multiplexes them over its connection to each node.
    pub(super) async fn existing(&self, name: &'static str, ids: &[String]) -> Result<Vec<bool>> {
        let mut exists = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PIPELINE_CHUNK) {
            let commands: Vec<Cmd> = chunk
                .iter()
                .map(|id| redis::cmd("TYPE").arg(self.keys.list(id)).clone())
                .collect();
            let types: RedisResult<Vec<String>> = if self.conn.is_cluster() {
                try_join_all(commands.iter().map(|cmd| self.run(Request::Cmd(cmd)))).await
            } else {
                let mut pipe = redis::pipe();
                for cmd in commands {
                    pipe.add_command(cmd);
                }
                self.run(Request::Pipe(&pipe)).await
            };
            let types = types.map_err(|err| parse_redis_error(err, self.op(name, None)))?;
            exists.extend(types.into_iter().map(|kind| kind == "list"));
        }
        Ok(exists)
    }

    /// Removes `gone` from the index, then puts back any that a concurrent write
    /// recreated in between; returns those. `name` is the operation, for errors.
    pub(super) async fn prune(&self, name: &'static str, gone: Vec<String>) -> Result<Vec<String>> {
        let index = self.keys.index();
        let op = self.op(name, None).on_key(index);
        self.run::<()>(Request::Cmd(redis::cmd("SREM").arg(index).arg(&gone)))
            .await
            .map_err(|err| parse_redis_error(err, op))?;
        // A writer stores before it indexes. If its list appeared after our first check,
        // it either indexes after our SREM (fine) or already did, and we see the list now.
        let again = self.existing(name, &gone).await?;
        let back: Vec<String> = gone
            .into_iter()
            .zip(again)
            .filter_map(|(id, exists)| exists.then_some(id))
            .collect();
        if !back.is_empty() {
            self.run::<()>(Request::Cmd(redis::cmd("SADD").arg(index).arg(&back)))
                .await
                .map_err(|err| parse_redis_error(err, op))?;
        }
        Ok(back)
    }
}
