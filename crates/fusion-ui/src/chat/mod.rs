//! The chat on the transcript page: the agent it talks to ([`ChatAgent`]) and the turns
//! it runs ([`Chats`]).
//!
//! A turn runs on its own task, not on the request that started it: the page watches it
//! through a server-sent event stream, and a dropped connection (a laptop lid, a proxy
//! timeout, a reload) neither stops nor loses it. Everything the turn reported is kept
//! as [`Frame`]s until the session's next turn, so a reconnecting page gets what it
//! missed. Destructive tool calls wait for the page's Approve / Deny buttons, whose
//! answer names the call its card showed (a turn's key is unique across runs of the
//! server, and each question carries a digest of its call), and Stop cancels the turn as
//! Ctrl-C does in `fusion chat`: whatever was stored stays stored, a reply cut off
//! mid-stream is not. A storage write under way when Stop is pressed is waited for
//! ([`settle`]) before the turn ends, so its end says what storage holds.
//!
//! Nothing here renders HTML: `html::chat` turns frames into fragments, `routes::chat`
//! serves them.

mod settle;
mod turn;

use settle::settle;
pub(crate) use turn::{AnswerError, Asked, Frame, Outcome, Turn};

use std::collections::HashMap;
use std::fmt;
use std::hash::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fusion::agent::{ApprovalPolicy, LlmClient, ToolRegistry};
use fusion::storage::ConversationStorage;
use tokio::sync::watch;

use crate::random::random_u64;

/// The agent the transcript page's chat talks to: its model, its tools and which of their
/// calls wait for a person.
///
/// Each turn opens the session afresh from storage with these settings, so the chat
/// continues from what is stored even when another writer (`fusion chat`, an undo on
/// this page) changed the session in between.
///
/// ```no_run
/// use std::sync::Arc;
/// use fusion::agent::{OpenAiConfig, ToolRegistry};
/// use fusion_ui::{ChatAgent, UiConfig};
///
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let llm = OpenAiConfig::from_env()?.build()?;
/// let agent = ChatAgent::new(Arc::new(llm))
///     .tools(ToolRegistry::with_file_tools(["."])?)
///     .system_prompt("You are a careful assistant.");
/// let config = UiConfig::new(UiConfig::DEFAULT_BIND).chat(agent);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ChatAgent {
    pub(crate) llm: Arc<dyn LlmClient>,
    pub(crate) tools: ToolRegistry,
    pub(crate) approval: ApprovalPolicy,
    pub(crate) system_prompt: Option<String>,
    pub(crate) max_iterations: Option<usize>,
}

impl ChatAgent {
    /// An agent on `llm`, without tools, asking before any call of a tool that may
    /// change something (the policy `fusion chat` uses on a terminal).
    pub fn new(llm: Arc<dyn LlmClient>) -> Self {
        Self {
            llm,
            tools: ToolRegistry::default(),
            approval: ApprovalPolicy::ask_destructive(),
            system_prompt: None,
            max_iterations: None,
        }
    }

    /// The tools the agent may call.
    pub fn tools(mut self, tools: ToolRegistry) -> Self {
        self.tools = tools;
        self
    }

    /// Which calls run at once, which are refused and which wait for the page's buttons.
    /// The page is the approver: one set on `policy` is replaced.
    pub fn approval(mut self, policy: ApprovalPolicy) -> Self {
        self.approval = policy;
        self
    }

    /// The system prompt of every session the chat opens.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// The most LLM requests one turn may make.
    pub fn max_iterations(mut self, iterations: usize) -> Self {
        self.max_iterations = Some(iterations);
        self
    }
}

impl fmt::Debug for ChatAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatAgent")
            .field("tools", &self.tools.names())
            .field("approval", &self.approval)
            .field("system_prompt", &self.system_prompt.is_some())
            .field("max_iterations", &self.max_iterations)
            .finish_non_exhaustive()
    }
}

/// The most sessions whose last turn is kept after it ended. A page reconnecting to a
/// turn that was dropped is told to reload, so the bound costs nothing but that.
const KEPT_TURNS: usize = 256;

/// The turns of every session: the one running or the last one, per session.
pub(crate) struct Chats {
    agent: ChatAgent,
    turns: Mutex<HashMap<String, Kept>>,
    /// Random for each process: a turn's key is this and its number, so a page made by
    /// an earlier run of the server never names a turn of this one (its numbers start at
    /// 1 again), and its Approve button cannot answer another call.
    epoch: u64,
    /// Numbers turns across sessions; after the epoch, the number makes a turn's key.
    next_number: AtomicU64,
    /// Keys the digests approval cards carry ([`Turn::digest`]): a model that chooses a
    /// call's arguments cannot make two calls share one.
    digests: RandomState,
    /// True once the server shuts down: event streams end, so the graceful shutdown,
    /// which waits for open connections, is not held up by a page watching a turn.
    closing: watch::Sender<bool>,
}

/// A session's turn, and when the session it was sent to was created.
struct Kept {
    turn: Arc<Turn>,
    /// The session's `created_at` when the turn was sent: a session deleted and made
    /// again under its id (a fork numbered as a deleted one was) is another session,
    /// which must not be offered the message the old one's turn did not send.
    born: Option<SystemTime>,
}

/// Why a turn could not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The session's previous turn still runs.
    Busy,
}

impl Chats {
    /// No turns yet, for `agent`.
    pub(crate) fn new(agent: ChatAgent) -> Self {
        Self {
            agent,
            turns: Mutex::new(HashMap::new()),
            epoch: random_u64(),
            next_number: AtomicU64::new(1),
            digests: RandomState::new(),
            closing: watch::Sender::new(false),
        }
    }

    /// Becomes true when the server shuts down.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// For the server's shutdown: ends every event stream and stops every running turn
    /// (as its Stop button would).
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
        let turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        for kept in turns.values() {
            kept.turn.stop();
        }
    }

    /// Starts a turn sending `message` to session `id` on `storage`, on its own task;
    /// `born` is the session's `created_at` as read before (see [`Chats::ended`]).
    /// Refused while the session's previous turn runs: two turns on one session at once
    /// would each be refused by storage when the other wrote first.
    pub(crate) fn start(
        &self,
        storage: Arc<dyn ConversationStorage>,
        id: &str,
        born: Option<SystemTime>,
        message: String,
    ) -> Result<Arc<Turn>, StartError> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        if turns.get(id).is_some_and(|kept| !kept.turn.is_over()) {
            return Err(StartError::Busy);
        }
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        let key = format!("{:016x}-{number}", self.epoch);
        let turn = Arc::new(Turn::new(
            number,
            key,
            id.to_string(),
            message,
            self.digests.clone(),
        ));
        if turns.len() >= KEPT_TURNS && !turns.contains_key(id) {
            forget_oldest_ended(&mut turns);
        }
        let kept = Kept {
            turn: turn.clone(),
            born,
        };
        turns.insert(id.to_string(), kept);
        tokio::spawn(turn::run(turn.clone(), self.agent.clone(), storage));
        Ok(turn)
    }

    /// The turn of session `id` whose key is `key`, while it is kept.
    pub(crate) fn turn(&self, id: &str, key: &str) -> Option<Arc<Turn>> {
        let turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let turn = &turns.get(id)?.turn;
        (turn.key == key).then(|| turn.clone())
    }

    /// The last turn of session `id`, once it has ended, while it is kept, if it was
    /// sent to the session created at `born` (its `created_at` now): not to one deleted
    /// since, whose id a new session took.
    pub(crate) fn ended(&self, id: &str, born: Option<SystemTime>) -> Option<Arc<Turn>> {
        let turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let kept = turns.get(id).filter(|kept| kept.born == born)?;
        kept.turn.is_over().then(|| kept.turn.clone())
    }

    /// The turn running on session `id`, if one is.
    pub(crate) fn running(&self, id: &str) -> Option<Arc<Turn>> {
        let turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let turn = &turns.get(id)?.turn;
        (!turn.is_over()).then(|| turn.clone())
    }
}

/// Drops the turn that ended first, if any has ended; running turns are never dropped.
fn forget_oldest_ended(turns: &mut HashMap<String, Kept>) {
    let oldest = turns
        .iter()
        .filter(|(_, kept)| kept.turn.is_over())
        .min_by_key(|(_, kept)| kept.turn.number)
        .map(|(id, _)| id.clone());
    if let Some(id) = oldest {
        turns.remove(&id);
    }
}
