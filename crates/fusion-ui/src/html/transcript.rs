//! The transcript page: a session's facts and actions, then its messages a window at a
//! time, each with its role, its text as safe markdown, its tool calls as cards holding
//! their results, context records marked as such, and its raw JSON; the first message of
//! each turn shows the turn's size in tokens and a "fork before" button. The text, each
//! card's arguments and result, and the raw JSON have copy buttons, which copy the text as
//! stored (`assets/copy.js`).
//!
//! A window is [`WINDOW`] messages ending where the request says (the newest by default),
//! so a 10,000-message session costs the browser 200 messages, with a link that loads
//! the window before it. A tool result is shown in the card of the call it answers,
//! found by `tool_call_id` anywhere in the history, and only pointed to where it is
//! stored, so long output appears once.
//!
//! The page carries each stored text once, as it is shown. A message's stored JSON, which
//! would carry every text a second time, is not in the page: its "raw JSON" block and the
//! copy buttons fetch it from [`json_href`] (`GET /sessions/{id}/messages/{n}`) when
//! opened or pressed, so a tool output of a few megabytes is sent once, not twice.

use std::collections::HashMap;
use std::ops::Range;

use askama::Template;
use fusion::agent::context::{
    Encoding, PRUNE_KEY, SUMMARY_KEY, TiktokenCounter, is_context_record, is_interrupted,
};
use fusion::agent::{TokenCounter, escape_hidden};
use fusion::storage::SessionInfo;
use fusion::{ChatMessage, Role, ToolCall};

use crate::assets::{AssetUrls, URLS};
use crate::format::{Cut, utc, utc_or_dash};
use crate::markdown::to_safe_html;
use crate::random::random_u64;
use crate::turns::{safe_cuts, turn_starts};

/// How many messages one window shows.
pub(crate) const WINDOW: usize = 200;
/// How many characters of tool output, arguments or raw JSON are shown before "show all".
pub(crate) const CUT_CHARS: usize = 2_000;

/// The session's facts at the top of the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub id: String,
    pub label: String,
    pub title: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub created: String,
    pub updated: String,
    pub expires: Option<String>,
    pub count: usize,
}

impl Head {
    /// The facts of `info`.
    pub(crate) fn new(info: &SessionInfo) -> Self {
        Self {
            id: info.id.clone(),
            label: info.meta.title.clone().unwrap_or_else(|| info.id.clone()),
            title: info.meta.title.clone(),
            owner: info.meta.owner.clone(),
            tags: info.meta.tags.clone(),
            created: utc_or_dash(info.created_at),
            updated: utc_or_dash(info.updated_at),
            expires: info.expires_at.map(utc),
            count: info.message_count,
        }
    }
}

/// The link that loads the window before the one shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Earlier {
    /// How many messages come before the window.
    pub before: usize,
    /// The whole page ending there (without htmx).
    pub page_href: String,
    /// The fragment ending there (for htmx, swapped in place of the link), naming the
    /// generation this window was read at: a rewrite since (an undo, a summary, a delete)
    /// makes it a 409, so the page never joins windows of two histories.
    pub fragment_href: String,
}

/// What a message shows as its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// Nothing (an assistant message that only calls tools).
    Empty,
    /// Text rendered from markdown and sanitized.
    Markdown(String),
    /// Tool output, as escaped text.
    Output(Cut),
    /// A tool result shown in the card of the call it answers.
    ShownWithCall(CallLink),
}

/// Where the card holding a tool result is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallLink {
    pub call_id: String,
    /// The index of the message that made the call.
    pub at: usize,
    pub href: String,
}

/// One tool call, with its result when one is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallCard {
    /// The call's id and tool name, and below its arguments, with what a page would hide
    /// or reorder escaped ([`escape_hidden`]), as its approval card showed them.
    pub id: String,
    pub name: String,
    /// Pretty-printed when they are JSON, else as the model wrote them.
    pub arguments: Cut,
    pub result: Option<ResultCard>,
}

/// The result of a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResultCard {
    /// The index of the result message.
    pub at: usize,
    pub output: Cut,
    /// Where the result message's stored JSON is, for the copy button ([`json_href`]).
    pub json_href: String,
    pub badges: Vec<String>,
}

/// One message as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub index: usize,
    pub role: &'static str,
    pub name: Option<String>,
    /// A context record (a stored summary or pruning decision), not a turn.
    pub record: bool,
    pub badges: Vec<String>,
    pub body: Body,
    /// Whether the body shows the message's own text (so it has a copy button).
    pub copy_text: bool,
    pub calls: Vec<CallCard>,
    /// The turn this message starts, when it starts one.
    pub turn: Option<TurnMark>,
    /// Where its stored JSON is ([`json_href`]): the "raw JSON" block and the copy
    /// buttons read it from there.
    pub json_href: String,
}

/// What the first message of a turn shows about the turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TurnMark {
    /// 1 for the session's first turn.
    pub number: usize,
    /// What the turn's messages (this one up to the next turn) cost in a request, counted
    /// with the o200k_base encoding (GPT-4o and later): storage does not record which
    /// model a session talks to, and the count is a guide to the turn's size.
    pub tokens: usize,
    /// Whether a fork can be made before it: something comes before it, and no tool call
    /// would be cut from its result.
    pub can_fork: bool,
}

/// A window of messages: the fragment the "load earlier" link fetches.
#[derive(Template, Debug)]
#[template(path = "messages.html")]
pub(crate) struct Messages {
    id: String,
    /// The session's generation when it was read: a fork names positions, which stay
    /// true while it is unchanged (appends keep it).
    generation: u64,
    /// Random for each window rendered, carried by its fork buttons: a post repeated with
    /// the same token and position (a double click, a reload of the answer) finds the
    /// fork the first one made instead of making another (`routes::fork`).
    fork_request: String,
    earlier: Option<Earlier>,
    /// Loaded by a "load earlier" link ([`Messages::loaded_earlier`]).
    loaded: bool,
    items: Vec<Item>,
}

impl Messages {
    /// The [`WINDOW`] messages of `history` that end before index `end` (clamped to the
    /// history), of session `id` read at `generation`.
    pub(crate) fn window(id: &str, history: &[ChatMessage], generation: u64, end: usize) -> Self {
        let end = end.min(history.len());
        let start = end.saturating_sub(WINDOW);
        let index = Index::of(history);
        let mut turns = turn_marks(history, start..end);
        let shown = Shown {
            id,
            generation,
            window: start..end,
        };
        let items = (start..end)
            .map(|at| Item {
                turn: turns.remove(&at),
                ..item(&shown, history, &index, at)
            })
            .collect();
        let earlier = (start > 0).then(|| Earlier {
            before: start,
            page_href: format!("/sessions/{id}?before={start}"),
            fragment_href: format!(
                "/sessions/{id}/messages?before={start}&generation={generation}"
            ),
        });
        Self {
            id: id.to_string(),
            generation,
            fork_request: format!("{:016x}{:016x}", random_u64(), random_u64()),
            earlier,
            loaded: false,
            items,
        }
    }

    /// The window as loaded by the "load earlier" link, which it replaces. The link that
    /// was pressed had the keyboard's focus, and htmx gives it back to the element of the
    /// same id in what replaces it (`earlier`): the next window's link, or, where the
    /// window reaches the first message, a line saying so. Without one the focus fell to
    /// the page's start, so a keyboard user was sent back above the session's facts
    /// after every load.
    pub(crate) fn loaded_earlier(mut self) -> Self {
        self.loaded = true;
        self
    }
}

/// The chat at the foot of the transcript page, already rendered.
#[derive(Debug, Default)]
pub(crate) struct ChatSection {
    /// The input form; `None` when the app has no agent.
    pub form: Option<String>,
    /// The live panel of the turn running on the session, if one runs.
    pub live: Option<String>,
}

/// The whole transcript page.
#[derive(Template, Debug)]
#[template(path = "transcript.html")]
pub(crate) struct TranscriptPage {
    title: String,
    assets: &'static AssetUrls,
    head: Head,
    messages: Messages,
    chat: ChatSection,
}

impl TranscriptPage {
    /// The page of the session `head` describes, showing `messages` and `chat`.
    pub(crate) fn new(head: Head, messages: Messages, chat: ChatSection) -> Self {
        Self {
            title: head.label.clone(),
            assets: &URLS,
            head,
            messages,
            chat,
        }
    }
}

/// How a later prune record shortened a message in the model's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    ToolOutput,
    Chatter,
}

/// What the whole history says about each message: which call each result answers, which
/// result each call's card shows, and which messages a prune record shortened.
///
/// A result answers the nearest call before it with its id: some servers give every
/// turn's calls the same ids (`call_0`), so an id alone does not name one call.
struct Index<'a> {
    /// The call each result answers, by the result's index: the index of the message
    /// holding the call.
    call_of: HashMap<usize, usize>,
    /// The result shown in each call's card, by the index of the message holding the call
    /// and the call's id.
    result_of: HashMap<(usize, &'a str), usize>,
    marks: HashMap<usize, Mark>,
}

impl<'a> Index<'a> {
    fn of(history: &'a [ChatMessage]) -> Self {
        let mut index = Index {
            call_of: HashMap::new(),
            result_of: HashMap::new(),
            marks: HashMap::new(),
        };
        // The latest message so far that calls each id.
        let mut latest_call: HashMap<&str, usize> = HashMap::new();
        for (at, message) in history.iter().enumerate() {
            if let Some(id) = &message.tool_call_id
                && let Some(&call_at) = latest_call.get(id.as_str())
            {
                index.call_of.insert(at, call_at);
                // A real result wins over an "interrupted" one, which another writer's
                // turn opening stores for a call still running, as in the agent's view.
                let shown = index.result_of.entry((call_at, id.as_str())).or_insert(at);
                if is_interrupted(&history[*shown]) && !is_interrupted(message) {
                    *shown = at;
                }
            }
            for call in &message.tool_calls {
                latest_call.insert(call.id.as_str(), at);
            }
            index.read_prune_record(message, at);
        }
        index
    }

    /// The marks of a prune record stored at `at`: `{"tool_outputs": [..], "chatter":
    /// [..]}` (fusion-agent's context records). Indices at or after the record cannot
    /// have been decided by it and are ignored, as the agent ignores them.
    fn read_prune_record(&mut self, message: &ChatMessage, at: usize) {
        let Some(record) = message.metadata.get(PRUNE_KEY) else {
            return;
        };
        for (field, mark) in [
            ("tool_outputs", Mark::ToolOutput),
            ("chatter", Mark::Chatter),
        ] {
            let indices = record.get(field).and_then(|v| v.as_array());
            for index in indices.into_iter().flatten().filter_map(|v| v.as_u64()) {
                if let Ok(index) = usize::try_from(index)
                    && index < at
                {
                    self.marks.insert(index, mark);
                }
            }
        }
    }
}

/// The marks of the turns that start in `window`, by the index of their first message.
/// Only those turns are counted, so a page costs its window (and the tail of its last
/// turn), not the whole session.
fn turn_marks(history: &[ChatMessage], window: Range<usize>) -> HashMap<usize, TurnMark> {
    let counter = TiktokenCounter::new(Encoding::O200kBase);
    let starts = turn_starts(history);
    let safe = safe_cuts(history);
    let ends = starts.iter().skip(1).copied().chain([history.len()]);
    starts
        .iter()
        .zip(ends)
        .enumerate()
        .filter(|(_, (at, _))| window.contains(at))
        .map(|(turn, (&at, end))| {
            let tokens = history[at..end]
                .iter()
                .map(|message| counter.count_message(message))
                .sum();
            let mark = TurnMark {
                number: turn + 1,
                tokens,
                can_fork: at > 0 && safe[at],
            };
            (at, mark)
        })
        .collect()
}

/// Where the stored JSON of message `at` of session `id`, as read at `generation`, is
/// served (`routes::transcript::message`): whole, pretty-printed, exactly as stored (a
/// fetch keeps every character, where text in HTML would lose carriage returns). It
/// names the generation so that after a rewrite (an undo) the page is refused rather
/// than given another message that now sits at `at`.
pub(crate) fn json_href(id: &str, generation: u64, at: usize) -> String {
    format!("/sessions/{id}/messages/{at}?generation={generation}")
}

/// Which window of which session, read at which generation, is being shown.
struct Shown<'a> {
    id: &'a str,
    generation: u64,
    window: Range<usize>,
}

impl Shown<'_> {
    /// The link to message `at`: an anchor on this page, or the window that ends with it.
    fn link_to(&self, at: usize) -> String {
        if at >= self.window.start {
            format!("#m{at}")
        } else {
            format!("/sessions/{}?before={}#m{at}", self.id, at + 1)
        }
    }

    /// Where message `at`'s stored JSON is ([`json_href`]).
    fn json_href(&self, at: usize) -> String {
        json_href(self.id, self.generation, at)
    }
}

/// Message `at` of `history` as `shown`.
fn item(shown: &Shown<'_>, history: &[ChatMessage], index: &Index<'_>, at: usize) -> Item {
    let message = &history[at];
    let body = match (message.role, &message.tool_call_id, index.call_of.get(&at)) {
        (Role::Tool, Some(call_id), Some(&call_at)) => Body::ShownWithCall(CallLink {
            call_id: escape_hidden(call_id),
            at: call_at,
            href: shown.link_to(call_at),
        }),
        (Role::Tool, ..) => Body::Output(Cut::new(&message.content, CUT_CHARS)),
        _ if message.content.is_empty() => Body::Empty,
        _ => Body::Markdown(to_safe_html(&message.content)),
    };
    let calls = message
        .tool_calls
        .iter()
        .map(|call| card(shown, call, at, history, index))
        .collect();
    Item {
        index: at,
        role: message.role.as_str(),
        name: message.name.as_deref().map(escape_hidden),
        record: is_context_record(message),
        badges: badges(message, index.marks.get(&at).copied()),
        copy_text: matches!(body, Body::Markdown(_) | Body::Output(_)),
        body,
        calls,
        turn: None,
        json_href: shown.json_href(at),
    }
}

/// The card of `call`, made by message `at`.
fn card(
    shown: &Shown<'_>,
    call: &ToolCall,
    at: usize,
    history: &[ChatMessage],
    index: &Index<'_>,
) -> CallCard {
    let arguments = match serde_json::from_str::<serde_json::Value>(&call.arguments) {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_else(|_| call.arguments.clone()),
        Err(_) => call.arguments.clone(),
    };
    // As its approval card showed it (`html::chat`): a bidi override in the arguments
    // would make the record of what ran read `"txt.exe"` as `"exe.txt"`.
    let arguments = escape_hidden(&arguments);
    let result = index.result_of.get(&(at, call.id.as_str())).map(|&at| {
        let message = &history[at];
        ResultCard {
            at,
            output: Cut::new(&message.content, CUT_CHARS),
            json_href: shown.json_href(at),
            badges: badges(message, index.marks.get(&at).copied()),
        }
    });
    CallCard {
        id: escape_hidden(&call.id),
        name: escape_hidden(&call.name),
        arguments: Cut::new(&arguments, CUT_CHARS),
        result,
    }
}

/// What the stored metadata says about a message, in words.
fn badges(message: &ChatMessage, mark: Option<Mark>) -> Vec<String> {
    let mut badges = Vec::new();
    if let Some(summary) = message.metadata.get(SUMMARY_KEY) {
        badges.push(match summary.get("covers").and_then(|v| v.as_u64()) {
            Some(covers) => format!("stored summary of the messages before #{covers}"),
            None => "stored summary".to_string(),
        });
    }
    if let Some(record) = message.metadata.get(PRUNE_KEY) {
        let list = |field: &str| {
            let indices = record.get(field).and_then(|v| v.as_array());
            let shown: Vec<String> = indices
                .into_iter()
                .flatten()
                .map(|v| format!("#{v}"))
                .collect();
            shown.join(", ")
        };
        badges.push(format!(
            "prune record: tool output of [{}] and assistant notes of [{}] shortened in the \
             model's view",
            list("tool_outputs"),
            list("chatter")
        ));
    }
    match mark {
        Some(Mark::ToolOutput) => badges.push("pruned in the model's view".to_string()),
        Some(Mark::Chatter) => badges.push("text pruned from the model's view".to_string()),
        None => {}
    }
    if is_interrupted(message) {
        badges.push("interrupted: written when the turn was cancelled".to_string());
    }
    badges
}
