//! `fusion chat`: the interactive REPL over one persistent agent session.
//!
//! The model's reply is printed as it is written (streamed; `--no-stream` for servers that
//! cannot, and a server that rejects streaming is asked again without it). On a terminal
//! it uses rustyline (line editing, history), shows a spinner until the model's first
//! words, and Ctrl-C stops the current reply and keeps the session; when stdin is a pipe
//! it reads plain lines and prints only answers and tool lines, so a conversation can be
//! scripted (`printf 'hi\n/history\n' | fusion chat`). In a script the
//! first failing turn ends the run with a non-zero exit; on a terminal it is reported and
//! the conversation goes on. When another writer (a second chat, an import, a delete)
//! changed the session under a turn or a command, storage refuses the write and the
//! error says so, with how many messages the session holds after rereading storage.
//! SIGTERM and SIGHUP, on a terminal or in a script, stop the turn as Ctrl-C does, then
//! end the chat: its MCP servers are shut down as at `/exit`, and the exit status is 143
//! or 129 ([`signals`]).
//!
//! This file is the loop and one turn; [`commands`] holds the slash commands, [`events`]
//! what is shown while a turn runs, [`input`] where lines come from, [`signals`] what
//! stops a turn from outside.

mod approve;
mod commands;
mod events;
mod input;
mod mcp;
mod signals;

pub use approve::ApproveMode;
pub use mcp::{McpArgs, parse_tool_timeout};

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use fusion::SessionId;
use fusion::agent::{
    AgentEvent, AgentSession, ApprovalPolicy, OpenAiConfig, SessionBuilder, TitlePolicy,
};
use fusion::api::session;
use fusion::storage::{ConversationStorage, Expiry, SessionMeta, StorageType};
use futures::StreamExt;

use tokio::sync::mpsc;

use self::approve::{Question, answer, next_question};
use self::commands::Typed;
use self::events::TurnView;
use self::input::Input;
use self::signals::{Ending, Endings, Stop};
use crate::store::Store;
use crate::{ChatArgs, render};

/// Printed instead of starting when the environment names no LLM.
const NO_LLM: &str = "\
fusion: error: no LLM configured; fusion chat talks to any OpenAI-compatible endpoint:
  OpenAI:        export OPENAI_API_KEY=sk-...            (model: FUSION_MODEL, default gpt-4o-mini)
  local Ollama:  ollama pull llama3.1
                 export OPENAI_BASE_URL=http://localhost:11434/v1 FUSION_MODEL=llama3.1
  (vLLM, llama.cpp server and LM Studio work the same way with their /v1 URL)";

/// The session and what the commands need besides it.
struct Chat {
    session: AgentSession,
    /// The storage the session runs on; `/sessions` lists the others there.
    storage: Arc<dyn ConversationStorage>,
    /// What `storage` was opened from, for messages.
    storage_type: StorageType,
    id: String,
    interactive: bool,
    /// Which calls ask first, for `/tools`.
    approval: ApprovalPolicy,
    /// Where the agent's questions arrive, when the policy asks.
    questions: Option<mpsc::UnboundedReceiver<Question>>,
}

/// What the loop does after a line.
enum Flow {
    Continue,
    Exit,
    /// A signal stopped the line's turn or command, and ends the chat.
    End(Ending),
}

/// How a new session is titled: after its first message, except on an encrypting store,
/// where the title (metadata, stored in clear for listing) would leak the message's words.
fn title_policy(store: &Store) -> TitlePolicy {
    if store.encrypts() {
        TitlePolicy::AsGiven
    } else {
        TitlePolicy::FirstUserMessage
    }
}

/// Runs `fusion chat`.
pub async fn run(store: Store, args: ChatArgs) -> Result<ExitCode> {
    // The client would default to OpenAI's endpoint without a key, which can only fail on
    // the first message, so say how to configure one up front instead.
    if !session::llm_configured() {
        render::note(NO_LLM);
        return Ok(ExitCode::FAILURE);
    }
    SessionId::validate(&args.session)?;
    // Checked before the storage is opened, so a bad flag creates no SQLite file or
    // PostgreSQL schema.
    let new_meta = new_session_meta(&args)?;
    let storage = store.open().await?;
    let storage_type = store.kind().clone();
    if let Some(owner) = &args.owner {
        check_owner(storage.as_ref(), &args.session, owner).await?;
    }
    // `--no-stream` turns streaming off; without it, `FUSION_STREAM` decides (default on).
    let mut config = OpenAiConfig::from_env()?;
    if args.no_stream {
        config = config.stream(false);
    }
    let llm = config.build()?;
    let interactive = std::io::stdin().is_terminal();
    let (approval, questions) = approve::policy(args.approve, interactive)?;
    // From here SIGTERM and SIGHUP are answered, not fatal: the servers started next must
    // be stopped. One arriving while they start drops the start, which kills what it
    // started; one arriving while the session opens waits for the loop (the opening may be
    // writing the new session).
    let mut endings = Endings::listen()?;
    let started = tokio::select! {
        biased;
        ending = endings.next() => Err(ending),
        started = mcp::tools(&args) => Ok(started),
    };
    let (tools, mcp_servers) = match started {
        Ok(started) => started?,
        Err(ending) => signals::exit(ending),
    };
    // A new session is titled after its first message unless --title names it (or the
    // store encrypts), so `fusion sessions list` shows what each conversation is about.
    let mut builder = SessionBuilder::new(args.session.clone())
        .llm(Arc::new(llm))
        .storage(storage.clone())
        .tags(new_meta.tags)
        .title_policy(title_policy(&store))
        .approval(approval.clone())
        .tools(tools);
    if let Some(owner) = new_meta.owner {
        builder = builder.owner(owner);
    }
    if let Some(title) = new_meta.title {
        builder = builder.title(title);
    }
    let expiry = new_meta.expiry;
    if let Some(expiry) = expiry {
        builder = builder.expiry(expiry);
    }
    if let Some(prompt) = &args.system {
        builder = builder.system_prompt(prompt.clone());
    }
    if let Some(iterations) = args.max_iterations {
        builder = builder.max_iterations(iterations as usize);
    }
    if let Some(timeout) = args.tool_timeout {
        builder = builder.tool_timeout(timeout);
    }
    if let Some(bytes) = args.max_tool_output {
        builder = builder.max_tool_output_bytes(bytes);
    }
    let session = builder
        .build()
        .await
        .with_context(|| format!("cannot open session \"{}\"", args.session))?;

    if expiry.is_some() && session.message_count() > 0 {
        // Like --title and --tag, the expiry is for a session this chat creates; saying so
        // keeps the user from believing a resumed session now expires.
        render::note(format_args!(
            "note: session {} already exists, so it keeps its expiry; \
             `fusion sessions expire` changes it",
            args.session
        ));
    }
    let mut chat = Chat {
        session,
        storage,
        storage_type,
        id: args.session,
        interactive,
        approval,
        questions,
    };
    let mut input = if interactive {
        let model = std::env::var("FUSION_MODEL").map_or(String::new(), |m| format!(", model {m}"));
        render::say(format_args!(
            "fusion chat: session {} on {}{model} ({})",
            chat.id,
            chat.storage_type,
            render::plural(chat.session.message_count(), "message"),
        ))?;
        render::say("type /help for commands, /exit to leave")?;
        Input::editor()?
    } else {
        Input::piped()
    };

    let ended = chat.converse(&mut input, &mut endings).await;
    input.save_history();
    // A chat that ended while a read was open (a signal, or an error while a question
    // waited: its line on a stdout whose reader went away) leaves that read blocked on its
    // thread until a line comes, which the runtime's shutdown at the end of `main` would
    // wait for: the process exits below instead, the terminal put back.
    let left_reading = input.is_reading();
    if left_reading {
        input.release_terminal();
    }
    drop(chat);
    // However the chat ended (`/exit`, a signal, an error), its servers stop here.
    if let Some(servers) = mcp_servers {
        servers.shutdown().await;
    }
    match ended {
        Ok(None) => Ok(ExitCode::SUCCESS),
        Ok(Some(ending)) => signals::exit(ending),
        Err(err) if left_reading => exit_reporting(&err),
        Err(err) => Err(err),
    }
}

/// Reports `err` as `main` would and ends the process at once, with the exit code
/// [`render::report`] picks, rather than returning to a runtime shutdown that waits.
fn exit_reporting(err: &anyhow::Error) -> ! {
    let code = render::report(err);
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 })
}

/// The metadata `--owner`, `--title`, `--tag` and `--expire-in` or `--expire-idle` give a
/// session this chat creates, checked as the storage would check it. A `--expire-in` counts
/// from now, as the chat starts.
fn new_session_meta(args: &ChatArgs) -> Result<SessionMeta> {
    let mut meta = SessionMeta::new().tags(args.tags.iter().cloned());
    if let Some(owner) = &args.owner {
        meta = meta.owner(owner.clone());
    }
    if let Some(title) = &args.title {
        meta = meta.title(title.clone());
    }
    let expiry = match (args.expire_in, args.expire_idle) {
        (Some(span), _) => Some(Expiry::At(crate::time::after(
            SystemTime::now(),
            span,
            "--expire-in",
        )?)),
        (None, Some(span)) => Some(crate::time::idle(span, "--expire-idle")?),
        (None, None) => None,
    };
    if let Some(expiry) = expiry {
        meta = meta.expiry(expiry);
    }
    meta.validate()?;
    Ok(meta)
}

/// Refuses, before the chat starts, a session that exists and is not `owner`'s: scoped
/// to `owner`, the agent would see it as empty and fail at the first message.
async fn check_owner(storage: &dyn ConversationStorage, id: &str, owner: &str) -> Result<()> {
    let info = storage
        .session_info(id)
        .await
        .with_context(|| format!("cannot read session \"{id}\""))?;
    let Some(info) = info else {
        return Ok(());
    };
    match info.meta.owner.as_deref() {
        Some(held) if held == owner => Ok(()),
        Some(_) => {
            anyhow::bail!("session \"{id}\" belongs to another owner; pick another --session")
        }
        None => anyhow::bail!(
            "session \"{id}\" has no owner, so --owner {owner} cannot open it; give it one with \
             `fusion sessions set-owner {id} {owner}` or pick another --session"
        ),
    }
}

impl Chat {
    /// Reads lines and answers them until the input ends, `/exit`, or a signal that ends
    /// the chat (returned).
    async fn converse(
        &mut self,
        input: &mut Input,
        endings: &mut Endings,
    ) -> Result<Option<Ending>> {
        loop {
            let line = tokio::select! {
                biased;
                ending = endings.next() => return Ok(Some(ending)),
                line = input.read_line() => line?,
            };
            let Some(line) = line else {
                return Ok(None);
            };
            let outcome = match commands::typed(&line) {
                Typed::Blank => continue,
                // `/summarize` asks the model too, so Ctrl-C stops a command as it stops a
                // turn.
                Typed::Command(command) => {
                    let interactive = self.interactive;
                    let stopped = tokio::select! {
                        biased;
                        stop = signals::stop(interactive, endings) => Err(stop),
                        outcome = self.command(command) => Ok(outcome),
                    };
                    match stopped {
                        Ok(outcome) => outcome,
                        Err(stop) => self.stopped(stop).await,
                    }
                }
                Typed::Message(message) => self.turn(&message, input, endings).await,
            };
            let outcome = match outcome {
                Err(err) => Err(self.explain_conflict(err).await),
                done => done,
            };
            match outcome {
                Ok(Flow::Continue) => {}
                Ok(Flow::Exit) => return Ok(None),
                Ok(Flow::End(ending)) => return Ok(Some(ending)),
                // On a terminal the user can react; in a script, carrying on would send
                // later lines into a conversation that is not the one the script expects.
                // Nobody reads a stdout whose reader went away: that ends the chat (quietly,
                // in `main`), rather than an error line for each thing it would print.
                Err(err) if self.interactive && !render::reader_went_away(&err) => {
                    render::note(format_args!("error: {}", crate::one_line(&err)))
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One user message: run the agent, showing its reply as it is written and its tool
    /// calls as they run. Ctrl-C (on a terminal) stops the turn and keeps the session;
    /// SIGTERM and SIGHUP stop it the same way and end the chat.
    ///
    /// An approval question is read while the turn goes on being polled: the other calls
    /// of the same model message keep running (their timeouts count real work, not the
    /// user's pause). What the turn reports meanwhile is held back until the answer is
    /// in, so nothing is printed across the prompt's line.
    async fn turn(
        &mut self,
        message: &str,
        input: &mut Input,
        endings: &mut Endings,
    ) -> Result<Flow> {
        let mut view = TurnView::start();
        // One listener for the whole turn, polled before the turn can ask the model
        // anything (`biased`): a SIGINT arriving while no one listens would kill the process.
        let stop = signals::stop(self.interactive, endings);
        tokio::pin!(stop);
        let mut events = self.session.send_message_stream(message);
        // The question being asked (the agent asks one at a time), and the events that
        // arrived since it was.
        let mut asking: Option<Question> = None;
        let mut held = Vec::new();
        let outcome = loop {
            tokio::select! {
                biased;
                stop = &mut stop => break Err(stop),
                decided = answer(asking.as_ref(), input) => {
                    let (decision, go_on) = decided?;
                    if let Some(question) = asking.take() {
                        // A call dropped meanwhile waits for nothing; the answer goes nowhere.
                        let _ = question.answer.send(decision);
                    }
                    for event in held.drain(..) {
                        view.show(&event)?;
                    }
                    if !go_on {
                        break Err(Stop::Interrupt);
                    }
                }
                event = events.next() => match event {
                    Some(Ok(AgentEvent::Finished(result))) => break Ok(Ok(result)),
                    Some(Ok(event)) if asking.is_some() => held.push(event),
                    Some(Ok(event)) => view.show(&event)?,
                    Some(Err(err)) => break Ok(Err(err)),
                    None => unreachable!("a turn's stream ends with its result or its error"),
                },
                // After the events: the calls' start lines, queued with the question, are
                // shown above its prompt (the turn waits for the answer, so they run out).
                Some(question) = next_question(&mut self.questions), if asking.is_none() => {
                    view.pause()?;
                    asking = Some(question);
                }
            }
        };
        // Dropping the stream cancels the turn (if it still runs), and with it any call
        // still waiting for an answer.
        drop(events);
        if let Err(Stop::End(ending)) = outcome {
            // On the way out nothing more is shown (held events, the question's line), and
            // the terminal may be gone (a hangup): nothing here may fail.
            let _ = view.stop();
            return Ok(Flow::End(ending));
        }
        if input.is_asking() {
            // Stopped with the question's prompt on screen: its line ends here, and the
            // read goes on for the next message.
            render::say("")?;
        }
        for event in held {
            view.show(&event)?;
        }
        match outcome {
            Ok(Ok(result)) => view.finish(&result)?,
            Ok(Err(err)) => {
                view.stop()?;
                return Err(err.into());
            }
            Err(stop) => {
                view.stop()?;
                return self.stopped(stop).await;
            }
        }
        Ok(Flow::Continue)
    }

    /// After a turn or a command was stopped from outside: Ctrl-C goes on with the chat
    /// ([`interrupted`](Self::interrupted)); SIGTERM and SIGHUP end it.
    async fn stopped(&mut self, stop: Stop) -> Result<Flow> {
        match stop {
            Stop::Interrupt => self.interrupted().await,
            Stop::End(ending) => Ok(Flow::End(ending)),
        }
    }

    /// After Ctrl-C stopped a turn or a command: whatever was stored before it stays stored
    /// (a reply cut off mid-stream is not stored); reloading makes the in-memory history
    /// agree with storage.
    async fn interrupted(&mut self) -> Result<Flow> {
        self.session.reload().await?;
        render::say("(interrupted)")?;
        Ok(Flow::Continue)
    }

    /// Says what a conflicting write means for the user: another writer (a second chat,
    /// an import, a delete) changed the session, storage refused this session's write,
    /// and the session now continues from what storage holds. Other errors pass unchanged.
    async fn explain_conflict(&mut self, err: anyhow::Error) -> anyhow::Error {
        let conflict = err.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<fusion::Error>(),
                Some(fusion::Error::Conflict { .. })
            )
        });
        if !conflict {
            return err;
        }
        let id = &self.id;
        // The session may already have reread storage; reading again costs one load and
        // makes the count below what storage holds now.
        // A script stops at the error (see `run`): its next lines were written for the
        // conversation as it was.
        let stops = match self.interactive {
            true => "",
            false => "; the script stops here",
        };
        match self.session.reload().await {
            Ok(()) => err.context(format!(
                "session {id} was changed by another writer; reloaded {} from storage{stops}",
                render::plural(self.session.message_count(), "message")
            )),
            Err(reload) => err.context(format!(
                "session {id} was changed by another writer, and reloading it failed ({reload})"
            )),
        }
    }
}
