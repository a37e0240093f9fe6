//! The text ReAct format, for models without native tool calling: the prompt section that
//! teaches it, and a tolerant parser for what models actually write back.
//!
//! With native tool calling (the default, see [`OpenAiClient`](crate::OpenAiClient)) tools
//! travel in the API's `tools` field and calls come back as structured `tool_calls`.
//! Models that lack it are told the format in the system prompt instead
//! ([`render_react_prompt`]) and answer in plain text:
//!
//! ```text
//! Thought: I need the file's contents.
//! Action: read_file
//! Action Input: {"path": "notes.txt"}
//! ```
//!
//! [`parse_react`] turns such a reply into a [`ReactStep`]. Small local models are sloppy,
//! so it accepts prose around the block, any letter case, markdown bold and headings, the
//! full-width colon (`Final Answer：`), code fences around the input or the whole reply, a
//! missing `Action Input` (meaning `{}`), and multi-line final answers. It cuts off any `Observation:` the model invents (observations come
//! from tools), and when a reply holds both an action and a final answer, the earliest wins.
//!
//! ```
//! use fusion_agent::{parse_react, ReactStep};
//!
//! let step = parse_react("**Action:** read_file\nAction Input: ```json\n{\"path\": \"a\"}\n```");
//! assert_eq!(step, ReactStep::Action {
//!     thought: String::new(),
//!     tool: "read_file".into(),
//!     input: r#"{"path": "a"}"#.into(),
//! });
//! ```

mod answer_stream;
mod parse;

use std::fmt::Write as _;

pub(crate) use self::answer_stream::FinalAnswerStream;
pub use self::parse::{ReactStep, parse_react};
pub(crate) use self::parse::{is_final_answer_tool, parse_react_calling};
use crate::llm::ToolDefinition;

/// The system-prompt section describing `tools` and the reply format.
///
/// Each tool is listed with its description and JSON Schema. Deterministic: the same
/// tools give the same text, so prompt caches on the server keep working.
pub fn render_react_prompt(tools: &[ToolDefinition]) -> String {
    let mut out = String::new();
    if tools.is_empty() {
        out.push_str("No tools are available. Answer in this format:\n\n");
        out.push_str(FINAL_FORMAT);
        return out;
    }
    out.push_str("You can use these tools:\n\n");
    for tool in tools {
        let schema = serde_json::to_string(&tool.parameters).unwrap_or_else(|_| "{}".into());
        let _ = writeln!(out, "- {}: {}", tool.name, tool.description.trim());
        let _ = writeln!(out, "  Input schema: {schema}");
    }
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    let _ = write!(
        out,
        "\nTo use a tool, reply in exactly this format, then stop:\n\n\
         Thought: what you need to do next, and why\n\
         Action: the tool's name, one of [{}]\n\
         Action Input: the tool's arguments as one JSON object matching its input schema\n\n\
         The tool's result comes back in the next message, starting with \"{}\". \
         Never write an Observation yourself, and use one tool per reply.\n\n\
         When you can answer without another tool, reply in this format:\n\n",
        names.join(", "),
        OBSERVATION_PREFIX.trim_end()
    );
    out.push_str(FINAL_FORMAT);
    out
}

const FINAL_FORMAT: &str = "Thought: why you can answer now\n\
                            Final Answer: your complete answer for the user\n";

/// The message text that carries a tool's output back to the model.
pub fn render_observation(output: &str) -> String {
    format!("{OBSERVATION_PREFIX}{output}")
}

/// How an observation (tool output sent back as a user message) begins: written by
/// [`render_observation`], recognised by the context policies.
pub(crate) const OBSERVATION_PREFIX: &str = "Observation: ";

/// How the observation the loop sends back for a reply it could not read begins, after
/// [`OBSERVATION_PREFIX`]: what tells it from a user's message that starts the same way.
pub(crate) const UNREADABLE_REPLY: &str = "Error: your reply could not be read: ";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_prompt_lists_every_tool_with_its_schema_and_the_format() {
        let tools = vec![
            ToolDefinition {
                name: "read_file".into(),
                description: "Reads a file.".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            },
            ToolDefinition {
                name: "list_files".into(),
                description: "Lists files.".into(),
                parameters: json!({"type": "object"}),
            },
        ];
        let prompt = render_react_prompt(&tools);
        for needle in [
            "- read_file: Reads a file.",
            r#"{"properties":{"path":{"type":"string"}},"type":"object"}"#,
            "one of [read_file, list_files]",
            "Thought:",
            "Action:",
            "Action Input:",
            "Observation:",
            "Final Answer:",
        ] {
            assert!(prompt.contains(needle), "missing {needle:?} in:\n{prompt}");
        }
        assert_eq!(prompt, render_react_prompt(&tools), "deterministic");
        let bare = render_react_prompt(&[]);
        assert!(
            bare.contains("No tools") && bare.contains("Final Answer:"),
            "{bare}"
        );
        assert!(!bare.contains("Action:"), "{bare}");
        assert_eq!(render_observation("ok"), "Observation: ok");
    }

    #[test]
    fn the_rendered_format_example_parses() {
        // What the prompt shows must be what the parser reads.
        assert_eq!(
            parse_react(FINAL_FORMAT),
            ReactStep::FinalAnswer {
                thought: "why you can answer now".into(),
                answer: "your complete answer for the user".into(),
            }
        );
    }
}
