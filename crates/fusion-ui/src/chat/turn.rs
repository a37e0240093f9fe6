//! One turn of the chat: what it has reported so far, the questions it waits on, and
//! [`run`], the task that drives the agent.

use std::any::Any;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use fusion::agent::{
    AgentEvent, ApprovalDecision, ApprovalRequest, SessionBuilder, Step, TaskResult,
};
use fusion::storage::ConversationStorage;
use fusion::{ChatMessage, MessageId, Role};
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, oneshot, watch};

use super::ChatAgent;
use crate::shown_error::shown_error;

/// Something a turn reported, in order. Frames are what the page's live view shows and
/// what a reconnecting page is sent again.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    /// More of the reply's text.
    Text(String),
    /// A tool call is about to run.
    ToolStarted { tool: String, arguments: String },
    /// A tool call finished (or failed).
    ToolFinished(Step),
    /// A call waits for the page's decision, or got it. `digest` names the request
    /// exactly ([`Turn::digest`]); the card's answer must carry it.
    Approval {
        question: u32,
        request: ApprovalRequest,
        digest: String,
        state: Asked,
    },
    /// The model rejected native tool calling and is asked again with the tools in the
    /// prompt.
    Notice(String),
    /// Stop was pressed while a storage write of the turn was under way: the turn ends
    /// once it has (see [`settle`](super::settle)). Not something the agent reported.
    Settling,
}

/// Where an approval question stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    Waiting,
    Answered(ApprovalDecision),
    /// The turn ended (stopped, failed) before anyone answered.
    Unanswered,
}

/// How a turn ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The model answered (or ran out of iterations): what the turn produced.
    Finished(TaskResult),
    /// Stop was pressed.
    Stopped,
    /// The session could not be opened or a request failed.
    Failed(String),
}

/// Why an answer to a question was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AnswerError {
    /// The turn never asked it.
    Unknown,
    /// It was answered already, or the turn ended first.
    Closed,
    /// The answer names another call than the one the question asks about (its card
    /// came from another turn): it is not taken, and the question still waits.
    NotShown,
}

/// A turn's state, shared by its task, the event streams of the pages watching it and
/// the approve and stop requests.
pub(crate) struct Turn {
    /// Counts turns from 1 in this process; orders them, nothing more.
    pub number: u64,
    /// Names the turn in its addresses and event ids: its number after the process's
    /// random epoch, so unique across sessions and across runs of the server.
    pub key: String,
    /// The session it runs on.
    pub session: String,
    /// What the user sent.
    pub message: String,
    inner: Mutex<Inner>,
    /// Bumped on every change; event streams wait on it.
    changed: watch::Sender<u64>,
    stop: Notify,
    digests: RandomState,
}

#[derive(Default)]
struct Inner {
    frames: Vec<Frame>,
    outcome: Option<Outcome>,
    /// Open questions: the frame showing each, and where its answer goes.
    waiting: HashMap<u32, (usize, oneshot::Sender<ApprovalDecision>)>,
    asked: u32,
    /// Calls asked about whose start has not been reported yet: the agent asks before
    /// its "started" event reaches this turn, and the question's card already shows the
    /// call, so that event is not shown again.
    asked_calls: Vec<(String, serde_json::Value)>,
    /// What the session held when the turn opened it; `None` until then (and for good
    /// when it could not be opened).
    opened: Option<Opened>,
    /// Stopped while a storage write was under way that had still not ended when the
    /// turn gave up waiting for it: it may land later.
    unsettled: bool,
}

/// What the session held when a turn opened it.
struct Opened {
    /// How many messages.
    len: usize,
    /// The ids of those that are user messages with the turn's text (most often none).
    ids: Vec<MessageId>,
}

/// A copy of what a turn reported from some frame on.
pub(crate) struct Snapshot {
    /// The frames from the one asked for.
    pub frames: Vec<Frame>,
    /// How many frames the turn has reported in all.
    pub total: usize,
    /// How it ended, once it has.
    pub outcome: Option<Outcome>,
}

impl Turn {
    /// Turn `number`, known as `key`, sending `message` to `session`; `digests` keys
    /// the digests of the calls it asks about.
    pub(crate) fn new(
        number: u64,
        key: String,
        session: String,
        message: String,
        digests: RandomState,
    ) -> Self {
        Self {
            number,
            key,
            session,
            message,
            inner: Mutex::new(Inner::default()),
            changed: watch::Sender::new(0),
            stop: Notify::new(),
            digests,
        }
    }

    /// A digest of `request` whole (tool, call id, every argument), keyed by a secret of
    /// this process: the approval card carries it, and an answer is taken only for the
    /// call it names, so what is approved is what the card showed.
    pub(crate) fn digest(&self, request: &ApprovalRequest) -> String {
        let mut hasher = self.digests.build_hasher();
        request.tool.hash(&mut hasher);
        request.call_id.hash(&mut hasher);
        request.arguments.to_string().hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        self.changed.send_modify(|version| *version += 1);
    }

    /// How the turn ended; `None` while it runs.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.lock().outcome.clone()
    }

    /// Whether the turn has ended.
    pub(crate) fn is_over(&self) -> bool {
        self.lock().outcome.is_some()
    }

    /// Resolves at the turn's next change (a new frame, an answer, the end).
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The frames from index `from` on (none when `from` is past the end), the total and
    /// the outcome, read together.
    pub(crate) fn snapshot(&self, from: usize) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            frames: inner.frames.get(from..).unwrap_or_default().to_vec(),
            total: inner.frames.len(),
            outcome: inner.outcome.clone(),
        }
    }

    pub(super) fn push(&self, frame: Frame) {
        {
            let mut inner = self.lock();
            if let Frame::ToolStarted { tool, arguments } = &frame
                && let Ok(arguments) = serde_json::from_str::<serde_json::Value>(arguments)
                && let Some(at) = inner
                    .asked_calls
                    .iter()
                    .position(|asked| asked.0 == *tool && asked.1 == arguments)
            {
                inner.asked_calls.remove(at);
                return;
            }
            inner.frames.push(frame);
        }
        self.touch();
    }

    /// Asks the page about `request`; the receiver gets the decision.
    fn ask(&self, request: ApprovalRequest) -> oneshot::Receiver<ApprovalDecision> {
        let (answer, decision) = oneshot::channel();
        {
            let mut inner = self.lock();
            inner.asked += 1;
            let question = inner.asked;
            inner
                .asked_calls
                .push((request.tool.clone(), request.arguments.clone()));
            let at = inner.frames.len();
            let digest = self.digest(&request);
            inner.frames.push(Frame::Approval {
                question,
                request,
                digest,
                state: Asked::Waiting,
            });
            inner.waiting.insert(question, (at, answer));
        }
        self.touch();
        decision
    }

    /// Answers question `question`, shown as the call `call_id` whose digest is
    /// `digest`, with `decision`, returning the question's frame as it now stands. An
    /// answer naming another call than the question's is refused and changes nothing.
    pub(crate) fn answer(
        &self,
        question: u32,
        call_id: &str,
        digest: &str,
        decision: ApprovalDecision,
    ) -> Result<Frame, (AnswerError, Option<Box<Frame>>)> {
        let mut inner = self.lock();
        if let Some(&(at, _)) = inner.waiting.get(&question) {
            let shown = matches!(
                &inner.frames[at],
                Frame::Approval { request, digest: d, .. } if request.call_id == call_id && d == digest
            );
            if !shown {
                return Err((AnswerError::NotShown, None));
            }
        }
        let Some((at, answer)) = inner.waiting.remove(&question) else {
            let shown = inner.frames.iter().find(
                |frame| matches!(frame, Frame::Approval { question: q, .. } if *q == question),
            );
            return Err(match shown {
                Some(frame) => (AnswerError::Closed, Some(Box::new(frame.clone()))),
                None => (AnswerError::Unknown, None),
            });
        };
        // The turn may have been stopped since; then nobody waits for the answer.
        let taken = answer.send(decision).is_ok();
        if let Frame::Approval { state, .. } = &mut inner.frames[at] {
            *state = if taken {
                Asked::Answered(decision)
            } else {
                Asked::Unanswered
            };
        }
        let frame = inner.frames[at].clone();
        drop(inner);
        self.touch();
        if taken {
            Ok(frame)
        } else {
            Err((AnswerError::Closed, Some(Box::new(frame))))
        }
    }

    /// Records that the turn opened its session holding `history`.
    fn opened(&self, history: &[ChatMessage]) {
        let ids = history
            .iter()
            .filter(|message| self.is_the_message(message))
            .filter_map(|message| message.id.clone())
            .collect();
        self.lock().opened = Some(Opened {
            len: history.len(),
            ids,
        });
    }

    /// Whether `message` is one the user wrote with this turn's text.
    fn is_the_message(&self, message: &ChatMessage) -> bool {
        message.role == Role::User && message.content == self.message
    }

    /// Whether the turn, ended as `outcome`, left the user's message unstored, judged by
    /// `stored`, the session's messages as read since it ended (`None` when they could
    /// not be read). A finished turn, and one that reported anything of the agent's (the
    /// model is asked only once the message is stored), stored
    /// it; one that never opened its session did not; otherwise the message must be
    /// stored now under an id no message with its text had when the session was opened
    /// (the agent gives it a new one). Not by its place: the session may hold fewer
    /// messages since (another writer deleted or rewrote it, and the turn stored the
    /// message anew; a summary shortens nothing, it appends a record).
    /// A message stored without an id (by a storage of the caller's own that drops them)
    /// is looked for after the ones held at the opening, as nothing better is known.
    ///
    /// The live panel was the only place still showing the text: without this, a turn
    /// stopped at once or failing before the store (the session cannot be opened) lost
    /// the user's message from the page.
    pub(crate) fn message_unsent(&self, outcome: &Outcome, stored: Option<&[ChatMessage]>) -> bool {
        let inner = self.lock();
        let reported = inner
            .frames
            .iter()
            .any(|frame| !matches!(frame, Frame::Settling));
        if matches!(outcome, Outcome::Finished(_)) || reported {
            return false;
        }
        let Some(opened) = &inner.opened else {
            return true;
        };
        let stored = stored.unwrap_or_default();
        !stored.iter().enumerate().any(|(at, message)| {
            self.is_the_message(message)
                && match &message.id {
                    Some(id) => !opened.ids.contains(id),
                    None => at >= opened.len,
                }
        })
    }

    /// Whether the turn read its session (so its message may be stored).
    pub(crate) fn opened_session(&self) -> bool {
        self.lock().opened.is_some()
    }

    /// Records that the turn stopped without its storage writes having ended.
    pub(super) fn gave_up_settling(&self) {
        self.lock().unsettled = true;
    }

    /// Whether the turn ended with a storage write still under way, which may land
    /// later: then that its message is not stored now does not mean it never will be.
    pub(crate) fn unsettled(&self) -> bool {
        self.lock().unsettled
    }

    /// Asks the turn to stop; `false` when it had already ended.
    pub(crate) fn stop(&self) -> bool {
        if self.is_over() {
            return false;
        }
        // A stored permit: the task sees it even if it is not waiting at this instant.
        self.stop.notify_one();
        true
    }

    fn finish(&self, outcome: Outcome) {
        {
            let mut inner = self.lock();
            let open: Vec<usize> = inner.waiting.drain().map(|(_, (at, _))| at).collect();
            for at in open {
                if let Frame::Approval { state, .. } = &mut inner.frames[at] {
                    *state = Asked::Unanswered;
                }
            }
            inner.outcome = Some(outcome);
        }
        self.touch();
    }
}

/// Runs `turn` to its end: opens the session from storage with `agent`'s settings, sends
/// the message and records every event, until the reply is done, Stop is pressed or
/// something fails.
///
/// A panic in the model's client or the storage (the agent catches its tools' and its
/// approver's, not theirs) fails the turn like an error. Uncaught, it ended this task
/// without an outcome, so the turn counted as running for as long as the process lived:
/// its session could not be sent to, undone or deleted, Stop changed nothing, and every
/// page watching it waited for an end that never came.
pub(crate) async fn run(turn: Arc<Turn>, agent: ChatAgent, storage: Arc<dyn ConversationStorage>) {
    let outcome = AssertUnwindSafe(drive(&turn, agent, storage))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Outcome::Failed(format!("the turn crashed ({})", panicked(&*panic)))
        });
    turn.finish(outcome);
}

/// What a panic said, when it said it with a string (as `panic!` and `unwrap` do), with
/// the secrets and paths it may quote hidden ([`shown_error`](crate::shown_error)): it
/// is shown on the turn's page.
fn panicked(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    match text {
        Some(text) => format!("panicked: {}", shown_error(text)),
        None => "panicked".to_string(),
    }
}

async fn drive(
    turn: &Arc<Turn>,
    agent: ChatAgent,
    storage: Arc<dyn ConversationStorage>,
) -> Outcome {
    // Weak: a question outliving the turn must not keep it alive.
    let asking = Arc::downgrade(turn);
    let approval = agent
        .approval
        .ask_with(move |request| ask_the_page(asking.clone(), request));
    let mut builder = SessionBuilder::new(turn.session.clone())
        .llm(agent.llm)
        .storage(storage)
        .tools(agent.tools)
        .approval(approval);
    if let Some(prompt) = agent.system_prompt {
        builder = builder.system_prompt(prompt);
    }
    if let Some(iterations) = agent.max_iterations {
        builder = builder.max_iterations(iterations);
    }
    let mut session = match builder.build().await {
        Ok(session) => session,
        Err(err) => {
            return Outcome::Failed(shown_error(&format!("cannot open the session: {err}")));
        }
    };
    turn.opened(session.history());
    let mut events = session.send_message_stream(&turn.message);
    let outcome = loop {
        tokio::select! {
            biased;
            // Dropping the stream (below) cancels the turn, as Ctrl-C in `fusion chat`:
            // what was stored stays stored, a reply cut off mid-stream is not stored.
            () = turn.stop.notified() => break Outcome::Stopped,
            event = events.next() => match event {
                Some(Ok(AgentEvent::Finished(result))) => break Outcome::Finished(result),
                Some(Ok(event)) => {
                    if let Some(frame) = frame_of(event) {
                        turn.push(frame);
                    }
                }
                Some(Err(err)) => break Outcome::Failed(shown_error(&err.to_string())),
                None => break Outcome::Failed("the turn ended without a result".into()),
            },
        }
    };
    drop(events);
    if matches!(outcome, Outcome::Stopped) {
        super::settle(turn, &mut session).await;
    }
    outcome
}

/// The frame showing `event`, for the events the page shows.
fn frame_of(event: AgentEvent) -> Option<Frame> {
    match event {
        AgentEvent::TextDelta { text, .. } => Some(Frame::Text(text)),
        AgentEvent::ToolCallStarted {
            tool, arguments, ..
        } => Some(Frame::ToolStarted { tool, arguments }),
        AgentEvent::ToolCallFinished(step) => Some(Frame::ToolFinished(step)),
        AgentEvent::SwitchedToTextReact { reason } => Some(Frame::Notice(format!(
            "The model refused native tool calls ({reason}); asking again with the tools \
             described in the prompt."
        ))),
        _ => None,
    }
}

/// Shows `request` on the page and waits for its buttons. No answer (the turn was
/// stopped, the turn is gone) is no approval.
async fn ask_the_page(turn: Weak<Turn>, request: ApprovalRequest) -> ApprovalDecision {
    let Some(decision) = turn.upgrade().map(|turn| turn.ask(request)) else {
        return ApprovalDecision::Deny;
    };
    decision.await.unwrap_or(ApprovalDecision::Deny)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusion::agent::ToolEffects;

    fn request() -> ApprovalRequest {
        ApprovalRequest {
            tool: "delete_file".into(),
            call_id: "c1".into(),
            arguments: serde_json::json!({"path": "a.txt"}),
            effects: ToolEffects::default(),
        }
    }

    fn turn() -> Turn {
        Turn::new(1, "k-1".into(), "s".into(), "hi".into(), RandomState::new())
    }

    #[tokio::test]
    async fn an_answer_reaches_the_asker_once_and_is_shown() {
        let turn = turn();
        let decision = turn.ask(request());
        let digest = turn.digest(&request());
        let frame = turn
            .answer(1, "c1", &digest, ApprovalDecision::Approve)
            .unwrap();
        assert!(matches!(
            frame,
            Frame::Approval {
                state: Asked::Answered(ApprovalDecision::Approve),
                ..
            }
        ));
        assert_eq!(decision.await.unwrap(), ApprovalDecision::Approve);
        let (again, shown) = turn
            .answer(1, "c1", &digest, ApprovalDecision::Deny)
            .unwrap_err();
        assert_eq!(again, AnswerError::Closed);
        assert!(shown.is_some());
        assert_eq!(
            turn.answer(7, "c1", &digest, ApprovalDecision::Deny)
                .unwrap_err()
                .0,
            AnswerError::Unknown
        );
    }

    #[tokio::test]
    async fn an_answer_naming_another_call_is_refused_and_the_question_still_waits() {
        let turn = turn();
        let mut decision = turn.ask(request());
        let other = ApprovalRequest {
            arguments: serde_json::json!({"path": "b.txt"}),
            ..request()
        };
        let (digest, wrong) = (turn.digest(&request()), turn.digest(&other));
        assert_ne!(digest, wrong);
        for (call, digest) in [("c1", wrong.as_str()), ("c2", digest.as_str())] {
            let (refused, _) = turn
                .answer(1, call, digest, ApprovalDecision::Approve)
                .unwrap_err();
            assert_eq!(refused, AnswerError::NotShown, "{call} {digest}");
        }
        assert!(decision.try_recv().is_err(), "no answer reached the agent");
        turn.answer(1, "c1", &digest, ApprovalDecision::Deny)
            .unwrap();
        assert_eq!(decision.await.unwrap(), ApprovalDecision::Deny);
    }

    #[tokio::test]
    async fn the_end_closes_open_questions_and_stop_is_refused_after_it() {
        let turn = turn();
        let decision = turn.ask(request());
        assert!(turn.stop());
        turn.finish(Outcome::Stopped);
        assert!(
            decision.await.is_err(),
            "the asker hears no answer: a denial"
        );
        let snapshot = turn.snapshot(0);
        assert!(matches!(
            snapshot.frames[0],
            Frame::Approval {
                state: Asked::Unanswered,
                ..
            }
        ));
        assert!(matches!(snapshot.outcome, Some(Outcome::Stopped)));
        assert!(!turn.stop());
        assert_eq!(turn.snapshot(5).frames.len(), 0);
    }

    #[test]
    fn a_call_asked_about_is_not_announced_again_but_the_next_one_is() {
        let turn = turn();
        let _decision = turn.ask(request());
        let started = || Frame::ToolStarted {
            tool: "delete_file".into(),
            arguments: r#"{ "path": "a.txt" }"#.into(),
        };
        turn.push(started());
        assert_eq!(turn.snapshot(0).total, 1, "the card shows the call");
        turn.push(started());
        assert_eq!(
            turn.snapshot(0).total,
            2,
            "a second call of the same is shown"
        );
    }
}
