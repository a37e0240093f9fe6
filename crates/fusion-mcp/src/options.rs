//! [`McpOptions`]: the timeouts and size limits every server of a set runs with, and
//! [`ToolLimit`], which of them left a tool out.

use std::time::Duration;

/// How long one `tools/call` may take unless configured otherwise: 25 s, below the
/// session's default `tool_timeout` ([`fusion_agent::DEFAULT_TOOL_TIMEOUT`], 30 s), so that
/// a server that does not answer is reported by this client, naming the server and saying
/// the call was cancelled, before the session gives up with its own, vaguer message.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// How long starting a server (spawn or connect, `initialize`, listing its tools) may take
/// unless configured otherwise. Generous because `npx -y` may first download the package.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The most text of one result shown to the model unless configured otherwise: 256 KiB.
pub const DEFAULT_MAX_OBSERVATION_BYTES: usize = 256 * 1024;

/// The longest tool description offered to the model unless configured otherwise: 1,024
/// characters, the most OpenAI takes (a longer one fails the whole request with
/// `string_above_max_length`).
pub const DEFAULT_MAX_DESCRIPTION_CHARS: usize = 1024;

/// The most tools the servers of a set offer together unless configured otherwise: 120,
/// leaving room within OpenAI's limit of 128 tools a request for the session's own (chat's
/// four file tools, a program's few).
pub const DEFAULT_MAX_TOOLS: usize = 120;

/// Settings shared by every server of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpOptions {
    /// How long one tool call may take, a restart of the server it waits for included;
    /// then it is cancelled (`notifications/cancelled`) and the model is told (a restart
    /// goes on, for a later call). Keep the session's `tool_timeout` longer (the defaults
    /// are 25 s and 30 s), or the session gives up first with its own, vaguer message:
    /// [`McpOptions::call_timeout_within`] gives a call timeout that fits a given one.
    pub call_timeout: Duration,
    /// How long starting (or restarting, in the background of the calls that wait for
    /// it) a server may take. Servers started through `npx -y` download their package on
    /// first use, which can take well over ten seconds on a slow network: raise this
    /// rather than lower it.
    pub startup_timeout: Duration,
    /// The most bytes of text one result may give the model; more is cut, with a note
    /// saying how much was cut.
    pub max_observation_bytes: usize,
    /// The longest tool description, in characters, offered to the model; a longer one is
    /// cut, ending in a note that says so. Descriptions go with every request, so this
    /// also bounds what a server's tools cost each turn. Raise it for a provider that
    /// takes longer ones.
    pub max_description_chars: usize,
    /// The most tools the servers of a set ([`McpServers`](crate::McpServers), or one
    /// [`McpServer`](crate::McpServer) started alone) offer together; a server's tools
    /// past what the others leave are not offered
    /// ([`McpServer::skipped_tools`](crate::McpServer::skipped_tools), their
    /// [`limit`](crate::SkippedTool::limit) [`ToolLimit::MaxTools`]). A request offering
    /// more tools than the provider takes is refused whole (OpenAI takes 128), so count
    /// the session's own tools too.
    pub max_tools: usize,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            call_timeout: DEFAULT_CALL_TIMEOUT,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            max_observation_bytes: DEFAULT_MAX_OBSERVATION_BYTES,
            max_description_chars: DEFAULT_MAX_DESCRIPTION_CHARS,
            max_tools: DEFAULT_MAX_TOOLS,
        }
    }
}

impl McpOptions {
    /// The call timeout to pair with a session's `tool_timeout`: 5 s less, as the defaults
    /// are (25 s and 30 s), but never less than five sixths of it, so that a short one
    /// still leaves the call most of its time (6 s gives 5 s, 3 s gives 2.5 s).
    ///
    /// Equal timeouts race: the session's wins as often as not, and its message names
    /// neither the server nor the cancelled call that this client's would.
    pub fn call_timeout_within(tool_timeout: Duration) -> Duration {
        let margin = CALL_TIMEOUT_MARGIN.min(tool_timeout / 6);
        tool_timeout.saturating_sub(margin)
    }
}

/// How much sooner than the session's `tool_timeout` a call ends at most
/// ([`McpOptions::call_timeout_within`]).
const CALL_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// The limit of [`McpOptions`] that left a tool out
/// ([`SkippedTool::limit`](crate::SkippedTool::limit)).
///
/// A tool's reason says which limit it broke, not how to raise it: that is the program's
/// to say, in its own words (chat names its flag, `--mcp-max-tools`; a program reading a
/// settings file names the setting), so this tells it which one to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ToolLimit {
    /// [`McpOptions::max_tools`]: the servers of the set offered that many tools already.
    MaxTools,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_call_timeout_ends_a_call_before_the_sessions_tool_timeout() {
        // Equal timeouts race, and the session's "abandoned" message, which names neither
        // the server nor the cancellation, often won.
        assert!(DEFAULT_CALL_TIMEOUT < fusion_agent::DEFAULT_TOOL_TIMEOUT);
        assert_eq!(McpOptions::default().call_timeout, DEFAULT_CALL_TIMEOUT);
        let within = McpOptions::call_timeout_within(fusion_agent::DEFAULT_TOOL_TIMEOUT);
        assert_eq!(within, DEFAULT_CALL_TIMEOUT);
    }

    #[test]
    fn a_call_timeout_within_a_tool_timeout_ends_first_and_keeps_most_of_it() {
        let within = |secs: u64| McpOptions::call_timeout_within(Duration::from_secs(secs));
        assert_eq!(within(90), Duration::from_secs(85));
        assert_eq!(within(6), Duration::from_secs(5));
        assert_eq!(within(3), Duration::from_millis(2500));
        for secs in [1, 2, 5, 29, 30, 31, 3600] {
            let tool_timeout = Duration::from_secs(secs);
            let call_timeout = McpOptions::call_timeout_within(tool_timeout);
            assert!(call_timeout < tool_timeout, "{secs} s");
            assert!(call_timeout * 6 >= tool_timeout * 5, "{secs} s");
        }
    }
}
