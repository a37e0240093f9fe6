//! The slash commands of `fusion chat` (`/help`, `/history`, `/sessions`, `/undo`,
//! `/summarize`, `/clear`, `/exit` or `/quit`): everything typed at the prompt that is not
//! sent to the model. A line starting with `//` is a message, sent with one slash less.

use std::borrow::Cow;

use anyhow::{Context, Result};
use fusion::agent::ApprovalMode;

use super::events::spinner;
use super::{Chat, Flow};
use crate::{listing, render};

const HELP: &str = "\
commands:
  /help          show this help
  /history       show how many messages the session holds
  /tools         list the tools the agent can call, and which ask before they run
  /sessions      list the newest sessions in this storage, or of this owner (* marks this one)
  /undo          remove your last message and everything the agent did after it
  /summarize [N] summarize all but the last N messages for the model (default 10; stored history is kept)
  /clear         delete this session's whole history
  /exit, /quit   leave (Ctrl-D works too)
anything else is sent to the agent; to send a line starting with /, type one more:
  //help me      sends \"/help me\"";

/// How many recent messages `/summarize` without an argument leaves as they are.
const DEFAULT_KEEP: usize = 10;

/// What a line read at the prompt asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Typed<'a> {
    /// Nothing but blanks: nothing is sent, nothing runs.
    Blank,
    /// A slash command, without its slash (`undo`, `summarize 4`).
    Command(&'a str),
    /// A message for the model, as typed: a pasted code block keeps its indentation.
    Message(Cow<'a, str>),
}

/// Sorts a line (its terminator already removed) into a command, a message or nothing.
/// A command is recognised with the blanks around it ignored (`  /undo ` undoes); a
/// message keeps its leading and trailing blanks, and `//` escapes a message that starts
/// with a slash (`//help me` sends "/help me", `  //x` sends "  /x").
pub(super) fn typed(line: &str) -> Typed<'_> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Typed::Blank;
    }
    match trimmed.strip_prefix('/') {
        Some(rest) if rest.starts_with('/') => {
            let slash = line.len() - line.trim_start().len();
            Typed::Message(Cow::Owned(format!(
                "{}{}",
                &line[..slash],
                &line[slash + 1..]
            )))
        }
        Some(command) => Typed::Command(command),
        None => Typed::Message(Cow::Borrowed(line)),
    }
}

impl Chat {
    /// Runs `/command` (given without its slash). A command that takes no argument and is
    /// given one is refused and does nothing: `/clear all` clears nothing, `/exit now`
    /// leaves nothing, rather than each running as if the words were not there.
    pub(super) async fn command(&mut self, command: &str) -> Result<Flow> {
        let (name, arg) = command
            .split_once(char::is_whitespace)
            .unwrap_or((command, ""));
        let arg = arg.trim();
        let id = &self.id;
        let no_argument = || match arg.is_empty() {
            true => Ok(()),
            false => Err(anyhow::anyhow!(
                "/{name} takes no argument, and {arg:?} was given: nothing done; type /{name} \
                 alone (/help lists the commands)"
            )),
        };
        match name {
            "exit" | "quit" => {
                no_argument()?;
                return Ok(Flow::Exit);
            }
            "help" => {
                no_argument()?;
                render::say(HELP)?
            }
            "history" => {
                no_argument()?;
                // Another front end may have written since this chat's last turn.
                self.session
                    .catch_up()
                    .await
                    .with_context(|| format!("cannot read session {id}"))?;
                render::say(format_args!(
                    "{} in session {id}",
                    render::plural(self.session.message_count(), "message")
                ))?;
            }
            "clear" => {
                no_argument()?;
                self.session.clear_history().await?;
                render::say(format_args!("cleared session {id}"))?;
            }
            "sessions" => {
                no_argument()?;
                let owner = self.session.owner();
                listing::print_table(self.storage.as_ref(), &self.storage_type, owner, id).await?
            }
            "undo" => {
                no_argument()?;
                self.undo().await?
            }
            "tools" => {
                no_argument()?;
                self.list_tools()?
            }
            "summarize" => {
                let keep = if arg.is_empty() {
                    DEFAULT_KEEP
                } else {
                    arg.parse::<usize>()
                        .with_context(|| format!("/summarize takes a message count, not {arg:?}"))?
                };
                self.summarize(keep).await?;
            }
            other => anyhow::bail!("unknown command /{other}; /help lists the commands"),
        }
        Ok(Flow::Continue)
    }

    /// One line per tool: its name, whether a call asks first or is refused, and the
    /// first line of its description.
    fn list_tools(&self) -> std::io::Result<()> {
        let tools = self.session.tools().all();
        if tools.is_empty() {
            return render::say("no tools");
        }
        let width = tools.iter().map(|t| t.name().len()).max().unwrap_or(0);
        for tool in tools {
            let mode = match self.approval.mode_for(tool.as_ref()) {
                ApprovalMode::Auto => "",
                ApprovalMode::Ask => "[asks first]",
                ApprovalMode::Deny => "[refused]",
            };
            let about = tool.description().lines().next().unwrap_or("");
            render::say(format_args!(
                "  {:<width$}  {mode:<12}  {}",
                tool.name(),
                render::shorten(about, 80)
            ))?;
        }
        Ok(())
    }

    /// Removes the last user message and everything after it, from storage too.
    async fn undo(&mut self) -> Result<()> {
        match self.session.undo_last_turn().await? {
            0 => render::say("nothing to undo")?,
            removed => render::say(format_args!(
                "undid your last message ({} removed)",
                render::plural(removed, "message")
            ))?,
        }
        Ok(())
    }

    /// Condenses all but the last `keep` visible messages into a stored summary, which
    /// the model then sees instead of them; the stored history keeps every message.
    async fn summarize(&mut self, keep: usize) -> Result<()> {
        let spinner = spinner();
        let report = self.session.summarize_history(keep).await;
        spinner.finish_and_clear();
        match report? {
            None => render::say(format_args!(
                "nothing to summarize: the model already sees at most {keep} messages besides any summary"
            ))?,
            Some(report) => {
                render::say(format_args!(
                    "summarized {} for the model (stored history is kept):",
                    render::plural(report.summarized, "message")
                ))?;
                render::say(render::printable(&report.summary))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Typed, typed};

    #[test]
    fn a_message_keeps_its_blanks_and_a_command_is_found_inside_them() {
        assert_eq!(
            typed("    let x = 1;  "),
            Typed::Message("    let x = 1;  ".into())
        );
        assert_eq!(
            typed("\tfn main() {}"),
            Typed::Message("\tfn main() {}".into())
        );
        assert_eq!(typed("  /undo \t"), Typed::Command("undo"));
        assert_eq!(typed("/summarize 4"), Typed::Command("summarize 4"));
        assert_eq!(typed("//help me "), Typed::Message("/help me ".into()));
        assert_eq!(typed("  //x"), Typed::Message("  /x".into()));
        assert_eq!(typed(""), Typed::Blank);
        assert_eq!(typed(" \t "), Typed::Blank);
    }
}
