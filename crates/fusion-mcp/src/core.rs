//! The running state of one server: its connection (opened again after a crash), the tools
//! it last listed, and calls. [`McpServer`](crate::McpServer) is the public face of it.
//!
//! The connection sits in a slot behind an async mutex. A call takes the live connection
//! out of the slot, or, when the server has died since, waits for a new one (a restart for
//! stdio servers). The opening runs in a task of its own, which the slot holds: concurrent
//! calls after a crash join one restart rather than start one each, and a restart slower
//! than a call (`npx -y` downloading the server again) goes on after the call has ended at
//! its timeout, for a later call to use. Shutting the server down or dropping it stops the
//! opening and its process. The call itself runs without the lock.

use std::sync::{Arc, Weak};
use std::time::Duration;

use fusion_core::{Error, Result};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use rmcp::model::CallToolRequestParams;
use rmcp::service::ServiceError;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinError};
use tokio::time::Instant;

use crate::call;
use crate::checked::{INVALID_RESPONSE, INVALID_RESPONSE_CODE, MAX_LINE_BYTES, TOO_LARGE_RESPONSE};
use crate::connection::{Connection, ListChanged, Listed, error_text, list_tools};
use crate::open_failure::OpenFailure;
use crate::options::McpOptions;
use crate::relisting::Relisting;
use crate::result;
use crate::server_config::McpServerConfig;

/// How long a server being shut down may take to exit by itself before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The tools as last listed, numbered: the number grows with every listing.
#[derive(Clone, Default)]
pub struct Listing {
    /// Grows by one with every listing.
    pub revision: u64,
    /// The tools, or why each unreadable one could not be read.
    pub tools: Arc<Vec<Listed>>,
}

/// One server's connection, tools and calls.
pub struct Core {
    name: String,
    config: McpServerConfig,
    options: McpOptions,
    slot: tokio::sync::Mutex<Slot>,
    listing: watch::Sender<Listing>,
    me: Weak<Core>,
}

#[derive(Default)]
struct Slot {
    connection: Option<Arc<Connection>>,
    /// The connection being opened, while it is.
    opening: Option<Opening>,
    /// Counts the connections opened, so a late notification from an old one is ignored.
    generation: u64,
    shut_down: bool,
}

/// What an opening ends with: the connection, or why there is none.
type Opened = std::result::Result<Arc<Connection>, Arc<OpenFailure>>;

/// The outcome of an opening stopped by a shutdown (or a drop: then nothing waits for it).
fn shut_down() -> Arc<OpenFailure> {
    Arc::new(OpenFailure::from("it was shut down".to_owned()))
}

/// The outcome of an opening whose task ended without one: stopped (a shutdown, a drop),
/// or panicked, which is said as such, not as a shutdown that never was.
fn unfinished(stopped: JoinError) -> Arc<OpenFailure> {
    if !stopped.is_panic() {
        return shut_down();
    }
    let reason = "the task opening it panicked (a bug of this client)";
    Arc::new(OpenFailure::from(reason.to_owned()))
}

/// A connection being opened by a task of its own, which outlives the calls waiting for
/// it; aborting the task drops its process, which kills it.
struct Opening {
    done: Shared<BoxFuture<'static, Opened>>,
    task: AbortHandle,
}

impl Drop for Core {
    /// Stops an opening under way, with its process: the task holds the server weakly.
    fn drop(&mut self) {
        if let Some(opening) = self.slot.get_mut().opening.take() {
            opening.task.abort();
        }
    }
}

impl Core {
    /// Starts the server: opens a connection and lists its tools. Fails with
    /// [`Error::Config`] naming the server and saying why.
    pub async fn start(
        name: &str,
        config: McpServerConfig,
        options: McpOptions,
    ) -> Result<Arc<Self>> {
        let core = Arc::new_cyclic(|me| Core {
            name: name.to_owned(),
            config,
            options,
            slot: tokio::sync::Mutex::new(Slot::default()),
            listing: watch::channel(Listing::default()).0,
            me: me.clone(),
        });
        let opening = core.open(&mut *core.slot.lock().await);
        opening.await.map_err(|failure| {
            let OpenFailure { reason, stderr, .. } = &*failure;
            Error::Config(format!("MCP server `{name}`: {reason}{stderr}"))
        })?;
        Ok(core)
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the server is reached.
    pub fn config(&self) -> &McpServerConfig {
        &self.config
    }

    /// The options it runs with.
    pub fn options(&self) -> &McpOptions {
        &self.options
    }

    /// The tools as last listed. Cheap.
    pub fn listing(&self) -> Listing {
        self.listing.borrow().clone()
    }

    /// Waits until a listing newer than `revision` is published.
    pub async fn changed_since(&self, revision: u64) {
        let mut listing = self.listing.subscribe();
        let _ = listing.wait_for(|l| l.revision > revision).await;
    }

    /// The process id of a stdio server's current process.
    pub async fn process_id(&self) -> Option<u32> {
        let slot = self.slot.lock().await;
        Some(slot.connection.as_ref()?.process()?.pid())
    }

    /// Calls `mcp_name` with `args`; `tool` is the name the model knows it by. Every
    /// failure is an [`Error::Tool`] written for the model, held to the size a result may
    /// have: it quotes the server (a JSON-RPC error's message), whose text can be as long.
    pub async fn call(&self, tool: &str, mcp_name: &str, args: Value) -> Result<String> {
        let name = &self.name;
        let fail = |message: String| Error::Tool {
            tool: tool.to_owned(),
            message: result::cut(message, self.options.max_observation_bytes),
        };
        let mut params = CallToolRequestParams::new(mcp_name.to_owned());
        match args {
            Value::Object(arguments) => params = params.with_arguments(arguments),
            Value::Null => {}
            other => {
                return Err(fail(format!(
                    "the arguments must be a JSON object, not {other}"
                )));
            }
        }
        let timeout = self.options.call_timeout;
        // A restart the call waits for counts, as it does for the session's tool timeout.
        // `Duration::MAX` (no bound) is capped as tokio's `timeout` caps it, not overflowed.
        let far_future = || Instant::now() + Duration::from_secs(86_400 * 365 * 30);
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(far_future);
        let connection = self.live_connection(deadline).await.map_err(fail)?;
        // Dropping the call on timeout sends `notifications/cancelled` (`call`'s guard).
        let call = call::call_tool(connection.peer(), params);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(result)) => result::observation(tool, result, self.options.max_observation_bytes),
            Err(_) => Err(fail(format!(
                "MCP server `{name}` did not answer within {} s, so the call was cancelled; it \
                 may have done part of its work",
                timeout.as_secs_f32()
            ))),
            Ok(Err(ServiceError::McpError(error)))
                if error.code == INVALID_RESPONSE_CODE && error.message == INVALID_RESPONSE =>
            {
                Err(fail(format!(
                    "MCP server `{name}` sent an invalid response to the call (a JSON-RPC \
                     response with neither a valid result nor a valid error); it may have \
                     done part of its work"
                )))
            }
            Ok(Err(ServiceError::McpError(error)))
                if error.code == INVALID_RESPONSE_CODE && error.message == TOO_LARGE_RESPONSE =>
            {
                Err(fail(format!(
                    "MCP server `{name}` answered the call with more than {} MiB, more than \
                     this client reads, so the answer was discarded; the tool may have done its \
                     work: ask it for less at a time (part of a file, fewer results)",
                    MAX_LINE_BYTES >> 20
                )))
            }
            Ok(Err(ServiceError::McpError(error))) => Err(fail(format!(
                "MCP server `{name}` refused the call: {} (JSON-RPC error {})",
                error.message, error.code.0
            ))),
            Ok(Err(error)) if ends_session(&connection, &error) => {
                Err(fail(self.ended(&connection, &error).await))
            }
            Ok(Err(error)) => Err(fail(format!(
                "MCP server `{name}`: the call failed ({}); it may have done part of its work",
                error_text(&error)
            ))),
        }
    }

    /// Why the session of a call that failed with `error` ended: shut down meanwhile (the
    /// server is not started again, whatever [`Connection::describe_end`] would promise),
    /// or as the connection says.
    async fn ended(&self, connection: &Connection, error: &ServiceError) -> String {
        let name = &self.name;
        if self.slot.lock().await.shut_down {
            return format!(
                "MCP server `{name}` was shut down during the call; it may have done part of \
                 its work"
            );
        }
        format!(
            "MCP server `{name}` {}",
            connection.describe_end(name, error).await
        )
    }

    /// Ends the session and stops the process (or the opening under way, with its
    /// process). Later calls fail, saying so.
    pub async fn shutdown(&self) {
        let (connection, opening) = {
            let mut slot = self.slot.lock().await;
            slot.shut_down = true;
            (slot.connection.take(), slot.opening.take())
        };
        if let Some(opening) = opening {
            opening.task.abort();
            // Ends once the task has dropped what it was opening, which kills the process.
            let _ = opening.done.await;
        }
        if let Some(connection) = connection {
            connection.close(SHUTDOWN_GRACE).await;
        }
    }

    /// The current connection, opened again first if the server died since, waiting for
    /// the opening until `deadline`: one slower goes on for a later call to use.
    async fn live_connection(
        &self,
        deadline: Instant,
    ) -> std::result::Result<Arc<Connection>, String> {
        let (name, again) = (&self.name, self.again());
        let opening = {
            let mut slot = self.slot.lock().await;
            if slot.shut_down {
                return Err(format!("MCP server `{name}` has been shut down"));
            }
            if let Some(connection) = &slot.connection
                && connection.is_alive()
            {
                return Ok(connection.clone());
            }
            if slot.opening.is_none() {
                tracing::info!(server = %name, "MCP server's connection is gone; it is {again}");
            }
            self.open(&mut slot)
        };
        match tokio::time::timeout_at(deadline, opening).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(_)) if self.slot.lock().await.shut_down => {
                Err(format!("MCP server `{name}` has been shut down"))
            }
            Ok(Err(failure)) => Err(format!(
                "MCP server `{name}` could not be {again}: {}",
                failure.for_model
            )),
            Err(_) => Err(format!(
                "MCP server `{name}` is being {again} and was not back within {} s, so the \
                 call was not made; that goes on, for a later call to use (a server started \
                 with `npx -y` may be downloading)",
                self.options.call_timeout.as_secs_f32(),
            )),
        }
    }

    /// What opening the server again is called: "restarted" or "reconnected".
    fn again(&self) -> &'static str {
        match &self.config {
            McpServerConfig::Stdio(_) => "restarted",
            McpServerConfig::Http(_) => "reconnected",
        }
    }

    /// The opening of a new connection into `slot`, started first unless one is under
    /// way: the old connection is dropped (which kills its process), and a task opens the
    /// new one within the startup timeout and publishes the tools it lists.
    fn open(&self, slot: &mut Slot) -> Shared<BoxFuture<'static, Opened>> {
        // A task that ended without taking its outcome (it panicked) is not waited for.
        if let Some(opening) = &slot.opening
            && !opening.task.is_finished()
        {
            return opening.done.clone();
        }
        slot.connection = None;
        slot.generation += 1;
        let generation = slot.generation;
        let (me, name, config) = (self.me.clone(), self.name.clone(), self.config.clone());
        let (startup, on_change) = (self.options.startup_timeout, self.on_change(generation));
        let task = tokio::spawn(async move {
            let opened = Connection::open(&name, &config, startup, on_change).await;
            match me.upgrade() {
                Some(core) => core.opened(generation, opened).await,
                // Dropped meanwhile: so is the connection, and its process with it.
                None => Err(shut_down()),
            }
        });
        let abort = task.abort_handle();
        // Aborted by a shutdown, or by the drop of the server (then nothing waits), or panicked.
        let done = task
            .map(|joined| joined.unwrap_or_else(|stopped| Err(unfinished(stopped))))
            .boxed()
            .shared();
        slot.opening = Some(Opening {
            done: done.clone(),
            task: abort,
        });
        done
    }

    /// Takes what the opening of connection `generation` ended with: the new connection
    /// into the slot and its tools published, unless the server was shut down meanwhile
    /// (the connection is then dropped, with its process). A failed restart's stderr goes
    /// to the log, once: its calls tell the model the reason alone, since what a failing
    /// server prints may hold its configuration, a token.
    async fn opened(
        &self,
        generation: u64,
        opened: std::result::Result<(Connection, Vec<Listed>), OpenFailure>,
    ) -> Opened {
        let mut slot = self.slot.lock().await;
        slot.opening = None;
        match opened {
            Ok(_) if slot.shut_down => Err(shut_down()),
            Ok((connection, tools)) => {
                let connection = Arc::new(connection);
                slot.connection = Some(connection.clone());
                self.publish(tools);
                Ok(connection)
            }
            Err(failure) => {
                let (name, again, OpenFailure { reason, stderr, .. }) =
                    (&self.name, self.again(), &failure);
                if generation > 1 && !stderr.is_empty() {
                    let failed = format!("MCP server `{name}` could not be {again}: {reason}");
                    tracing::warn!(server = %name, "{failed}{stderr}");
                }
                Err(Arc::new(failure))
            }
        }
    }

    /// What `notifications/tools/list_changed` on connection `generation` does: starts a
    /// re-listing, at most one at a time.
    fn on_change(&self, generation: u64) -> ListChanged {
        let me = self.me.clone();
        let relisting = Arc::new(Relisting::default());
        Arc::new(move || {
            if me.strong_count() > 0 && relisting.start() {
                let (me, relisting) = (me.clone(), relisting.clone());
                tokio::spawn(async move {
                    loop {
                        Core::relist(&me, generation).await;
                        if !relisting.again() {
                            break;
                        }
                    }
                });
            }
        })
    }

    /// Lists the tools again after `notifications/tools/list_changed` from connection
    /// `generation` of the server `me`, which it holds weakly while the server answers: a
    /// server whose last handle is dropped meanwhile stops the listing, and its process
    /// goes with it, rather than live on for as long as the listing may take.
    async fn relist(me: &Weak<Core>, generation: u64) {
        let Some(core) = me.upgrade() else {
            return;
        };
        let connection = {
            let slot = core.slot.lock().await;
            match &slot.connection {
                Some(c) if slot.generation == generation => c.clone(),
                _ => return,
            }
        };
        let startup = core.options.startup_timeout;
        // Fails once its sender, the server's, is dropped.
        let mut published = core.listing.subscribe();
        drop(core);
        // Bounded like the first listing: a server that stops answering, or pages slowly for
        // ever, must not keep this task (and its pages) alive.
        let listing = tokio::select! {
            listing = tokio::time::timeout(startup, list_tools(connection.peer())) => listing
                .unwrap_or_else(|_| Err(format!("tools/list did not finish within {startup:?}"))),
            () = async { while published.changed().await.is_ok() {} } => return,
        };
        let Some(core) = me.upgrade() else {
            return;
        };
        core.take_relisting(generation, listing, &connection).await;
    }

    /// Publishes the tools a re-listing of connection `generation` got, or says why it got
    /// none.
    async fn take_relisting(
        &self,
        generation: u64,
        listing: std::result::Result<Vec<Listed>, String>,
        connection: &Connection,
    ) {
        match listing {
            Ok(tools) => {
                let slot = self.slot.lock().await;
                if slot.generation == generation {
                    tracing::debug!(server = %self.name, "MCP server's tools changed");
                    self.publish(tools);
                }
            }
            // A server shut down or gone meanwhile is not news: the next call starts it
            // again and lists its tools then.
            Err(e) if self.slot.lock().await.shut_down || !connection.is_alive() => {
                tracing::debug!(server = %self.name, error = %e, "listing changed tools stopped")
            }
            Err(e) => {
                tracing::warn!(server = %self.name, error = %e, "listing changed tools failed")
            }
        }
    }

    fn publish(&self, tools: Vec<Listed>) {
        self.listing.send_modify(|listing| {
            listing.revision += 1;
            listing.tools = Arc::new(tools);
        });
    }
}

/// Whether `error` means the session is over rather than that one call failed.
///
/// Over stdio, a transport that closed or could not be written is the process going (its
/// exit may not be reaped yet). Over HTTP every request is a POST of its own: one answered
/// with an error status (a 500, a 401) or whose reply stream ended early leaves the session
/// as it was, unless the session is taken as over (a 4xx in it, or a second failure in a
/// row: [`SessionClient`](crate::http_session::SessionClient)); saying otherwise would
/// promise the model a reconnection that never comes.
fn ends_session(connection: &Connection, error: &ServiceError) -> bool {
    let transport = matches!(
        error,
        ServiceError::TransportClosed | ServiceError::TransportSend(_)
    );
    !connection.is_alive() || (transport && connection.process().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic in the task opening the server is told as one, to its waiters and the
    /// next call, not as a shutdown.
    #[tokio::test]
    async fn an_opening_that_panicked_says_so() {
        let panicked = tokio::spawn(async { panic!("opening") }).await.unwrap_err();
        let failure = unfinished(panicked);
        assert!(failure.reason.contains("panicked"), "{}", failure.reason);
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let stopped = task.await.unwrap_err();
        assert_eq!(unfinished(stopped).reason, shut_down().reason);
    }
}
