//! Token counting for context budgets: exact BPE counts for OpenAI models, an estimate for
//! everything else.
//!
//! Messages are counted the way OpenAI's cookbook ("How to count tokens with tiktoken")
//! does: 3 framing tokens per message, plus the role, the content, the name (and 1 more
//! token when there is one) and, per tool call, its name and arguments plus 1. A request
//! adds [`REPLY_PRIMING_TOKENS`] once. Tool definitions sent in the API's `tools` field are
//! counted by [`count_tools`], for a budget that holds for the whole request.
//!
//! ```
//! use fusion_agent::TokenCounter;
//! use fusion_agent::context::counter_for_model;
//! use fusion_core::ChatMessage;
//!
//! let exact = counter_for_model("gpt-4o-mini"); // o200k_base BPE
//! let guess = counter_for_model("llama3.2");    // bytes / 4
//! let hello = ChatMessage::user("Hello, world!");
//! assert_eq!(exact.count_message(&hello), 3 + 1 + 4);
//! assert_eq!(guess.count_message(&hello), 3 + 1 + 4);
//! ```

use std::fmt;
use std::sync::Arc;

use fusion_core::ChatMessage;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

use crate::llm::ToolDefinition;

/// Framing tokens around every message (`<|start|>role ... <|end|>`).
pub const TOKENS_PER_MESSAGE: usize = 3;
/// Extra tokens for a message that carries a `name`.
pub const TOKENS_PER_NAME: usize = 1;
/// Extra tokens per tool call, on top of its name and arguments.
pub const TOKENS_PER_TOOL_CALL: usize = 1;
/// Tokens that prime the reply (`<|start|>assistant<|message|>`), once per request.
pub const REPLY_PRIMING_TOKENS: usize = 3;

/// Counts the tokens a message costs in a request.
///
/// Implement [`count_text`](Self::count_text) for your model's tokenizer; the default
/// [`count_message`](Self::count_message) adds the cookbook's per-message overhead to it.
/// Both run on the request path for every message a token budget keeps, so they should
/// cost O(length of the text) and never block on I/O.
pub trait TokenCounter: Send + Sync {
    /// Tokens in `text` alone.
    fn count_text(&self, text: &str) -> usize;

    /// Tokens `message` costs in a request, framing included.
    fn count_message(&self, message: &ChatMessage) -> usize {
        let mut tokens = TOKENS_PER_MESSAGE
            + self.count_text(message.role.as_str())
            + self.count_text(&message.content);
        if let Some(name) = &message.name {
            tokens += self.count_text(name) + TOKENS_PER_NAME;
        }
        for call in &message.tool_calls {
            tokens += self.count_text(&call.name)
                + self.count_text(&call.arguments)
                + TOKENS_PER_TOOL_CALL;
        }
        tokens
    }
}

/// Tokens of a request carrying `messages`: their sum plus [`REPLY_PRIMING_TOKENS`].
pub fn count_request<'m>(
    counter: &dyn TokenCounter,
    messages: impl IntoIterator<Item = &'m ChatMessage>,
) -> usize {
    REPLY_PRIMING_TOKENS
        + messages
            .into_iter()
            .map(|m| counter.count_message(m))
            .sum::<usize>()
}

/// Tokens the tool definitions of a request cost: the text of each, its name, its
/// description and its parameters' schema as JSON. Servers write them into the prompt in
/// a form of their own, which that text is close to and rarely shorter than. 0 for no
/// tools.
pub fn count_tools(counter: &dyn TokenCounter, tools: &[ToolDefinition]) -> usize {
    tools
        .iter()
        .map(|tool| {
            counter.count_text(&tool.name)
                + counter.count_text(&tool.description)
                + counter.count_text(&tool.parameters.to_string())
        })
        .sum()
}

/// A byte-pair encoding that [`TiktokenCounter`] counts exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o1, o3, o4-mini (and gpt-oss, whose ordinary text
    /// encodes identically).
    O200kBase,
    /// GPT-4 and GPT-3.5 Turbo.
    Cl100kBase,
}

impl Encoding {
    /// The encoding OpenAI uses for `model`, if it is an OpenAI chat model.
    ///
    /// Case and a provider prefix (`openai/gpt-4o`, as OpenRouter spells it) are ignored.
    pub fn for_model(model: &str) -> Option<Encoding> {
        let name = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        match get_tokenizer(&name)? {
            Tokenizer::O200kBase | Tokenizer::O200kHarmony => Some(Encoding::O200kBase),
            Tokenizer::Cl100kBase => Some(Encoding::Cl100kBase),
            // Completion-era encodings: no chat model uses them.
            _ => None,
        }
    }

    /// The encoding's tables, built on first use and shared by every counter afterwards.
    fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }
}

/// Exact counts for OpenAI models, with the BPE tables `tiktoken-rs` ships (no download).
///
/// Creating one is free; the tables (a few MB) are built once per process, the first time
/// any counter of that encoding counts, and shared afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TiktokenCounter {
    encoding: Encoding,
}

impl TiktokenCounter {
    /// A counter for `encoding`.
    pub fn new(encoding: Encoding) -> Self {
        Self { encoding }
    }

    /// A counter for `model`, if it is an OpenAI model (see [`Encoding::for_model`]).
    pub fn for_model(model: &str) -> Option<Self> {
        Encoding::for_model(model).map(Self::new)
    }

    /// The encoding this counter uses.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
}

impl TokenCounter for TiktokenCounter {
    fn count_text(&self, text: &str) -> usize {
        // Ordinary encoding: text that spells a special token (`<|endoftext|>`) is sent as
        // text by the API, so it is counted as text.
        self.encoding.bpe().count_ordinary(text)
    }
}

/// An estimate for models whose tokenizer Fusion does not ship: one token per 4 bytes of
/// UTF-8, rounded up, plus the usual per-message overhead.
///
/// Close for English prose and code with Llama-, Mistral- or Qwen-family tokenizers; it
/// undercounts text in scripts that take 3 bytes per character (Chinese, Japanese), so
/// leave headroom in a budget for such conversations, or plug in an exact
/// [`TokenCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EstimateCounter;

impl TokenCounter for EstimateCounter {
    fn count_text(&self, text: &str) -> usize {
        text.len().div_ceil(4)
    }
}

/// The best counter for `model`: [`TiktokenCounter`] for OpenAI models, else
/// [`EstimateCounter`]. Sessions use this unless given another counter.
pub fn counter_for_model(model: &str) -> Arc<dyn TokenCounter> {
    match TiktokenCounter::for_model(model) {
        Some(counter) => Arc::new(counter),
        None => Arc::new(EstimateCounter),
    }
}

impl fmt::Debug for dyn TokenCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCounter")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusion_core::ToolCall;
    use tiktoken_rs::{ChatCompletionRequestMessage, FunctionCall, num_tokens_from_messages};

    #[test]
    fn models_map_to_their_encodings() {
        use Encoding::*;
        for (model, expected) in [
            ("gpt-4o", Some(O200kBase)),
            ("gpt-4o-mini", Some(O200kBase)),
            ("GPT-4o-2024-08-06", Some(O200kBase)),
            ("openai/gpt-4.1-mini", Some(O200kBase)),
            ("gpt-4.1", Some(O200kBase)),
            ("o1", Some(O200kBase)),
            ("o3-mini", Some(O200kBase)),
            ("gpt-4", Some(Cl100kBase)),
            ("gpt-4-turbo", Some(Cl100kBase)),
            ("gpt-3.5-turbo", Some(Cl100kBase)),
            ("llama3.2", None),
            ("qwen2.5:7b", None),
            ("mock-model", None),
            ("davinci", None),
        ] {
            assert_eq!(Encoding::for_model(model), expected, "{model}");
        }
    }

    #[test]
    fn encodings_differ_where_the_models_do() {
        let text = "Fusion gives LLM agents persistent multi-turn sessions. こんにちは";
        let o200k = TiktokenCounter::new(Encoding::O200kBase).count_text(text);
        let cl100k = TiktokenCounter::new(Encoding::Cl100kBase).count_text(text);
        assert_ne!(o200k, cl100k);
        assert_eq!(TiktokenCounter::new(Encoding::O200kBase).count_text(""), 0);
    }

    /// Cross-checks the overhead formula against tiktoken-rs's port of the cookbook.
    #[test]
    fn message_counts_match_the_cookbook() {
        let ours = [
            ChatMessage::system("You are terse."),
            ChatMessage::user("Read notes.txt please").with_name("alice"),
            ChatMessage::assistant_with_tool_calls(
                "Reading it.",
                vec![ToolCall::new("c1", "read_file", r#"{"path":"notes.txt"}"#)],
            ),
            ChatMessage::tool_result("c1", "hello world, twice: hello world"),
        ];
        let theirs: Vec<ChatCompletionRequestMessage> = ours
            .iter()
            .map(|m| ChatCompletionRequestMessage {
                role: m.role.as_str().to_owned(),
                content: Some(m.content.clone()),
                name: m.name.clone(),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|c| FunctionCall {
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        for model in ["gpt-4o", "gpt-4"] {
            let counter = counter_for_model(model);
            assert_eq!(
                count_request(counter.as_ref(), &ours),
                num_tokens_from_messages(model, &theirs).unwrap(),
                "{model}"
            );
        }
    }

    #[test]
    fn the_estimate_is_a_quarter_of_the_bytes_rounded_up() {
        assert_eq!(EstimateCounter.count_text(""), 0);
        assert_eq!(EstimateCounter.count_text("abcde"), 2);
        let message = ChatMessage::user("x".repeat(400));
        assert_eq!(
            EstimateCounter.count_message(&message),
            TOKENS_PER_MESSAGE + 1 + 100
        );
    }
}
