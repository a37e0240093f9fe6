//! What `fusion chat` shows while a turn runs: the spinner, and one line per tool call as
//! it starts and as it finishes, printed above the spinner.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusion::agent::{AgentEvent, Step};
use indicatif::{ProgressBar, ProgressStyle};

/// The longest argument or output excerpt shown on one line, in characters.
const EXCERPT_CHARS: usize = 200;

/// The observer that prints each tool call as it starts (`  -> tool(args)`) and its
/// output as it finishes (`     <- first line`), above the turn's spinner.
///
/// `spinner` holds the running turn's spinner; the turn swaps in a new one each time.
pub fn show_event(spinner: Arc<Mutex<ProgressBar>>) -> impl Fn(&AgentEvent<'_>) + Send + Sync {
    move |event| {
        let line = match event {
            AgentEvent::ToolCallStarted {
                tool, arguments, ..
            } => format!("  -> {tool}({})", shorten(arguments, EXCERPT_CHARS)),
            AgentEvent::ToolCallFinished(step) => result_line(step),
            _ => return,
        };
        let spinner = spinner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        spinner.suspend(|| println!("{line}"));
    }
}

/// `     <- first line of the output (+N lines)`, marked when the call failed.
fn result_line(step: &Step) -> String {
    let mut output = step.observation.lines();
    let first = shorten(output.next().unwrap_or(""), EXCERPT_CHARS);
    let more = output.count();
    let more = if more > 0 {
        format!(" (+{more} lines)")
    } else {
        String::new()
    };
    let failed = if step.success { "" } else { " [failed]" };
    format!("     <- {first}{more}{failed}")
}

/// `text` cut to `max_chars` characters, with `…` when something was cut.
fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A spinner on stdout while the model thinks, only when a person is watching.
pub fn spinner() -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        spinner.set_style(style);
    }
    spinner.set_message("thinking…");
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_on_characters_and_marks_the_cut() {
        assert_eq!(shorten("héllo", 10), "héllo");
        assert_eq!(shorten("héllo", 2), "hé…");
    }
}
