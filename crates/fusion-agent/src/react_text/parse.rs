//! The parser of text ReAct replies: labelled sections found line by line (outside code
//! fences), then the earliest usable action or final answer, with the decoration small
//! models add removed.

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

/// Reads a text-mode reply. Never fails: an unreadable reply is [`ReactStep::Invalid`].
///
/// `Action: Final Answer` (LangChain's way of ending) is read as the final answer; a
/// session with a tool of that name calls the tool instead.
pub fn parse_react(text: &str) -> ReactStep {
    parse_react_calling(text, |_| false)
}

/// [`parse_react`] for a session whose tools are known: an `Action:` naming the final
/// answer calls the tool of that name when `is_tool` says there is one (smolagents'
/// agents register `final_answer` as a tool), and ends the turn only when there is not.
pub(crate) fn parse_react_calling(text: &str, is_tool: impl Fn(&str) -> bool) -> ReactStep {
    // Lines inside code fences are not scanned for labels, so an input or answer holding
    // code cannot end early. A model that fences its whole reply gets a second, fence-blind pass.
    let fenced = Parsed::scan(text, true);
    if let Some(step) = fenced.step(&is_tool) {
        return step;
    }
    let blind = Parsed::scan(text, false);
    if let Some(step) = blind.step(&is_tool) {
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
pub(super) enum Label {
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
    /// Read without regard to code fences: the reply fenced as a whole.
    fence_blind: bool,
}

impl Parsed {
    fn scan(text: &str, respect_fences: bool) -> Self {
        let mut parsed = Parsed {
            preamble: String::new(),
            sections: Vec::new(),
            fence_blind: !respect_fences,
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
    fn step(&self, is_tool: &impl Fn(&str) -> bool) -> Option<ReactStep> {
        for (i, section) in self.sections.iter().enumerate() {
            let thought = || self.thought_before(i);
            match section.label {
                Label::FinalAnswer => return Some(self.final_answer(i, &section.body)),
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
                    let input = next_input.or(inline_input.as_deref()).unwrap_or("");
                    if is_final_answer_tool(&tool) && !is_tool(&tool) {
                        return Some(self.final_answer(i, &unquote(input)));
                    }
                    let input = extract_input(input);
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

    /// The final answer `body` gives, written in section `i`; [`ReactStep::Invalid`] when
    /// it is empty.
    fn final_answer(&self, i: usize, body: &str) -> ReactStep {
        let mut answer = body.trim();
        if self.fence_blind {
            answer = strip_dangling_fence(answer);
        }
        let answer = strip_unbalanced_bold(answer);
        if answer.is_empty() {
            return ReactStep::Invalid {
                reason: format!(
                    "`Final Answer:` is empty; write the answer after it. {FORMAT_REMINDER}"
                ),
            };
        }
        ReactStep::FinalAnswer {
            thought: self.thought_before(i),
            answer,
        }
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

/// What ends a label: the colon, or the full-width one (U+FF1A).
pub(super) const COLONS: [char; 2] = [':', '\u{ff1a}'];

/// Reads `Label:` at the start of `line`, allowing markdown decoration (`**Action:**`,
/// `### Thought:`, `- Action:`), any case, a step number (`Thought 2:`), and the
/// full-width colon (`Final Answer：`) that models writing Chinese or Japanese put there.
pub(super) fn match_label(line: &str) -> Option<(Label, &str)> {
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
        if let Some(after) = rest.strip_prefix(COLONS) {
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
            let input = after.strip_prefix(COLONS).unwrap_or(after);
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

/// What may follow a tool name as punctuation: ASCII, and the full-width and ideographic
/// forms (`read_file，`, `read_file。`) models writing Chinese or Japanese put there.
const NAME_END_PUNCTUATION: [char; 10] = [
    '.', ':', ',', ';', '\u{ff0e}', '\u{ff1a}', '\u{ff0c}', '\u{ff1b}', '\u{3002}', '\u{3001}',
];

/// A tool name without the decoration models add: bold, backticks, quotes, `[brackets]`,
/// trailing punctuation.
fn clean_name(raw: &str) -> String {
    let mut name = raw.trim().trim_matches(['*', '`', '"', '\'', ' ', ',']);
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        name = inner.trim();
    }
    name.trim_end_matches(|c: char| NAME_END_PUNCTUATION.contains(&c) || c.is_whitespace())
        .trim_matches(['*', '`', '"', '\''])
        .trim()
        .to_owned()
}

/// Whether an `Action:` names the final answer (`Action: Final Answer`, LangChain's way
/// of ending), whose `Action Input` is then the answer.
pub(crate) fn is_final_answer_tool(tool: &str) -> bool {
    let joined = tool.replace([' ', '_', '-'], "");
    joined.eq_ignore_ascii_case("finalanswer")
}

/// `input` without its JSON string quoting, when it is one JSON string (LangChain's
/// agents write the final answer's input so); otherwise `input` as it is.
fn unquote(input: &str) -> String {
    serde_json::from_str::<String>(input.trim()).unwrap_or_else(|_| input.to_owned())
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

/// Drops a last line that is only a code fence closing nothing in the answer: the end of
/// the fence a model wrapped its whole reply in, opened before the `Final Answer:` label.
/// For the fence-blind pass, which reads such replies (and whose answer was never
/// streamed: the stream reads labels outside fences only). Left in, the answer the user
/// reads would end by opening a code block.
fn strip_dangling_fence(text: &str) -> &str {
    if text.matches("```").count().is_multiple_of(2) {
        return text;
    }
    // An answer of one line is that line (the wrapper's fence, for an empty answer).
    let (answer, last) = text.rsplit_once('\n').unwrap_or(("", text));
    if last.trim() == "```" {
        answer.trim_end()
    } else {
        text
    }
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
    use super::*;

    fn action(thought: &str, tool: &str, input: &str) -> Expect {
        Expect::Step(ReactStep::Action {
            thought: thought.into(),
            tool: tool.into(),
            input: input.into(),
        })
    }

    fn answer(thought: &str, answer: &str) -> Expect {
        Expect::Step(ReactStep::FinalAnswer {
            thought: thought.into(),
            answer: answer.into(),
        })
    }

    /// What one reply must parse to.
    enum Expect {
        /// Exactly this step.
        Step(ReactStep),
        /// [`ReactStep::Invalid`] whose reason holds this text and the format reminder.
        Invalid(&'static str),
    }

    /// Every reply shape the parser must read, as (name, reply, expected step).
    fn cases() -> Vec<(&'static str, &'static str, Expect)> {
        vec![
            // The canonical format.
            (
                "canonical action",
                "Thought: I need the file.\nAction: read_file\nAction Input: {\"path\": \"a.txt\"}",
                action("I need the file.", "read_file", r#"{"path": "a.txt"}"#),
            ),
            (
                "canonical final answer",
                "Thought: I know it now.\nFinal Answer: 42",
                answer("I know it now.", "42"),
            ),
            // Prose around the block.
            (
                "prose before and after is ignored",
                "Sure! Let me help with that.\n\nThought: list first\nAction: list_files\n\
                 Action Input: {\"path\": \".\"}\n\nI will wait for the result.",
                action("list first", "list_files", r#"{"path": "."}"#),
            ),
            (
                "unlabelled reasoning becomes the thought",
                "I should look at the directory.\nAction: list_files\nAction Input: {}",
                action("I should look at the directory.", "list_files", "{}"),
            ),
            (
                "prose words that resemble labels are not labels",
                "Final Answer: Action items:\n- call Bob\nThoughtful note: none",
                answer("", "Action items:\n- call Bob\nThoughtful note: none"),
            ),
            // Letter case and word joining.
            (
                "lowercase labels",
                "thought: hmm\naction: READ_FILE\naction input: {\"path\":\"x\"}",
                action("hmm", "READ_FILE", r#"{"path":"x"}"#),
            ),
            (
                "uppercase labels",
                "THOUGHT: done\nFINAL ANSWER: yes",
                answer("done", "yes"),
            ),
            (
                "underscore-joined final answer",
                "Final_Answer: underscores\n",
                answer("", "underscores"),
            ),
            (
                "joined action-input labels alone are no action",
                "Action_Input: {}\nActionInput: {}",
                Expect::Invalid("no `Action:` line"),
            ),
            // Markdown decoration.
            (
                "bold labels with the colon inside",
                "**Thought:** check it\n**Action:** read_file\n**Action Input:** {\"path\": \"b\"}",
                action("check it", "read_file", r#"{"path": "b"}"#),
            ),
            (
                "bold labels with the colon outside and a backticked tool",
                "**Thought**: ok\n**Action**: `write_file`\n**Action Input**: {}",
                action("ok", "write_file", "{}"),
            ),
            (
                "headings, and bold inside the answer kept",
                "### Thought: fine\n### Final Answer: It is **done**.",
                answer("fine", "It is **done**."),
            ),
            (
                "a whole bold final-answer line",
                "**Final Answer: all good**",
                answer("", "all good"),
            ),
            (
                "list items with bold labels",
                "- **Action:** list_files\n- **Action Input:** {\"path\": \"/\"}",
                action("", "list_files", r#"{"path": "/"}"#),
            ),
            // Code fences around the input.
            (
                "a json fence below the label",
                "Action: write_file\nAction Input:\n```json\n{\n  \"path\": \"a\",\n  \"content\": \"x\"\n}\n```\n",
                action(
                    "",
                    "write_file",
                    "{\n  \"path\": \"a\",\n  \"content\": \"x\"\n}",
                ),
            ),
            (
                "a json fence opened on the label's line",
                "Action: read_file\nAction Input: ```json\n{\"path\": \"a\"}\n```",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "a one-line fence",
                "Action: read_file\nAction Input: ```{\"path\": \"a\"}```",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "a one-line fence with a language tag",
                "Action: read_file\nAction Input: ```json {\"path\": \"a\"}```",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "single backticks",
                "Action: read_file\nAction Input: `{\"path\": \"a\"}`",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "labels inside a fenced input do not end it",
                "Action: write_file\nAction Input:\n```json\n{\"path\": \"notes.md\",\n\
                 \"content\": \"line one\nObservation: not a real label\nFinal Answer: neither\"}\n```",
                action(
                    "",
                    "write_file",
                    "{\"path\": \"notes.md\",\n\"content\": \"line one\nObservation: not a real \
                     label\nFinal Answer: neither\"}",
                ),
            ),
            (
                "a final answer fenced as a whole reply ends without the fence",
                "```\nThought: wrapped\nFinal Answer: It is done.\n```",
                answer("wrapped", "It is done."),
            ),
            (
                "a final answer in a reply fenced with a language tag",
                "```text\nThought: tagged\nFinal Answer: line one\nline two\n```\n",
                answer("tagged", "line one\nline two"),
            ),
            (
                "a final answer ending with its own code block keeps the fence",
                "```\nThought: code\nFinal Answer: run this:\n```sh\nls\n```\n```",
                answer("code", "run this:\n```sh\nls\n```"),
            ),
            (
                "full-width colons after the labels",
                "Thought\u{ff1a}\u{8981}\u{8bfb}\nAction\u{ff1a} read_file\nAction Input\u{ff1a}{\"path\": \"a\"}",
                action("\u{8981}\u{8bfb}", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "a full-width colon after the final answer label",
                "**Final Answer\u{ff1a}** \u{5df4}\u{9ece}\u{3002}",
                answer("", "\u{5df4}\u{9ece}\u{3002}"),
            ),
            (
                "a full-width colon after the input on the action's line",
                "Action: read_file, Action Input\u{ff1a} {\"path\": \"a\"}",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "a reply fenced as a whole",
                "```\nThought: wrapped\nAction: list_files\nAction Input: {\"path\": \".\"}\n```",
                action("wrapped", "list_files", r#"{"path": "."}"#),
            ),
            // A missing input means empty arguments.
            (
                "no action input line",
                "Thought: no args\nAction: list_tools",
                action("no args", "list_tools", "{}"),
            ),
            (
                "an empty action input before an observation",
                "Action: list_tools\nAction Input:\n\nObservation: x",
                action("", "list_tools", "{}"),
            ),
            // Invented observations.
            (
                "an observation on its own line is cut off",
                "Thought: read it\nAction: read_file\nAction Input: {\"path\": \"a\"}\n\
                 Observation: the file says hello\nThought: I now know\nFinal Answer: hello",
                action("read it", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "an observation after json input on the same line is cut off",
                "Action: read_file\nAction Input: {\"path\": \"a\"} Observation: made up",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "an observation after plain input on the same line is cut off",
                "Action: search\nAction Input: rust books Observation: made up",
                action("", "search", "rust books"),
            ),
            (
                "an observation after a final answer is cut off",
                "Final Answer: done\nObservation: invented",
                answer("", "done"),
            ),
            (
                "an echoed observation before the step is ignored",
                "Observation: 3 files\nThought: that is enough\nFinal Answer: There are 3 files.",
                answer("that is enough", "There are 3 files."),
            ),
            // Multi-line final answers.
            (
                "a final answer spanning lines and a blank line",
                "Thought: summarise\nFinal Answer: The files are:\n- a.txt\n- b.txt\n\nThat is all.",
                answer(
                    "summarise",
                    "The files are:\n- a.txt\n- b.txt\n\nThat is all.",
                ),
            ),
            (
                "a final answer holding a code block with a label in it",
                "Final Answer:\nHere is code:\n```rust\nfn main() {}\nAction: not a label\n```\nEnjoy.",
                answer(
                    "",
                    "Here is code:\n```rust\nfn main() {}\nAction: not a label\n```\nEnjoy.",
                ),
            ),
            // Action against final answer.
            (
                "a final answer before an action wins",
                "Final Answer: first\nAction: read_file\nAction Input: {}",
                answer("", "first"),
            ),
            (
                "an action before a final answer wins",
                "Action: read_file\nAction Input: {}\nFinal Answer: too early",
                action("", "read_file", "{}"),
            ),
            (
                "action none defers to the final answer",
                "Thought: I know\nAction: None\nFinal Answer: 7",
                answer("I know", "7"),
            ),
            (
                "action n/a alone is no action",
                "Action: N/A",
                Expect::Invalid("no `Action:` line"),
            ),
            // LangChain's final answer: an action named `Final Answer`.
            (
                "an action named final answer ends the turn with its input",
                "Thought: I know it\nAction: Final Answer\nAction Input: Paris is the capital.",
                answer("I know it", "Paris is the capital."),
            ),
            (
                "an action named final answer with a json string input",
                "Action: `Final Answer`\nAction Input: \"It is \\\"42\\\".\\nTruly.\"",
                answer("", "It is \"42\".\nTruly."),
            ),
            (
                "an action named final answer with its input on the same line",
                "Action: final_answer, Action Input: done",
                answer("", "done"),
            ),
            (
                "an action named final answer with a multi-line input",
                "Action: Final Answer\nAction Input: The files are:\n- a.txt\n- b.txt",
                answer("", "The files are:\n- a.txt\n- b.txt"),
            ),
            (
                "an action named final answer with an empty input",
                "Action: Final Answer\nAction Input: \"\"",
                Expect::Invalid("`Final Answer:` is empty"),
            ),
            // Decorated tool names.
            (
                "a backticked tool name",
                "Action: `read_file`\nAction Input: {}",
                action("", "read_file", "{}"),
            ),
            (
                "a bracketed tool name",
                "Action: [read_file]\nAction Input: {}",
                action("", "read_file", "{}"),
            ),
            (
                "a quoted tool name",
                "Action: \"read_file\"\nAction Input: {}",
                action("", "read_file", "{}"),
            ),
            (
                "a tool name with a full stop",
                "Action: read_file.\nAction Input: {}",
                action("", "read_file", "{}"),
            ),
            (
                "a tool name with a full-width comma before its input",
                "Action: read_file\u{ff0c} Action Input: {\"path\": \"a\"}",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "a tool name with trailing cjk punctuation",
                "Action\u{ff1a} read_file\u{3002}\nAction Input\u{ff1a} {}",
                action("", "read_file", "{}"),
            ),
            (
                "a tool name with an ideographic comma and semicolon",
                "Action: list_files\u{3001}\u{ff1b}\nAction Input: {}",
                action("", "list_files", "{}"),
            ),
            (
                "a bold tool name",
                "Action: **read_file**\nAction Input: {}",
                action("", "read_file", "{}"),
            ),
            // Where the input is written.
            (
                "the input on the action's line",
                "Action: read_file, Action Input: {\"path\": \"a\"}",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "a call-style input",
                "Action: read_file({\"path\": \"a\"})",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "an unlabelled input below the action",
                "Action: read_file\n{\"path\": \"a\"}",
                action("", "read_file", r#"{"path": "a"}"#),
            ),
            (
                "numbered labels",
                "Thought 1: step\nAction 1: read_file\nAction Input 1: {}",
                action("step", "read_file", "{}"),
            ),
            // JSON input boundaries.
            (
                "braces inside json strings are kept and trailing prose dropped",
                "Action: write_file\nAction Input: {\"path\": \"a\", \"content\": \"} \\\" {\"} and then I wait",
                action("", "write_file", r#"{"path": "a", "content": "} \" {"}"#),
            ),
            (
                // Kept whole so the tool can report the invalid JSON.
                "a truncated json object is kept whole",
                "Action: write_file\nAction Input: {\"path\": \"a\"",
                action("", "write_file", r#"{"path": "a""#),
            ),
            (
                "windows line endings",
                "Thought: crlf\r\nAction: read_file\r\nAction Input: {\"path\": \"a\"}\r\n",
                action("crlf", "read_file", r#"{"path": "a"}"#),
            ),
            // Unreadable replies, with a reason the model can act on.
            ("an empty reply", "", Expect::Invalid("empty")),
            ("a blank reply", "   \n", Expect::Invalid("empty")),
            (
                "prose without labels",
                "I think the answer is 42.",
                Expect::Invalid("no `Action:` line"),
            ),
            (
                "an invented observation alone",
                "Observation: I made this up",
                Expect::Invalid("never write them yourself"),
            ),
            (
                "a short invented observation alone",
                "Observation: x",
                Expect::Invalid("never write them yourself"),
            ),
            (
                "an empty final answer",
                "Thought: hm\nFinal Answer:   ",
                Expect::Invalid("`Final Answer:` is empty"),
            ),
            (
                "an empty final answer in a reply fenced as a whole",
                "```\nThought: hm\nFinal Answer:\n```",
                Expect::Invalid("`Final Answer:` is empty"),
            ),
        ]
    }

    #[test]
    fn every_reply_shape_parses_to_its_step() {
        for (name, text, expected) in cases() {
            let got = parse_react(text);
            match expected {
                Expect::Step(step) => assert_eq!(got, step, "case {name:?}: {text:?}"),
                Expect::Invalid(needle) => {
                    let ReactStep::Invalid { reason } = &got else {
                        panic!("case {name:?}: expected Invalid, got {got:?} for {text:?}");
                    };
                    assert!(reason.contains(needle), "case {name:?}: {reason}");
                    assert!(reason.contains(FORMAT_REMINDER), "case {name:?}: {reason}");
                }
            }
        }
    }
}
