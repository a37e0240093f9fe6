//! One worker process: a seeded random mix of turns, undos, summaries, forks, deletes,
//! labels (a tag added to the session's metadata), expiry changes and reloads on the run's
//! shared sessions, of appends to the brief sessions and purges ([`crate::brief`]), and of
//! retitles and renewals of the idle sessions and purges of those not written since the
//! run's cutoff ([`crate::idle`]), each journaled as it ends.
//!
//! The worker opens its own storage instance and keeps one `AgentSession` per shared
//! session for its whole life, as a long-running application would; other workers change
//! the same sessions underneath it. It undoes only right after its own acknowledged turn on
//! that session, so an undo can only ever be meant to remove that turn, and it journals
//! exactly which tags the session said it removed. A reload journals what it read, so the
//! checker can also check the session as it was during the run.
//!
//! The operation mix comes from a `StdRng` seeded with the run's seed and the worker's
//! index, so a failing seed replays the same choices (the interleaving with other
//! processes is up to the scheduler).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use fusion_agent::{AgentSession, LlmClient, OpenAiConfig};
use fusion_core::{ChatMessage, Expiry, MetaUpdate, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::backend::Location;
use crate::brief::{BRIEF_SESSIONS, PURGE_SESSION, brief_id, note};
use crate::idle::{self, IDLE_SESSIONS, idle_id};
use crate::journal::{Entry, Failure, Journal, Op, now_ns, snapshot};
use crate::tags::{Tag, tags_in, user_message};

/// The system prompt of every session of a run; the checker looks for exactly this text.
pub const SYSTEM_PROMPT: &str = "You are the Fusion stress-test assistant. Acknowledge every \
    note you are given by its label.";

/// The id of shared session `index`.
pub fn shared_id(index: usize) -> String {
    format!("shared-{index}")
}

/// The owner of shared session `index`, the same in every worker: sessions alternate
/// between two owners, so each owner's listing (`crate::listing`) holds some of them, and
/// the forks of theirs.
pub fn shared_owner(index: usize) -> String {
    format!("owner-{}", index % 2)
}

/// What a worker is told by the coordinator.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The run's storage.
    pub location: Location,
    /// The loopback LLM's API root.
    pub llm_url: String,
    /// This worker's index.
    pub index: usize,
    /// The run's seed.
    pub seed: u64,
    /// How many shared sessions there are.
    pub sessions: usize,
    /// Stop after this many operations.
    pub ops: Option<usize>,
    /// Stop once the wall clock passes this (ns since the epoch).
    pub deadline_ns: Option<u64>,
    /// Where to append the journal.
    pub journal: PathBuf,
    /// The workspace root its file tools are confined to (exists; the mock lists it).
    pub workspace: PathBuf,
    /// The probability that a reply is lost (`crate::faults`); 0 for none.
    pub faults: f64,
    /// The cutoff of every stale purge ([`crate::idle`]), ns since the epoch.
    pub idle_cutoff_ns: u64,
}

/// The seed of worker `index`'s generator.
pub fn worker_seed(seed: u64, index: usize) -> u64 {
    // Distinct, well-spread streams per worker from one run seed (the golden-ratio step).
    seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Turn,
    Undo,
    Summarize,
    Fork,
    Delete,
    Label,
    Retain,
    Brief,
    Purge,
    Retitle,
    Renew,
    StalePurge,
    Reload,
}

/// Turn 43%, undo 10%, summarize 8%, fork 4%, delete 5%, label 4%, retain 3%, brief 6%,
/// purge 2%, retitle 3%, renew 1%, stale purge 1%, reload 10%.
fn pick(rng: &mut StdRng) -> Kind {
    match rng.random_range(0..100u32) {
        0..43 => Kind::Turn,
        43..46 => Kind::Retitle,
        46..47 => Kind::Renew,
        47..48 => Kind::StalePurge,
        48..58 => Kind::Undo,
        58..66 => Kind::Summarize,
        66..70 => Kind::Fork,
        70..75 => Kind::Delete,
        75..79 => Kind::Label,
        79..82 => Kind::Retain,
        82..88 => Kind::Brief,
        88..90 => Kind::Purge,
        _ => Kind::Reload,
    }
}

/// How far past any run's end a retained shared session expires: never during it.
const FAR: Duration = Duration::from_secs(24 * 3600);

/// Runs the worker until its operation count or deadline; storage and LLM failures of
/// single operations are journaled, not returned.
pub async fn run(config: WorkerConfig) -> Result<()> {
    let seed = worker_seed(config.seed, config.index);
    let (storage, injector) = crate::faults::open(
        &config.location,
        config.faults,
        crate::faults::fault_seed(seed),
    )
    .await?;
    let llm: Arc<dyn LlmClient> = Arc::new(
        OpenAiConfig::new("stress-model")
            .base_url(config.llm_url.clone())
            .max_retries(0)
            .build()?,
    );
    let mut sessions = Vec::with_capacity(config.sessions);
    for index in 0..config.sessions {
        let session = AgentSession::builder(shared_id(index))
            .owner(shared_owner(index))
            .llm(llm.clone())
            .storage(storage.clone())
            .system_prompt(SYSTEM_PROMPT)
            .workspace_roots([config.workspace.clone()])
            .build()
            .await?;
        sessions.push(session);
    }
    // Only now: building reads each session (its owner) over new connections, and a
    // failure there is no operation the run checks but the end of the worker.
    injector.arm();
    let mut journal = Journal::create(&config.journal)?;
    let mut rng = StdRng::seed_from_u64(seed);
    // Replies lost up to the end of the previous operation: what the next one met is the
    // difference (a fault between two operations, from a background request, goes to the
    // next one, which is the one to run on whatever it left).
    let mut injected = injector.injected();
    // Per session: this worker's acknowledged turn, while it is its last operation there.
    let mut undoable: Vec<Option<Tag>> = vec![None; config.sessions];
    let (mut turns, mut forks, mut notes, mut retitles) = (0usize, 0usize, 0usize, 0usize);
    let mut done = 0usize;
    loop {
        if config.ops.is_some_and(|ops| done >= ops)
            || config
                .deadline_ns
                .is_some_and(|deadline| now_ns() >= deadline)
        {
            return Ok(());
        }
        done += 1;
        let index = rng.random_range(0..config.sessions);
        let session = &mut sessions[index];
        let mut kind = pick(&mut rng);
        if kind == Kind::Undo && undoable[index].is_none() {
            kind = Kind::Turn;
        }
        let mut on = shared_id(index);
        let start_ns = now_ns();
        let op = match kind {
            Kind::Turn => {
                let tag = Tag {
                    worker: config.index,
                    session: index,
                    turn: turns,
                };
                turns += 1;
                let op = turn(session, tag).await;
                undoable[index] = matches!(
                    op,
                    Op::Turn {
                        answer: Some(_),
                        ..
                    }
                )
                .then_some(tag);
                op
            }
            Kind::Undo => {
                let intended = undoable[index].take().map(|t| t.to_string());
                undo(session, intended.unwrap_or_default()).await
            }
            Kind::Summarize => {
                let keep_last = [0, 2, 4][rng.random_range(0..3)];
                let result = session.summarize_history(keep_last).await;
                Op::Summarize {
                    keep_last,
                    covers: result
                        .as_ref()
                        .ok()
                        .and_then(|r| r.as_ref().map(|r| r.covers)),
                    failure: Failure::of_result(&result),
                }
            }
            Kind::Fork => {
                let new_id = format!("fork-w{}-n{forks}", config.index);
                forks += 1;
                let result = session.fork(&new_id).await;
                Op::Fork {
                    new_id,
                    failure: Failure::of_result(&result),
                }
            }
            Kind::Delete => Op::Delete {
                failure: Failure::of_result(&session.clear_history().await),
            },
            Kind::Label => {
                let tag = format!("w{}", config.index);
                let update = MetaUpdate::new().add_tag(tag.clone());
                Op::Label {
                    failure: Failure::of_result(&session.update_meta(&update).await),
                    tag,
                }
            }
            Kind::Retain => {
                let (name, expiry) = match rng.random_range(0..3u32) {
                    0 => ("none", None),
                    1 => ("idle", Some(Expiry::Idle(FAR))),
                    _ => ("at", Some(Expiry::At(SystemTime::now() + FAR))),
                };
                let update = MetaUpdate::new().expiry(expiry);
                Op::Retain {
                    expiry: name.to_string(),
                    failure: Failure::of_result(&session.update_meta(&update).await),
                }
            }
            Kind::Brief => {
                on = brief_id(rng.random_range(0..BRIEF_SESSIONS));
                let note = note(config.index, notes);
                notes += 1;
                let result = storage
                    .append(&on, &[ChatMessage::user(note.clone())])
                    .await;
                Op::Brief {
                    note,
                    failure: Failure::of_result(&result),
                }
            }
            Kind::Purge => {
                on = PURGE_SESSION.to_string();
                let batch = rng.random_range(1..=4usize);
                let result = storage.purge_expired(batch).await;
                Op::Purge {
                    batch,
                    removed: result.as_ref().ok().copied(),
                    failure: Failure::of_result(&result),
                }
            }
            Kind::Retitle => {
                on = idle_id(rng.random_range(0..IDLE_SESSIONS));
                let title = idle::title(config.index, retitles);
                retitles += 1;
                idle::retitle(&*storage, &on, title).await
            }
            Kind::Renew => {
                on = PURGE_SESSION.to_string();
                idle::renew(&*storage, config.idle_cutoff_ns).await
            }
            Kind::StalePurge => {
                on = PURGE_SESSION.to_string();
                let page = idle::PAGES[rng.random_range(0..idle::PAGES.len())];
                idle::purge(&*storage, config.idle_cutoff_ns, page).await
            }
            Kind::Reload => match session.reload().await {
                Ok(()) => Op::Reload {
                    failure: None,
                    snapshot: snapshot(session.history()),
                },
                Err(err) => Op::Reload {
                    failure: Some(Failure::of(&err)),
                    snapshot: Vec::new(),
                },
            },
        };
        let end_ns = now_ns();
        let faults = injector.injected() - injected;
        injected += faults;
        if kind != Kind::Turn {
            undoable[index] = None;
        }
        journal.record(&Entry {
            worker: config.index,
            session: on,
            start_ns,
            end_ns,
            faults,
            op,
        })?;
    }
}

async fn turn(session: &mut AgentSession, tag: Tag) -> Op {
    let message = user_message(tag);
    let (answer, failure) = match session.send_message(&message).await {
        Ok(result) if result.success => (Some(result.result), None),
        // Stopped without a final answer: the message is stored but not acknowledged.
        Ok(result) => (
            None,
            Some(Failure {
                conflict: false,
                impossible: false,
                text: format!("no final answer: {}", result.result),
            }),
        ),
        Err(err) => (None, Some(Failure::of(&err))),
    };
    Op::Turn {
        tag: tag.to_string(),
        message,
        answer,
        failure,
    }
}

async fn undo(session: &mut AgentSession, intended: String) -> Op {
    let before = user_tags(session.history());
    let result = session.undo_last_turn().await;
    let after = user_tags(session.history());
    // Normally the history after is a prefix of the history before; if the session
    // reloaded in between, everything that disappeared is reported, so the checker sees it.
    let removed: Vec<String> = match result {
        Ok(_) if before.starts_with(&after) => {
            before[after.len()..].iter().map(Tag::to_string).collect()
        }
        Ok(_) => before
            .iter()
            .filter(|t| !after.contains(t))
            .map(Tag::to_string)
            .collect(),
        Err(_) => Vec::new(),
    };
    Op::Undo {
        intended,
        removed,
        count: *result.as_ref().unwrap_or(&0),
        failure: Failure::of_result(&result),
    }
}

/// The tags of the user messages in `history`, in order.
fn user_tags(history: &[ChatMessage]) -> Vec<Tag> {
    history
        .iter()
        .filter(|m| m.role == Role::User)
        .flat_map(|m| tags_in(&m.content))
        .collect()
}
