//! The deterministic payload of docs/benchmarks.md: SplitMix64, `gen_text`, the canonical message
//! sequence and W4's tagged contents.
//!
//! Every number this crate prints is comparable with other systems only because the bytes
//! stored are exactly the shared workload's; the unit tests below pin that with the check
//! values docs/benchmarks.md publishes.

use fusion_core::{ChatMessage, ToolCall};
use std::sync::atomic::{AtomicBool, Ordering};

/// The 64 words `gen_text` draws from, in docs/benchmarks.md's order.
pub const VOCAB: [&str; 64] = [
    "agent",
    "memory",
    "session",
    "token",
    "model",
    "prompt",
    "vector",
    "cache",
    "stream",
    "tool",
    "result",
    "query",
    "index",
    "shard",
    "batch",
    "latency",
    "store",
    "record",
    "message",
    "history",
    "context",
    "window",
    "system",
    "user",
    "assistant",
    "reply",
    "function",
    "argument",
    "schema",
    "value",
    "string",
    "number",
    "object",
    "array",
    "field",
    "key",
    "lock",
    "queue",
    "writer",
    "reader",
    "append",
    "load",
    "list",
    "delete",
    "update",
    "insert",
    "commit",
    "rollback",
    "snapshot",
    "replica",
    "cluster",
    "node",
    "graph",
    "edge",
    "weight",
    "layer",
    "rust",
    "python",
    "async",
    "thread",
    "future",
    "channel",
    "buffer",
    "bytes",
];

/// The tool names a canonical tool call picks from.
pub const TOOL_NAMES: [&str; 4] = ["search_docs", "get_weather", "run_sql", "read_file"];

/// Field numbers of [`seed`].
pub mod field {
    /// User message text.
    pub const USER: u64 = 0;
    /// Assistant message text.
    pub const ASSISTANT: u64 = 1;
    /// The text inside a tool call's arguments.
    pub const TOOL_ARGS: u64 = 2;
    /// Tool result text.
    pub const TOOL_RESULT: u64 = 3;
    /// The pick of a tool name.
    pub const TOOL_NAME: u64 = 4;
    /// W4's filler text.
    pub const W4_FILLER: u64 = 5;
}

/// One SplitMix64 step: advances `state` and returns the next draw.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The PRNG seed of message `i`, field `f`: `(42 << 40) + (i << 4) + f` mod 2^64.
pub fn seed(i: u64, f: u64) -> u64 {
    (42u64 << 40).wrapping_add(i << 4).wrapping_add(f)
}

/// Words drawn from [`VOCAB`], single-spaced, cut to exactly `n` bytes.
pub fn gen_text(seed: u64, n: usize) -> String {
    let mut state = seed;
    let mut text = String::with_capacity(n + 16);
    while text.len() < n {
        if !text.is_empty() {
            text.push(' ');
        }
        // `% 64` of a u64 always fits the index.
        text.push_str(VOCAB[(splitmix64(&mut state) % 64) as usize]);
    }
    text.truncate(n);
    text
}

/// The tool a canonical tool call at message `i` names.
pub fn tool_name(i: u64) -> &'static str {
    let mut state = seed(i, field::TOOL_NAME);
    TOOL_NAMES[(splitmix64(&mut state) % 4) as usize]
}

/// Whether workload messages carry ids (`--message-ids`): set once at start-up.
static MESSAGE_IDS: AtomicBool = AtomicBool::new(false);

/// Gives every workload message made from now on a fresh id (`--message-ids`), the way
/// an agent session does, so a run measures what the ids cost storage. The ids are made
/// with the messages, before anything is timed.
pub fn give_message_ids(on: bool) {
    MESSAGE_IDS.store(on, Ordering::Relaxed);
}

/// `message`, with a fresh id if the run gives messages ids.
pub fn identified(message: ChatMessage) -> ChatMessage {
    if MESSAGE_IDS.load(Ordering::Relaxed) {
        message.with_new_id()
    } else {
        message
    }
}

/// The messages of canonical turn `t`, whose first message has global index `i`.
fn turn(t: u64, i: u64) -> Vec<ChatMessage> {
    let mut messages = canonical_turn(t, i);
    if MESSAGE_IDS.load(Ordering::Relaxed) {
        for message in &mut messages {
            message.ensure_id();
        }
    }
    messages
}

/// [`turn`] without ids: the published workload.
fn canonical_turn(t: u64, i: u64) -> Vec<ChatMessage> {
    let user = ChatMessage::user(gen_text(seed(i, field::USER), 120));
    let assistant_text = gen_text(seed(i + 1, field::ASSISTANT), 400);
    if t % 5 != 4 {
        return vec![user, ChatMessage::assistant(assistant_text)];
    }
    let call_id = format!("call_{:08}", i + 1);
    let arguments = format!(
        r#"{{"query":"{}","top_k":5}}"#,
        gen_text(seed(i + 1, field::TOOL_ARGS), 58)
    );
    let call = ToolCall::new(call_id.clone(), tool_name(i + 1), arguments);
    vec![
        user,
        ChatMessage::assistant_with_tool_calls(assistant_text, vec![call]),
        ChatMessage::tool_result(call_id, gen_text(seed(i + 2, field::TOOL_RESULT), 200)),
    ]
}

/// Canonical turns, in order, until they hold at least `min_messages` messages.
pub fn turns_reaching(min_messages: usize) -> Vec<Vec<ChatMessage>> {
    let mut turns = Vec::new();
    let (mut t, mut i) = (0u64, 0usize);
    while i < min_messages {
        let messages = turn(t, i as u64);
        i += messages.len();
        t += 1;
        turns.push(messages);
    }
    turns
}

/// Exactly the first `n` canonical messages (the last turn may be cut short).
pub fn messages(n: usize) -> Vec<ChatMessage> {
    let mut all: Vec<ChatMessage> = turns_reaching(n).into_iter().flatten().collect();
    all.truncate(n);
    all
}

/// W3's grouping of the first 20 messages into add calls: one per turn, the last call
/// being the user message of turn 9.
pub const W3_GROUPS: [usize; 10] = [2, 2, 2, 2, 3, 2, 2, 2, 2, 1];

/// The first 20 canonical messages split into W3's ten add calls.
pub fn w3_batches() -> Vec<Vec<ChatMessage>> {
    let mut rest = messages(20).into_iter();
    W3_GROUPS
        .iter()
        .map(|&n| rest.by_ref().take(n).collect())
        .collect()
}

/// The tag W4 writer `w` puts at the start of its `k`th message: `w{w}-{k:03d}|`.
pub fn w4_tag(w: usize, k: usize) -> String {
    format!("w{w}-{k:03}|")
}

/// The 120-byte content of W4 writer `w`'s `k`th message.
pub fn w4_content(w: usize, k: usize) -> String {
    let tag = w4_tag(w, k);
    let filler_seed = seed(1_000_000 + 1000 * w as u64 + k as u64, field::W4_FILLER);
    let filler = gen_text(filler_seed, 120 - tag.len());
    tag + &filler
}

/// Reads a W4 tag back: `(writer, sequence)` from content starting `w{w}-{k}|`.
pub fn parse_w4_tag(content: &str) -> Option<(usize, usize)> {
    let (tag, _) = content.split_once('|')?;
    let (w, k) = tag.strip_prefix('w')?.split_once('-')?;
    Some((w.parse().ok()?, k.parse().ok()?))
}

/// Total content bytes of `messages` (docs/benchmarks.md's "bytes of content").
pub fn content_bytes(messages: &[ChatMessage]) -> usize {
    messages.iter().map(|m| m.content.len()).sum()
}

/// The check line of one message:
/// `role 0x1f content 0x1f [call_id 0x1f name 0x1f arguments] 0x1f [tool_call_id] \n`.
pub fn check_line(message: &ChatMessage, out: &mut Vec<u8>) {
    const SEP: u8 = 0x1f;
    out.extend_from_slice(message.role.as_str().as_bytes());
    out.push(SEP);
    out.extend_from_slice(message.content.as_bytes());
    out.push(SEP);
    for call in &message.tool_calls {
        out.extend_from_slice(call.id.as_bytes());
        out.push(SEP);
        out.extend_from_slice(call.name.as_bytes());
        out.push(SEP);
        out.extend_from_slice(call.arguments.as_bytes());
    }
    out.push(SEP);
    if let Some(id) = &message.tool_call_id {
        out.extend_from_slice(id.as_bytes());
    }
    out.push(b'\n');
}

/// The sha256 (lowercase hex) over the check lines of `messages`.
pub fn check_hash(messages: &[ChatMessage]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut line = Vec::with_capacity(1024);
    for message in messages {
        line.clear();
        check_line(message, &mut line);
        hasher.update(&line);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// docs/benchmarks.md's published check values.
pub const CHECK_1K: &str = "c5f7e60352a6fb4cd79862855979e4f7e69b68b7900ae8ada99ea6bf4087efc1";
/// sha256 of the first 10,000 messages' check lines.
pub const CHECK_10K: &str = "87adb5dad591b34954f5dac22fa7b6ad676be1f78fa567189796b118f763a591";
/// sha256 of the W4 set's check lines, writer-major.
pub const CHECK_W4: &str = "0d8840d1b4c938d73ec0aefb2ee7d6daf40d37beba3ccc24b80b71e0f2a46f4a";
/// Content bytes of the first 10,000 messages.
pub const CONTENT_BYTES_10K: usize = 2_545_320;

/// The full W4 set: 8 writers x 250 messages, writer-major.
pub fn w4_set() -> Vec<ChatMessage> {
    (0..8)
        .flat_map(|w| (0..250).map(move |k| identified(ChatMessage::user(w4_content(w, k)))))
        .collect()
}

/// Checks the generator against the published values before anything is measured, so
/// a run can never report numbers for a payload other than the shared one.
pub fn verify() -> anyhow::Result<()> {
    let all = messages(10_000);
    anyhow::ensure!(
        content_bytes(&all) == CONTENT_BYTES_10K
            && check_hash(&all[..1000]) == CHECK_1K
            && check_hash(&all) == CHECK_10K
            && check_hash(&w4_set()) == CHECK_W4,
        "the payload generator does not reproduce docs/benchmarks.md's check values"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusion_core::Role;

    #[test]
    fn first_splitmix64_draw_matches_the_published_value() {
        let mut state = seed(0, 0);
        assert_eq!(state, 46_179_488_366_592);
        assert_eq!(splitmix64(&mut state), 8_779_039_926_286_891_334);
        assert_eq!(state, 11_400_760_998_811_565_077);
    }

    #[test]
    fn message_zero_starts_with_the_published_words() {
        let first = &messages(1)[0];
        assert!(
            first
                .content
                .starts_with("vector reader token store async future thread"),
            "{}",
            first.content
        );
        assert_eq!(first.content.len(), 120);
    }

    #[test]
    fn first_ten_thousand_messages_hold_the_published_content_bytes() {
        let all = messages(10_000);
        assert_eq!(all.len(), 10_000);
        assert_eq!(content_bytes(&all), 2_545_320);
    }

    #[test]
    fn check_hashes_match_the_published_values() {
        let all = messages(10_000);
        assert_eq!(
            check_hash(&all[..1000]),
            "c5f7e60352a6fb4cd79862855979e4f7e69b68b7900ae8ada99ea6bf4087efc1"
        );
        assert_eq!(
            check_hash(&all),
            "87adb5dad591b34954f5dac22fa7b6ad676be1f78fa567189796b118f763a591"
        );
        verify().unwrap();
    }

    #[test]
    fn w4_set_hash_matches_the_published_value() {
        let set = w4_set();
        assert!(set.iter().all(|m| m.content.len() == 120));
        assert_eq!(
            check_hash(&set),
            "0d8840d1b4c938d73ec0aefb2ee7d6daf40d37beba3ccc24b80b71e0f2a46f4a"
        );
        assert_eq!(parse_w4_tag(&set[1999].content), Some((7, 249)));
    }

    #[test]
    fn w1_reaches_ten_thousand_at_turn_4545() {
        let turns = turns_reaching(10_000);
        assert_eq!(turns.len(), 4546);
        assert_eq!(turns.iter().map(Vec::len).sum::<usize>(), 10_001);
        // Tool arguments are exactly 80 bytes of JSON.
        let call = &turns[4][1].tool_calls[0];
        assert_eq!(call.arguments.len(), 80);
        assert_eq!(call.id, "call_00000009");
        assert_eq!(turns[4][2].tool_call_id.as_deref(), Some("call_00000009"));
    }

    #[test]
    fn w3_batches_split_the_first_twenty_messages() {
        let batches = w3_batches();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, W3_GROUPS);
        let flat: Vec<ChatMessage> = batches.into_iter().flatten().collect();
        assert_eq!(flat, messages(20));
        assert_eq!(flat[19].role, Role::User);
    }
}
