//! Names and ids as sent: what storage keeps exactly as the model (or another writer)
//! wrote it, in a form servers take.
//!
//! OpenAI checks the names of the calls in the history (`^[a-zA-Z0-9_-]{1,64}$`), a
//! message's participant name likewise, and the calls' ids (at most 40 characters);
//! Anthropic's OpenAI-compatible endpoint takes only ids of `^[a-zA-Z0-9_-]+$`, and
//! Mistral's only ids of exactly 9 characters of `[a-zA-Z0-9]`. One stored value outside
//! those made every later request of the session fail, so it is sent replaced, and only
//! on the wire.
//!
//! A tool call's name is replaced by a readable part of it followed by a hash of the
//! whole ([`with_hash`]): two names that only differ in what is replaced (`read.file`,
//! `read file`) stay two, and a made-up name never turns into a real tool's
//! (`functions.read_file` is not sent as `functions_read_file`, a name a tool may have),
//! so the model never sees a call of one tool that was a call of another. An id is
//! replaced by 9 letters and digits of a hash of it ([`sendable_call_id`]). Either mapping
//! is a function of the value alone, so a call and its result carry the same id in every
//! request, and the encoded prefix of a conversation stays valid.
//!
//! Ids are replaced only when the client asks for it ([`CallIds`]): some models read
//! them (Kimi K2's are its calls' headers), so by default they go as stored.

use std::borrow::Cow;

use fusion_core::ChatMessage;

use crate::llm::{ChatDelta, ToolDefinition};

/// The longest tool (or participant) name OpenAI takes, in (ASCII) characters.
const MAX_NAME_CHARS: usize = 64;

/// The longest tool-call id OpenAI takes, in (ASCII) characters ("string too long.
/// Expected a string with maximum length 40", a 400).
const MAX_ID_CHARS: usize = 40;

/// How many characters a tool-call id Mistral takes has, all of `[a-zA-Z0-9]` ("Tool call
/// id was call_0fypS1hVX but must be a-z, A-Z, 0-9, with a length of 9.", a 400): the
/// one form every server takes, so the form of a portable id.
const PORTABLE_ID_CHARS: usize = 9;

/// What a stored call without a name is sent back as (before its hash).
const UNNAMED_CALL: &str = "unnamed";

/// Whether `c` may appear in a name or id a server takes.
pub(super) fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `value` is sent as it is: 1 to `max` characters, all [`allowed`].
fn fits(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.chars().all(allowed)
}

/// `value` cut so that `_` and 16 hex digits follow within `max` characters, every
/// character not [`allowed`] written `_` (or `empty` when `value` is empty), then `_` and
/// the FNV-1a hash of the whole of `value`: the same for the same value in every request
/// and every process, and different for different values (but for a 64-bit hash
/// collision).
fn with_hash(value: &str, max: usize, empty: &str) -> String {
    let hash = fusion_core::fnv1a(value.as_bytes());
    let readable = if value.is_empty() { empty } else { value };
    let kept = readable.chars().take(max - 17);
    let mut sent: String = kept.map(|c| if allowed(c) { c } else { '_' }).collect();
    sent.push_str(&format!("_{hash:016x}"));
    sent
}

/// The name a stored call is sent back with in later requests: the model's when a tool
/// could have it (`[a-zA-Z0-9_-]`, 1 to 64 characters, as [`crate::Tool::name`] says),
/// else a readable part of it and its hash ([`with_hash`]).
///
/// Storage keeps the name the model wrote, and the call's result already told the model
/// that no tool has it, quoting it. But OpenAI refuses the whole request over one such
/// name (`Invalid 'messages[2].tool_calls[0].function.name': string does not match
/// pattern`, a 400), so one call of a made-up name (`functions.read_file`, `read file`)
/// sent back verbatim made every later request of the session fail. Sent with `_` for each
/// refused character, it read as a call of the real `functions_read_file` or `read_file`
/// that never happened; the hash keeps it apart from every name a tool has.
///
/// A registered tool's name is offered under the same form ([`super::request`]), so a
/// tool registered as `functions.read_file` is offered, and its past calls sent back, as
/// one name; a call of that form is read back as the tool's ([`restore_tool_names`]).
pub(crate) fn sendable_call_name(name: &str) -> Cow<'_, str> {
    if fits(name, MAX_NAME_CHARS) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(with_hash(name, MAX_NAME_CHARS, UNNAMED_CALL))
    }
}

/// How the ids of stored calls, and of the results answering them, are sent
/// ([`OpenAiConfig::portable_call_ids`](super::OpenAiConfig::portable_call_ids)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CallIds {
    /// As stored (the default): `functions.read_file:0` as Kimi K2 writes it, which K2's
    /// chat template renders back as the header of the call the model reads; sent
    /// replaced, K2 served natively (Moonshot, vLLM, SGLang, llama.cpp) would read its
    /// own history wrong, silently.
    AsStored,
    /// [`sendable_call_id`]: in the one form every server takes (Mistral's endpoint and
    /// chat template take only 9 of `[a-zA-Z0-9]`, Anthropic's endpoint only
    /// `[a-zA-Z0-9_-]`, OpenAI at most 40 characters).
    Portable,
}

impl CallIds {
    /// `id` as sent. A blank id (`""`, `" "`) goes as [`sendable_call_id`] makes it in
    /// either case: it names no call, and servers refuse a result whose id is blank
    /// (Anthropic's pattern), so one stored before new calls got fresh ids in place of
    /// blank ones (`wire::call_id`) failed every later request. Made from the id alone,
    /// the call and its result still carry one id, the same in every request.
    pub(super) fn send(self, id: &str) -> Cow<'_, str> {
        match self {
            Self::AsStored if !id.trim().is_empty() => Cow::Borrowed(id),
            Self::AsStored | Self::Portable => Cow::Owned(sendable_call_id(id)),
        }
    }
}

/// The id a stored call, and the result answering it, are sent with under
/// [`CallIds::Portable`]: 9 of `[a-zA-Z0-9]` written from the FNV-1a hash of the whole
/// id, the same for the call and its result, in every request and every process.
///
/// Storage keeps the id as the server gave it (`functions.read_file:0` from Kimi models,
/// `call_...` from OpenAI, `toolu_...` from Anthropic, a long one from a gateway), but
/// Anthropic's endpoint refuses an id with other characters than `[a-zA-Z0-9_-]`, OpenAI
/// one longer than 40 and Mistral's any other than 9 letters and digits, each failing
/// every later request. The form Mistral takes is one all three take; no readable part of
/// the id is kept, as 9 characters leave no room for one beside a hash. Two ids of one
/// conversation are sent alike only when their hashes agree in 9 base-62 digits (about 1
/// in 10^16 per pair).
///
/// An id already of that form (Mistral's own) is hashed too: kept as it is, it could be
/// the form sent for another id of the session, which a model that writes its calls' ids
/// copies when it repeats a call as the request showed it; storage keeps the copy (no
/// stored call has that id), and the two calls would go under one id in every request.
pub(super) fn sendable_call_id(id: &str) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut hash = fusion_core::fnv1a(id.as_bytes());
    let mut sent = String::with_capacity(PORTABLE_ID_CHARS);
    for _ in 0..PORTABLE_ID_CHARS {
        sent.push(char::from(DIGITS[(hash % 62) as usize]));
        hash /= 62;
    }
    sent
}

/// Whether `id` has the form of a portable id, the one Mistral's endpoint takes: exactly
/// 9 of `[a-zA-Z0-9]`.
pub(super) fn has_portable_form(id: &str) -> bool {
    id.len() == PORTABLE_ID_CHARS && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether servers other than Mistral's take `id` as it is: 1 to 40 characters of
/// `[a-zA-Z0-9_-]` (OpenAI's length, Anthropic's characters).
pub(super) fn taken_but_by_mistral(id: &str) -> bool {
    fits(id, MAX_ID_CHARS)
}

/// The name of the tool in `tools` that `name` calls: `name` itself when a tool has it,
/// else the first tool whose sendable form ([`sendable_call_name`]) it is, else `None`.
fn offered_name<'t>(name: &str, tools: &'t [ToolDefinition]) -> Option<&'t str> {
    if tools.iter().any(|tool| tool.name == name) {
        return None;
    }
    tools
        .iter()
        .find(|tool| tool.name != name && sendable_call_name(&tool.name) == name)
        .map(|tool| tool.name.as_str())
}

/// Puts back the names of the tools in `tools` (those the request offered) that the
/// reply's calls name by their sendable form: a tool registered as `functions.read_file`
/// is offered as `functions_read_file_<hash>`, and the model calls it so.
pub(super) fn restore_tool_names(message: &mut ChatMessage, tools: &[ToolDefinition]) {
    for call in &mut message.tool_calls {
        if let Some(name) = offered_name(&call.name, tools) {
            call.name = name.to_owned();
        }
    }
}

/// [`restore_tool_names`] for a streamed piece of a reply.
pub(super) fn restore_delta_names(delta: &mut ChatDelta, tools: &[ToolDefinition]) {
    match delta {
        ChatDelta::ToolCallStarted { name, .. } => {
            if let Some(offered) = offered_name(name, tools) {
                *name = offered.to_owned();
            }
        }
        ChatDelta::Done(response) => restore_tool_names(&mut response.message, tools),
        ChatDelta::Text(_) | ChatDelta::ToolCallArguments { .. } => {}
    }
}

/// A message's participant name as sent: as stored when OpenAI takes it, else with `_`
/// for every other character, cut to 64 (an application's user "Ada Lovelace" is sent as
/// `Ada_Lovelace`: the name is for the model to read, so no hash is added).
pub(super) fn sendable_participant(name: &str) -> Cow<'_, str> {
    if fits(name, MAX_NAME_CHARS) {
        Cow::Borrowed(name)
    } else {
        let sendable = name.chars().take(MAX_NAME_CHARS);
        Cow::Owned(sendable.map(|c| if allowed(c) { c } else { '_' }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_a_tool_could_have_are_sent_back_as_written() {
        let longest = "x".repeat(MAX_NAME_CHARS);
        for kept in ["read_file", "get-weather2", longest.as_str()] {
            assert_eq!(sendable_call_name(kept), kept);
            assert_eq!(sendable_participant(kept), kept);
        }
        let long = format!("{longest}y");
        for (name, readable) in [
            ("functions.read_file", "functions_read_file_"),
            ("read file", "read_file_"),
            ("café", "caf__"),
            ("", "unnamed_"),
            (long.as_str(), &"x".repeat(MAX_NAME_CHARS - 17)),
        ] {
            let sent = sendable_call_name(name);
            assert!(sent.starts_with(readable), "{name:?} sent as {sent:?}");
            assert!(fits(&sent, MAX_NAME_CHARS), "{name:?} sent as {sent:?}");
            assert_eq!(sendable_call_name(name), sent, "the same every time");
        }
        assert_eq!(sendable_participant("Ada Lovelace"), "Ada_Lovelace");
        assert_eq!(sendable_participant(&long), longest);
    }

    /// Found by a review: a made-up name was sent with `_` for what OpenAI refuses, so a
    /// call of `functions.read_file` (answered "no tool named") was sent as a call of the
    /// real tool `functions_read_file`, and `read.file` and `read file` as one name.
    #[test]
    fn a_replaced_name_is_no_other_name() {
        let names = [
            "functions_read_file",
            "functions.read_file",
            "functions read_file",
            "read_file",
            "read.file",
            "read file",
            "unnamed",
            "",
        ];
        let sent: Vec<String> = names.iter().map(|n| sendable_call_name(n).into()).collect();
        for (i, a) in sent.iter().enumerate() {
            for (j, b) in sent.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "{:?} and {:?} sent alike", names[i], names[j]);
            }
        }
    }

    /// Found by a review: a tool registered under a name servers refuse was offered as
    /// written while its past calls went back mapped. Offered mapped now, a call of the
    /// mapped form is read back as the tool's; a tool's own name always wins.
    #[test]
    fn a_call_of_a_tools_sendable_name_is_read_as_the_tools() {
        let tool = |name: &str| ToolDefinition {
            name: name.into(),
            description: String::new(),
            parameters: serde_json::json!({"type": "object"}),
        };
        let tools = [tool("functions.read_file"), tool("read_file")];
        let sent = sendable_call_name("functions.read_file").into_owned();
        let mut message = ChatMessage::assistant_with_tool_calls(
            "",
            vec![
                fusion_core::ToolCall::new("c0", &sent, "{}"),
                fusion_core::ToolCall::new("c1", "read_file", "{}"),
                fusion_core::ToolCall::new("c2", "functions_read_file", "{}"),
            ],
        );
        restore_tool_names(&mut message, &tools);
        let names: Vec<&str> = message.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["functions.read_file", "read_file", "functions_read_file"]
        );
        let mut started = ChatDelta::ToolCallStarted {
            index: 0,
            id: "c0".into(),
            name: sent.clone(),
        };
        restore_delta_names(&mut started, &tools);
        assert!(
            matches!(&started, ChatDelta::ToolCallStarted { name, .. } if name == "functions.read_file")
        );
        // A tool whose own name is that form is called by it.
        let shadowing = [tool("functions.read_file"), tool(&sent)];
        let mut message = ChatMessage::assistant_with_tool_calls(
            "",
            vec![fusion_core::ToolCall::new("c0", &sent, "{}")],
        );
        restore_tool_names(&mut message, &shadowing);
        assert_eq!(message.tool_calls[0].name, sent);
    }

    /// Found by a review: ids servers refuse (Anthropic's `^[a-zA-Z0-9_-]+$`, OpenAI's 40
    /// characters) were sent as stored; and then (a later review) in a form Mistral's
    /// endpoint refuses: it takes only ids of exactly 9 letters and digits, so OpenAI's
    /// `call_...` and the old portable `functions_read_file_0_<hash>` failed there alike.
    #[test]
    fn portable_ids_are_nine_letters_and_digits_and_distinct() {
        let longest = "c".repeat(MAX_ID_CHARS);
        let ids = [
            "functions.read_file:0",
            "functions.read_file:1",
            "functions_read_file_0",
            "call 0",
            "call_0",
            "call_Ab12Cd34Ef56Gh78Ij90Kl12",
            "toolu_01A-b",
            "call_fusion_1_0_8f3a",
            "",
            &longest,
            &format!("{longest}1"),
            "aB3dE5gH7",
            "aB3dE5gH",
            "aB3dE5gH7x",
        ];
        let sent: Vec<String> = ids.iter().map(|id| sendable_call_id(id)).collect();
        for (i, id) in sent.iter().enumerate() {
            assert!(has_portable_form(id), "{:?} sent as {id:?}", ids[i]);
            assert!(taken_but_by_mistral(id), "Anthropic and OpenAI take {id:?}");
            assert_eq!(sendable_call_id(ids[i]), *id, "the same every time");
            for other in &sent[i + 1..] {
                assert_ne!(id, other);
            }
        }
        // Every id is a hash, not a prefix of it; Mistral's own too (see below).
        assert!(has_portable_form(ids[11]) && sent[11] != ids[11]);
        assert_ne!(sent[7], "call_fusi");
        assert_eq!(CallIds::Portable.send(ids[0]), sent[0]);
    }

    /// Found by a review of ef3fd2f: Kimi K2 reads its history's ids as its calls'
    /// headers (`functions.read_file:0`), so servers running it natively got every past
    /// call mangled. By default ids go as stored, whatever they hold, but for a blank
    /// one, which names no call (fc58f90) and is sent as a portable id.
    #[test]
    fn by_default_ids_are_sent_as_stored() {
        let long = "c".repeat(MAX_ID_CHARS + 1);
        for id in ["functions.read_file:0", "call 0", "call_0", long.as_str()] {
            assert_eq!(CallIds::AsStored.send(id), id);
        }
        for blank in ["", " ", "\t"] {
            assert_eq!(CallIds::AsStored.send(blank), sendable_call_id(blank));
        }
    }
}
