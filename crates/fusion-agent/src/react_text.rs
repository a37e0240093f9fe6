//! The text ReAct format, for models without native tool calling: the prompt section that
//! teaches it, and a tolerant parser for what models actually write back.
//!
//! With native tool calling (the default, see [`crate::openai`]) tools travel in the API's
//! `tools` field and calls come back as structured `tool_calls`. Models that lack it are
//! told the format in the system prompt instead ([`render_react_prompt`]) and answer in
//! plain text:
//!
//! ```text
//! Thought: I need the file's contents.
//! Action: read_file
//! Action Input: {"path": "notes.txt"}
//! ```
//!
//! [`parse_react`] turns such a reply into a [`ReactStep`]. Small local models are sloppy,
//! so it accepts prose around the block, any letter case, markdown bold and headings,
//! code fences around the input, a missing `Action Input` (meaning `{}`), and multi-line
//! final answers. It cuts off any `Observation:` the model invents (observations come
//! from tools), and when a reply holds both an action and a final answer, the earliest wins.
//!
//! ```
//! use fusion_agent::react_text::{parse_react, ReactStep};
//!
//! let step = parse_react("**Action:** read_file\nAction Input: ```json\n{\"path\": \"a\"}\n```");
//! assert_eq!(step, ReactStep::Action {
//!     thought: String::new(),
//!     tool: "read_file".into(),
//!     input: r#"{"path": "a"}"#.into(),
//! });
//! ```

use std::fmt::Write as _;

use crate::llm::ToolDefinition;

/// What a text-mode reply asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReactStep {
    /// Call `tool` with `input` (normally a JSON object; `"{}"` when the model gave none).
    Action {
        /// The reasoning before the action; empty when the model wrote none.
        thought: String,
        /// The tool's name, as the model wrote it (without decoration).
        tool: String,
        /// The arguments as text, with code fences and trailing prose removed.
        input: String,
    },
    /// The model's answer for the user.
    FinalAnswer {
        /// The reasoning before the answer; empty when the model wrote none.
        thought: String,
        /// The answer, possibly spanning several lines.
        answer: String,
    },
    /// Neither could be read; `reason` is written to be shown to the model so it can retry.
    Invalid {
        /// What was wrong and what a valid reply looks like.
        reason: String,
    },
}

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
         The tool's result comes back in the next message, starting with \"Observation:\". \
         Never write an Observation yourself, and use one tool per reply.\n\n\
         When you can answer without another tool, reply in this format:\n\n",
        names.join(", ")
    );
    out.push_str(FINAL_FORMAT);
    out
}

const FINAL_FORMAT: &str = "Thought: why you can answer now\n\
                            Final Answer: your complete answer for the user\n";

/// The message text that carries a tool's output back to the model.
pub fn render_observation(output: &str) -> String {
    format!("Observation: {output}")
}

/// Reads a text-mode reply. Never fails: an unreadable reply is [`ReactStep::Invalid`].
pub fn parse_react(text: &str) -> ReactStep {
    // Lines inside code fences are not scanned for labels, so an input or answer holding
    // code cannot end early. A model that fences its whole reply gets a second, fence-blind pass.
    let fenced = Parsed::scan(text, true);
    if let Some(step) = fenced.step() {
        return step;
    }
    let blind = Parsed::scan(text, false);
    if let Some(step) = blind.step() {
        return step;
    }
    let reason = if text.trim().is_empty() {
        "the reply is empty."
    } else if blind.sections.iter().any(|s| s.label == Label::Observation) {
        "the reply has an `Observation:` but no `Action:` and no `Final Answer:`; \
         observations come from the tools, never write them yourself."
    } else {
        "the reply has no `Action:` line and no `Final Answer:` line."
    };
    ReactStep::Invalid {
        reason: format!("{reason} {FORMAT_REMINDER}"),
    }
}

const FORMAT_REMINDER: &str = "Reply either with `Action: <tool name>` and \
                               `Action Input: <JSON object>` lines to use a tool, or with a \
                               `Final Answer: <answer>` line.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Thought,
    Action,
    ActionInput,
    Observation,
    FinalAnswer,
}

/// Label spellings, multi-word ones first so `Action Input` is not read as `Action`.
/// Words may be joined by spaces, `_`, `-` or nothing (`FinalAnswer`).
const LABELS: &[(&[&str], Label)] = &[
    (&["final", "answer"], Label::FinalAnswer),
    (&["action", "input"], Label::ActionInput),
    (&["thoughts"], Label::Thought),
    (&["thought"], Label::Thought),
    (&["action"], Label::Action),
    (&["observation"], Label::Observation),
];

/// One labelled part of the reply: the text after the colon plus the following lines.
struct Section {
    label: Label,
    body: String,
}

struct Parsed {
    /// Text before the first label: often the model's reasoning without a `Thought:`.
    preamble: String,
    sections: Vec<Section>,
}

impl Parsed {
    fn scan(text: &str, respect_fences: bool) -> Self {
        let mut parsed = Parsed {
            preamble: String::new(),
            sections: Vec::new(),
        };
        let mut in_fence = false;
        for line in text.lines() {
            let label = if in_fence { None } else { match_label(line) };
            if respect_fences && line.matches("```").count() % 2 == 1 {
                in_fence = !in_fence;
            }
            match label {
                Some((label, rest)) => parsed.sections.push(Section {
                    label,
                    body: rest.to_owned(),
                }),
                None => {
                    let body = match parsed.sections.last_mut() {
                        Some(section) => &mut section.body,
                        None => &mut parsed.preamble,
                    };
                    body.push('\n');
                    body.push_str(line);
                }
            }
        }
        parsed
    }

    /// The earliest usable action or final answer, if any.
    fn step(&self) -> Option<ReactStep> {
        for (i, section) in self.sections.iter().enumerate() {
            let thought = || self.thought_before(i);
            match section.label {
                Label::FinalAnswer => {
                    let answer = strip_unbalanced_bold(section.body.trim());
                    if answer.is_empty() {
                        return Some(ReactStep::Invalid {
                            reason: format!(
                                "`Final Answer:` is empty; write the answer after it. {FORMAT_REMINDER}"
                            ),
                        });
                    }
                    return Some(ReactStep::FinalAnswer {
                        thought: thought(),
                        answer,
                    });
                }
                Label::Action => {
                    let next_input = self
                        .sections
                        .get(i + 1)
                        .filter(|s| s.label == Label::ActionInput)
                        .map(|s| s.body.as_str());
                    let (tool, inline_input) = split_action(&section.body);
                    if is_no_action(&tool) {
                        // "Action: None" followed by a final answer is a common habit.
                        continue;
                    }
                    let input = extract_input(next_input.or(inline_input.as_deref()).unwrap_or(""));
                    return Some(ReactStep::Action {
                        thought: thought(),
                        tool,
                        input,
                    });
                }
                _ => {}
            }
        }
        None
    }

    /// The last `Thought:` before section `i`, or else the unlabelled preamble.
    fn thought_before(&self, i: usize) -> String {
        self.sections[..i]
            .iter()
            .rev()
            .find(|s| s.label == Label::Thought)
            .map_or(self.preamble.as_str(), |s| s.body.as_str())
            .trim()
            .to_owned()
    }
}

/// Reads `Label:` at the start of `line`, allowing markdown decoration (`**Action:**`,
/// `### Thought:`, `- Action:`), any case, and a step number (`Thought 2:`).
fn match_label(line: &str) -> Option<(Label, &str)> {
    let start = line.trim_start_matches(|c: char| c.is_whitespace() || "*_#>`-".contains(c));
    'labels: for (words, label) in LABELS {
        let mut rest = start;
        for (n, word) in words.iter().enumerate() {
            if n > 0 {
                rest = rest.trim_start_matches([' ', '\t', '_', '-']);
            }
            match rest.get(..word.len()) {
                Some(head) if head.eq_ignore_ascii_case(word) => rest = &rest[word.len()..],
                _ => continue 'labels,
            }
        }
        let rest = rest.trim_start_matches(|c: char| c == ' ' || c == '\t' || c.is_ascii_digit());
        let rest = rest.trim_start_matches(['*', '_', '`']);
        if let Some(after) = rest.strip_prefix(':') {
            return Some((*label, after.trim_start_matches(['*', '_']).trim_start()));
        }
    }
    None
}

/// The tool name from an `Action:` body, and any input written with it: on the same line
/// after `Action Input:`, as `tool({...})`, or on the lines below.
fn split_action(body: &str) -> (String, Option<String>) {
    let body = body.trim();
    let (first, below) = body.split_once('\n').unwrap_or((body, ""));
    let lower = first.to_ascii_lowercase();
    let (name, mut inline) = match lower.find("action input") {
        Some(at) => {
            let after = first[at + "action input".len()..].trim_start_matches(['*', '_', ' ']);
            let input = after.strip_prefix(':').unwrap_or(after);
            (&first[..at], Some(input.to_owned()))
        }
        None => (first, None),
    };
    let mut name = clean_name(name);
    if inline.is_none()
        && let Some(open) = name.find(['(', '['])
    {
        let close = if name.as_bytes()[open] == b'(' {
            ')'
        } else {
            ']'
        };
        if let Some(end) = name.rfind(close).filter(|&end| end > open) {
            inline = Some(name[open + 1..end].to_owned());
            name = clean_name(&name[..open]);
        }
    }
    if inline.is_none() && !below.trim().is_empty() {
        inline = Some(below.to_owned());
    }
    (name, inline)
}

/// A tool name without the decoration models add: bold, backticks, quotes, `[brackets]`,
/// trailing punctuation.
fn clean_name(raw: &str) -> String {
    let mut name = raw.trim().trim_matches(['*', '`', '"', '\'', ' ', ',']);
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        name = inner.trim();
    }
    name.trim_end_matches(['.', ':', ',', ';'])
        .trim_matches(['*', '`', '"', '\''])
        .trim()
        .to_owned()
}

fn is_no_action(tool: &str) -> bool {
    let lower = tool.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "" | "none" | "n/a" | "null" | "no action" | "nothing"
    )
}

/// The input text with fences, inline backticks and trailing prose removed; `{}` if empty.
fn extract_input(body: &str) -> String {
    let mut text = body.trim();
    if !text.starts_with(['{', '[']) {
        text = unfence(text);
    }
    let text = if text.starts_with(['{', '[']) {
        balanced_json_prefix(text).unwrap_or(text)
    } else {
        // Plain-text input: stop at a blank line or an invented observation.
        let end = text.find("\n\n").unwrap_or(text.len());
        let text = &text[..end];
        let end = text
            .to_ascii_lowercase()
            .find("observation:")
            .unwrap_or(text.len());
        &text[..end]
    };
    let text = text.trim();
    if text.is_empty() {
        "{}".to_owned()
    } else {
        text.to_owned()
    }
}

/// The content of the first code block in `text` (```` ```json ```` or single backticks),
/// or `text` itself when there is none.
fn unfence(text: &str) -> &str {
    let Some(open) = text.find("```") else {
        return match text.strip_prefix('`').and_then(|t| t.split_once('`')) {
            Some((inner, _)) => inner.trim(),
            None => text,
        };
    };
    let after = &text[open + 3..];
    let block = after.find("```").map_or(after, |end| &after[..end]);
    // A language tag (`json`) directly after the fence, then a newline or the JSON itself.
    let tag_len = block
        .find(|c: char| !(c.is_ascii_alphanumeric() || "_+-".contains(c)))
        .unwrap_or(block.len());
    let (tag, rest) = block.split_at(tag_len);
    let tagged = rest.starts_with(['\n', '\r']) || rest.trim_start().starts_with(['{', '[']);
    if !tag.is_empty() && tagged {
        rest.trim()
    } else {
        block.trim()
    }
}

/// The shortest prefix of `text` (starting with `{` or `[`) whose brackets balance,
/// ignoring brackets inside JSON strings. `None` if it never balances (a truncated reply).
fn balanced_json_prefix(text: &str) -> Option<&str> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(&text[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Drops a dangling `**` left when the model bolded a whole `**Final Answer: …**` line.
fn strip_unbalanced_bold(text: &str) -> String {
    if text.matches("**").count() % 2 == 1
        && let Some(stripped) = text.strip_suffix("**")
    {
        return stripped.trim_end().to_owned();
    }
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn action(thought: &str, tool: &str, input: &str) -> ReactStep {
        ReactStep::Action {
            thought: thought.into(),
            tool: tool.into(),
            input: input.into(),
        }
    }

    fn answer(thought: &str, answer: &str) -> ReactStep {
        ReactStep::FinalAnswer {
            thought: thought.into(),
            answer: answer.into(),
        }
    }

    fn is_invalid(step: &ReactStep) -> bool {
        matches!(step, ReactStep::Invalid { .. })
    }

    #[test]
    fn the_canonical_action_is_read() {
        let text =
            "Thought: I need the file.\nAction: read_file\nAction Input: {\"path\": \"a.txt\"}";
        assert_eq!(
            parse_react(text),
            action("I need the file.", "read_file", r#"{"path": "a.txt"}"#)
        );
    }

    #[test]
    fn the_canonical_final_answer_is_read() {
        let text = "Thought: I know it now.\nFinal Answer: 42";
        assert_eq!(parse_react(text), answer("I know it now.", "42"));
    }

    #[test]
    fn prose_before_and_after_is_ignored() {
        let text = "Sure! Let me help with that.\n\nThought: list first\nAction: list_files\n\
                    Action Input: {\"path\": \".\"}\n\nI will wait for the result.";
        assert_eq!(
            parse_react(text),
            action("list first", "list_files", r#"{"path": "."}"#)
        );
    }

    #[test]
    fn unlabelled_reasoning_becomes_the_thought() {
        let text = "I should look at the directory.\nAction: list_files\nAction Input: {}";
        assert_eq!(
            parse_react(text),
            action("I should look at the directory.", "list_files", "{}")
        );
    }

    #[test]
    fn labels_in_any_case_are_read() {
        let text = "thought: hmm\naction: READ_FILE\naction input: {\"path\":\"x\"}";
        assert_eq!(
            parse_react(text),
            action("hmm", "READ_FILE", r#"{"path":"x"}"#)
        );
        let text = "THOUGHT: done\nFINAL ANSWER: yes";
        assert_eq!(parse_react(text), answer("done", "yes"));
        let text = "Final_Answer: underscores\n";
        assert_eq!(parse_react(text), answer("", "underscores"));
        let text = "Action_Input: {}\nActionInput: {}";
        assert!(is_invalid(&parse_react(text)));
    }

    #[test]
    fn markdown_bold_and_headings_are_read() {
        let text =
            "**Thought:** check it\n**Action:** read_file\n**Action Input:** {\"path\": \"b\"}";
        assert_eq!(
            parse_react(text),
            action("check it", "read_file", r#"{"path": "b"}"#)
        );
        let text = "**Thought**: ok\n**Action**: `write_file`\n**Action Input**: {}";
        assert_eq!(parse_react(text), action("ok", "write_file", "{}"));
        let text = "### Thought: fine\n### Final Answer: It is **done**.";
        assert_eq!(parse_react(text), answer("fine", "It is **done**."));
        let text = "**Final Answer: all good**";
        assert_eq!(parse_react(text), answer("", "all good"));
        let text = "- **Action:** list_files\n- **Action Input:** {\"path\": \"/\"}";
        assert_eq!(
            parse_react(text),
            action("", "list_files", r#"{"path": "/"}"#)
        );
    }

    #[test]
    fn code_fences_around_the_input_are_removed() {
        let text = "Action: write_file\nAction Input:\n```json\n{\n  \"path\": \"a\",\n  \"content\": \"x\"\n}\n```\n";
        assert_eq!(
            parse_react(text),
            action(
                "",
                "write_file",
                "{\n  \"path\": \"a\",\n  \"content\": \"x\"\n}"
            )
        );
        let text = "Action: read_file\nAction Input: ```json\n{\"path\": \"a\"}\n```";
        assert_eq!(
            parse_react(text),
            action("", "read_file", r#"{"path": "a"}"#)
        );
        let text = "Action: read_file\nAction Input: ```{\"path\": \"a\"}```";
        assert_eq!(
            parse_react(text),
            action("", "read_file", r#"{"path": "a"}"#)
        );
        let text = "Action: read_file\nAction Input: ```json {\"path\": \"a\"}```";
        assert_eq!(
            parse_react(text),
            action("", "read_file", r#"{"path": "a"}"#)
        );
        let text = "Action: read_file\nAction Input: `{\"path\": \"a\"}`";
        assert_eq!(
            parse_react(text),
            action("", "read_file", r#"{"path": "a"}"#)
        );
    }

    #[test]
    fn labels_inside_a_fenced_input_do_not_end_it() {
        let text = "Action: write_file\nAction Input:\n```json\n{\"path\": \"notes.md\",\n\
                    \"content\": \"line one\nObservation: not a real label\nFinal Answer: neither\"}\n```";
        let ReactStep::Action { input, .. } = parse_react(text) else {
            panic!("expected an action");
        };
        assert!(input.contains("Observation: not a real label"), "{input}");
        assert!(input.contains("Final Answer: neither"), "{input}");
    }

    #[test]
    fn a_reply_fenced_as_a_whole_is_still_read() {
        let text =
            "```\nThought: wrapped\nAction: list_files\nAction Input: {\"path\": \".\"}\n```";
        assert_eq!(
            parse_react(text),
            action("wrapped", "list_files", r#"{"path": "."}"#)
        );
    }

    #[test]
    fn a_missing_action_input_means_empty_arguments() {
        assert_eq!(
            parse_react("Thought: no args\nAction: list_tools"),
            action("no args", "list_tools", "{}")
        );
        assert_eq!(
            parse_react("Action: list_tools\nAction Input:\n\nObservation: x"),
            action("", "list_tools", "{}")
        );
    }

    #[test]
    fn a_hallucinated_observation_is_cut_off() {
        let text = "Thought: read it\nAction: read_file\nAction Input: {\"path\": \"a\"}\n\
                    Observation: the file says hello\nThought: I now know\nFinal Answer: hello";
        assert_eq!(
            parse_react(text),
            action("read it", "read_file", r#"{"path": "a"}"#)
        );
        let text = "Action: read_file\nAction Input: {\"path\": \"a\"} Observation: made up";
        assert_eq!(
            parse_react(text),
            action("", "read_file", r#"{"path": "a"}"#)
        );
        let text = "Action: search\nAction Input: rust books Observation: made up";
        assert_eq!(parse_react(text), action("", "search", "rust books"));
        let text = "Final Answer: done\nObservation: invented";
        assert_eq!(parse_react(text), answer("", "done"));
    }

    #[test]
    fn an_echoed_observation_before_the_step_is_ignored() {
        let text =
            "Observation: 3 files\nThought: that is enough\nFinal Answer: There are 3 files.";
        assert_eq!(
            parse_react(text),
            answer("that is enough", "There are 3 files.")
        );
    }

    #[test]
    fn a_final_answer_may_span_lines() {
        let text =
            "Thought: summarise\nFinal Answer: The files are:\n- a.txt\n- b.txt\n\nThat is all.";
        assert_eq!(
            parse_react(text),
            answer(
                "summarise",
                "The files are:\n- a.txt\n- b.txt\n\nThat is all."
            )
        );
        let text =
            "Final Answer:\nHere is code:\n```rust\nfn main() {}\nAction: not a label\n```\nEnjoy.";
        assert_eq!(
            parse_react(text),
            answer(
                "",
                "Here is code:\n```rust\nfn main() {}\nAction: not a label\n```\nEnjoy."
            )
        );
    }

    #[test]
    fn the_earliest_of_action_and_final_answer_wins() {
        let text = "Final Answer: first\nAction: read_file\nAction Input: {}";
        assert_eq!(parse_react(text), answer("", "first"));
        let text = "Action: read_file\nAction Input: {}\nFinal Answer: too early";
        assert_eq!(parse_react(text), action("", "read_file", "{}"));
    }

    #[test]
    fn action_none_defers_to_the_final_answer() {
        let text = "Thought: I know\nAction: None\nFinal Answer: 7";
        assert_eq!(parse_react(text), answer("I know", "7"));
        assert!(is_invalid(&parse_react("Action: N/A")));
    }

    #[test]
    fn decorated_tool_names_are_cleaned() {
        for raw in [
            "`read_file`",
            "[read_file]",
            "\"read_file\"",
            "read_file.",
            "**read_file**",
        ] {
            let step = parse_react(&format!("Action: {raw}\nAction Input: {{}}"));
            assert_eq!(step, action("", "read_file", "{}"), "{raw}");
        }
    }

    #[test]
    fn inline_and_call_style_inputs_are_read() {
        let text = "Action: read_file, Action Input: {\"path\": \"a\"}";
        assert_eq!(
            parse_react(text),
            action("", "read_file", r#"{"path": "a"}"#)
        );
        let text = "Action: read_file({\"path\": \"a\"})";
        assert_eq!(
            parse_react(text),
            action("", "read_file", r#"{"path": "a"}"#)
        );
        let text = "Action: read_file\n{\"path\": \"a\"}";
        assert_eq!(
            parse_react(text),
            action("", "read_file", r#"{"path": "a"}"#)
        );
        let text = "Thought 1: step\nAction 1: read_file\nAction Input 1: {}";
        assert_eq!(parse_react(text), action("step", "read_file", "{}"));
    }

    #[test]
    fn json_input_keeps_braces_inside_strings_and_drops_trailing_prose() {
        let text = "Action: write_file\nAction Input: {\"path\": \"a\", \"content\": \"} \\\" {\"} and then I wait";
        assert_eq!(
            parse_react(text),
            action("", "write_file", r#"{"path": "a", "content": "} \" {"}"#)
        );
        // A truncated object is kept whole so the tool can report the invalid JSON.
        let text = "Action: write_file\nAction Input: {\"path\": \"a\"";
        assert_eq!(
            parse_react(text),
            action("", "write_file", r#"{"path": "a""#)
        );
    }

    #[test]
    fn unreadable_replies_are_invalid_with_a_reason_for_the_model() {
        for text in [
            "",
            "   \n",
            "I think the answer is 42.",
            "Observation: I made this up",
        ] {
            let ReactStep::Invalid { reason } = parse_react(text) else {
                panic!("expected invalid for {text:?}");
            };
            assert!(reason.contains("Final Answer:"), "{reason}");
        }
        let ReactStep::Invalid { reason } = parse_react("Observation: x") else {
            unreachable!()
        };
        assert!(reason.contains("never write them yourself"), "{reason}");
        let ReactStep::Invalid { reason } = parse_react("Thought: hm\nFinal Answer:   ") else {
            panic!("an empty final answer is invalid");
        };
        assert!(reason.contains("empty"), "{reason}");
    }

    #[test]
    fn prose_words_that_resemble_labels_are_not_labels() {
        let text = "Final Answer: Action items:\n- call Bob\nThoughtful note: none";
        assert_eq!(
            parse_react(text),
            answer("", "Action items:\n- call Bob\nThoughtful note: none")
        );
    }

    #[test]
    fn windows_line_endings_are_read() {
        let text = "Thought: crlf\r\nAction: read_file\r\nAction Input: {\"path\": \"a\"}\r\n";
        assert_eq!(
            parse_react(text),
            action("crlf", "read_file", r#"{"path": "a"}"#)
        );
    }

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
        let step =
            parse_react("Thought: why you can answer now\nFinal Answer: your complete answer");
        assert_eq!(
            step,
            answer("why you can answer now", "your complete answer")
        );
    }
}
