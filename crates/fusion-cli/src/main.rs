//! The `fusion` command: chat with an agent, and list, show, tag, retitle, expire, export,
//! import, delete, purge, rekey, migrate and (on Redis) watch stored sessions on any backend,
//! encrypted or not.
//!
//! This file holds the clap definitions and the dispatch; each command lives in its own
//! module. Every failure ends up in [`main`], which prints it as one line
//! (`fusion: error: ...`, with its causes) and exits non-zero, so scripts can rely on
//! stderr and the exit code.

mod chat;
mod copies;
mod files;
mod listing;
mod meta;
mod migrate;
mod rekey;
mod render;
mod retention;
mod sessions;
mod storage_url;
mod store;
#[cfg(test)]
mod testing;
mod time;
#[cfg(feature = "ui")]
mod ui;
mod usage_error;
mod variables;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use fusion::storage::MAX_PURGE_BATCH;
use tracing_subscriber::EnvFilter;

pub use storage_url::{parse_storage, storage_type};
use store::Store;

/// Chat with a Fusion agent and manage its stored sessions.
#[derive(Debug, Parser)]
#[command(name = "fusion", version, propagate_version = true)]
struct Cli {
    /// Where sessions are stored: memory://, file://DIR (or a plain path), sqlite://FILE,
    /// redis://HOST:PORT/DB, redis+cluster://HOST:PORT,HOST:PORT, postgres://USER@HOST/DB.
    /// Default: a directory under your data dir.
    #[arg(long, global = true, env = "FUSION_STORAGE", value_name = "URL")]
    storage: Option<String>,

    /// Encrypt the messages written and decrypt those read with the keys in FILE (one
    /// `ID:BASE64` per line, the current key first). Default: FUSION_ENCRYPTION_KEY (set
    /// but empty is an error: unset it to run without a key).
    #[arg(long, global = true, value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,

    /// Fail at the first storage error instead of retrying those that may pass (a dropped
    /// connection, a timeout) up to 3 more times with backoff.
    #[arg(long, global = true, env = "FUSION_NO_RETRY", value_parser = variables::no_retry)]
    no_retry: bool,

    /// Log what happens (-v info, -vv debug, -vvv trace). Without it RUST_LOG applies.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to the agent in an interactive session (reads plain lines when stdin is not a terminal).
    Chat(ChatArgs),
    /// List, show, tag, retitle, set the owner of, expire, export, import, delete, purge,
    /// rekey and watch stored sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Copy every session from one storage to another, never overwriting newer target history.
    Migrate(MigrateArgs),
    /// Serve a local web app to browse, search, edit and delete sessions and chat in them
    /// (127.0.0.1:8765 by default).
    #[cfg(feature = "ui")]
    Ui(ui::UiArgs),
}

/// Options of `fusion chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The session to open or create (default: "default").
    #[arg(long, short, value_name = "ID", default_value = "default")]
    pub session: String,
    /// The system prompt for a new session (ignored when the session already has history).
    #[arg(long, value_name = "PROMPT")]
    pub system: Option<String>,
    /// The most reasoning/tool steps the agent may take for one message.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_iterations: Option<u32>,
    /// Wait for each whole reply instead of streaming it, as `FUSION_STREAM=false` does
    /// (for servers that cannot stream; one that answers a streaming request with an error
    /// is asked without streaming anyway).
    #[arg(long)]
    pub no_stream: bool,
    /// Chat as this owner: only that owner's session can be opened, and a new session is
    /// created with it.
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<String>,
    /// The title of a new session (default: its first message, cut to one short line).
    #[arg(long, value_name = "TITLE")]
    pub title: Option<String>,
    /// A tag for a new session (repeat it, or separate tags with commas).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// A new session expires this long after the chat starts, whatever is written
    /// meanwhile (30d, 12h, 90m, 45s, 2w).
    #[arg(long, value_name = "DUR", value_parser = time::parse_span,
          conflicts_with = "expire_idle")]
    pub expire_in: Option<Duration>,
    /// A new session expires once nobody has written it for this long; every message
    /// pushes it back (30d, 12h, 90m, 45s, 2w).
    #[arg(long, value_name = "DUR", value_parser = time::parse_span)]
    pub expire_idle: Option<Duration>,
    /// Whether to ask before a tool call that changes something (writing or deleting a
    /// file, most MCP tools): ask on the terminal (the default there), run all, or refuse
    /// them all. Input from a pipe needs `all` or `none`.
    #[arg(long, value_enum, value_name = "MODE", env = "FUSION_APPROVE")]
    pub approve: Option<chat::ApproveMode>,
    /// MCP servers and their limits: --mcp-config, --mcp, --mcp-env, --mcp-max-tools,
    /// --mcp-max-description.
    #[command(flatten)]
    pub mcp: chat::McpArgs,
    /// How long one tool call may run, in whole seconds (default 30), an MCP server's
    /// restart included; then it is abandoned and the model reads that it timed out.
    #[arg(long, value_name = "SECONDS", value_parser = chat::parse_tool_timeout,
          allow_negative_numbers = true)]
    pub tool_timeout: Option<Duration>,
    /// The most bytes of one tool call's output the model is shown and the session keeps
    /// (default 1 MiB and 8 KiB); a longer one keeps its start and end around a note of
    /// what was cut. Lower it for a model with a small context window.
    #[arg(long, value_name = "BYTES", env = "FUSION_MAX_TOOL_OUTPUT_BYTES",
          value_parser = variables::max_tool_output, allow_negative_numbers = true)]
    pub max_tool_output: Option<usize>,
}

/// Options of `fusion sessions list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only sessions of this owner.
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<String>,
    /// Only sessions carrying this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Only sessions whose id or title contains TEXT (ASCII letters in either case,
    /// anything else exactly; `%` and `_` are plain characters).
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// The most sessions to print (1 to 1000); a cursor for the next page follows when
    /// there are more.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// Start after this cursor (printed at the end of the previous page).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// The order: newest first, or by id.
    #[arg(long, value_enum, default_value_t = ListOrder::Updated)]
    pub order: ListOrder,
    /// Print a JSON object {"sessions": [...], "next": CURSOR or null} instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `fusion sessions purge`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).multiple(true).args(["older_than", "expired"])))]
pub struct PurgeArgs {
    /// Delete the sessions nobody has written for this long (30d, 12h, 90m, 45s, 2w); a
    /// session written while the purge runs is kept.
    #[arg(long, value_name = "DUR", value_parser = time::parse_span)]
    pub older_than: Option<Duration>,
    /// Free the space of expired sessions, which readers stopped seeing when they expired.
    #[arg(long)]
    pub expired: bool,
    /// Only this owner's sessions (with --older-than).
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<String>,
    /// List the sessions --older-than would delete, deleting nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How many sessions each step deletes (--expired) or reads (--older-than, at most
    /// 1000 a page).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=MAX_PURGE_BATCH as i64))]
    pub batch: u32,
}

/// The new expiry `fusion sessions expire` sets: exactly one of its flags.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ExpiryChoice {
    /// Expire this long from now, whatever is written meanwhile (30d, 12h, 90m, 45s, 2w).
    #[arg(long = "in", value_name = "DUR", value_parser = time::parse_span)]
    pub expire_in: Option<Duration>,
    /// Expire at this instant, whatever is written meanwhile (2026-01-31T09:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = time::parse_rfc3339)]
    pub at: Option<SystemTime>,
    /// Expire once nobody has written the session for this long; every write pushes it
    /// back (30d, 12h, 90m, 45s, 2w).
    #[arg(long, value_name = "DUR", value_parser = time::parse_span)]
    pub idle: Option<Duration>,
    /// Never expire (removes the expiry).
    #[arg(long)]
    pub never: bool,
}

/// The orders of `sessions list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListOrder {
    /// Most recently written first.
    Updated,
    /// By session id, ascending.
    Id,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List stored sessions, newest first, a page at a time: id, message count, last
    /// update, owner, tags and title.
    List(ListArgs),
    /// Print a session's metadata and transcript: every message, tool call and tool result.
    Show {
        /// The session id.
        id: String,
    },
    /// Add tags to a session or remove them.
    Tag {
        /// The session id.
        id: String,
        /// A tag to add (repeat it, or separate tags with commas).
        #[arg(long, value_name = "TAG", value_delimiter = ',')]
        add: Vec<String>,
        /// A tag to remove (repeat it, or separate tags with commas).
        #[arg(long, value_name = "TAG", value_delimiter = ',')]
        remove: Vec<String>,
    },
    /// Set a session's title ("" removes it).
    Retitle {
        /// The session id.
        id: String,
        /// The new title.
        title: String,
    },
    /// Give a session to another owner, or (with --none) to nobody.
    SetOwner {
        /// The session id.
        id: String,
        /// The new owner.
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        owner: Option<String>,
        /// Remove the owner.
        #[arg(long)]
        none: bool,
    },
    /// Set when a session expires: from then on it is gone for every reader, and
    /// `sessions purge --expired` frees its space.
    Expire {
        /// The session id.
        id: String,
        #[command(flatten)]
        when: ExpiryChoice,
    },
    /// Delete the sessions nobody has written for a while (--older-than), or free the
    /// space of expired ones (--expired); both together do both.
    Purge(PurgeArgs),
    /// Re-encrypt every message not under the current key (an older key, or clear text:
    /// a clear store becomes encrypted), in place.
    Rekey {
        /// Count what would be re-encrypted, decrypting it, without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print each change to the sessions of a Redis storage as it happens (writers
    /// publish them with publish_changes=true in their storage URL).
    Watch {
        /// Stop after this many changes, at least 1 (default: until interrupted).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Delete a session and all its messages.
    Delete {
        /// The session id.
        id: String,
        /// Succeed even when the session does not exist, and delete it even when its
        /// metadata cannot be read (a damaged file).
        #[arg(long, short)]
        force: bool,
    },
    /// Write a session to stdout or a file.
    Export {
        /// The session id.
        id: String,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        /// Write to this file instead of stdout (a new file, unless --force; `-` is stdout).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the --output file if it exists.
        #[arg(long, requires = "output")]
        force: bool,
    },
    /// Create a session from a json or jsonl export (`-` reads stdin).
    Import {
        /// The export file.
        file: PathBuf,
        /// The id to store it under (default: the id in a json export, else the file name;
        /// a file-system session file such as `%41lice.jsonl` gives the id it holds, `Alice`).
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Overwrite the session if it already exists (without it the session is created
        /// only if no other writer has created it, checked and written in one step).
        #[arg(long)]
        replace: bool,
    },
}

/// The formats `sessions export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object: {"id": ..., "meta": {...}, "messages": [...]}.
    Json,
    /// One message per line (the file-system backend's own format).
    Jsonl,
    /// A readable transcript (also `md`, its file extension).
    #[value(alias = "md")]
    Markdown,
}

/// Options of `fusion migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The storage to copy from (same URL forms as --storage).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The storage to copy into.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Report what would be copied, extended or replaced without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace diverged target sessions (ones holding messages the source lacks) with
    /// the source's history, deleting those messages.
    #[arg(long)]
    pub force: bool,
    /// Make sure the target ends up encrypted with the current key: fail without a key,
    /// and also encrypt what migrated sessions already held in clear text. (With a key,
    /// every copy is written encrypted; an encrypted source decrypts with the key.)
    #[arg(long)]
    pub encrypt: bool,
}

fn main() -> ExitCode {
    let matches = variables::without_empty(Cli::command())
        .try_get_matches()
        .unwrap_or_else(|err| usage_error::exit_redacted(err));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| usage_error::exit_redacted(err));
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            return render::report(&anyhow::Error::new(err).context("starting the async runtime"));
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => render::report(&err),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let layers = store::Layers::from_args(cli.encryption_key_file.as_deref(), cli.no_retry)?;
    match cli.command {
        Command::Chat(args) => {
            let storage = Store::new(storage_type(cli.storage.as_deref())?, layers);
            chat::run(storage, args).await
        }
        Command::Migrate(args) => migrate::run(args, layers).await,
        #[cfg(feature = "ui")]
        Command::Ui(args) => {
            let storage = Store::new(storage_type(cli.storage.as_deref())?, layers);
            ui::run(storage, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sessions(command) => {
            let storage = Store::new(storage_type(cli.storage.as_deref())?, layers);
            match command {
                SessionsCommand::List(args) => {
                    listing::list(&storage, cli.storage.as_deref(), &args).await
                }
                SessionsCommand::Show { id } => sessions::show(&storage, &id).await,
                SessionsCommand::Tag { id, add, remove } => {
                    meta::tag(&storage, &id, add, remove).await
                }
                SessionsCommand::Retitle { id, title } => {
                    meta::retitle(&storage, &id, &title).await
                }
                SessionsCommand::SetOwner { id, owner, none: _ } => {
                    meta::set_owner(&storage, &id, owner).await
                }
                SessionsCommand::Expire { id, when } => {
                    retention::expire(&storage, &id, &when).await
                }
                SessionsCommand::Purge(args) => retention::purge(&storage, &args).await,
                SessionsCommand::Rekey { dry_run } => rekey::run(&storage, dry_run).await,
                SessionsCommand::Watch { count } => watch::watch(&storage, count).await,
                SessionsCommand::Delete { id, force } => {
                    sessions::delete(&storage, &id, force).await
                }
                SessionsCommand::Export {
                    id,
                    format,
                    output,
                    force,
                } => sessions::export(&storage, &id, format, output.as_deref(), force).await,
                SessionsCommand::Import { file, id, replace } => {
                    sessions::import(&storage, &file, id.as_deref(), replace).await
                }
            }?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `-v` wins over RUST_LOG because it was typed for this run; without either only
/// warnings show, so a backend's "torn line skipped" warning still reaches the user.
/// The redis driver's own warnings (a cluster node it cannot reach while it retries) wait
/// for `-vv`: what they end in reaches the user as our error, once.
fn init_logging(verbose: u8) {
    const QUIET: &str = "warn,redis=error";
    let filter = match verbose {
        0 => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(QUIET)),
        // `fusion` matches every crate of ours by prefix (fusion_core, fusion_storage_fs, ...).
        1 => EnvFilter::new(format!("{QUIET},fusion=info")),
        2 => EnvFilter::new("info,fusion=debug"),
        _ => EnvFilter::new("trace"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A stderr that cannot be written to loses the log line, as render::note loses
        // its: on a failed write the subscriber would otherwise report it with
        // `eprintln!`, which panics there (exit 101 for a command that succeeded).
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `err` and its causes on one line, `outer: inner: root`.
///
/// Some errors already quote their source in their own message; a cause whose text is
/// already on the line is left out so the line does not say the same thing twice.
///
/// Control characters are written as visible escapes ([`render::printable`]): an error
/// may quote what an LLM endpoint or a tool answered, which is as untrusted as a model's
/// text, and would otherwise reach the terminal as its escape sequences.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    render::printable(&line.replace(['\n', '\r'], " ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn chat_takes_one_kind_of_expiry_for_a_new_session() {
        let chat = |extra: &[&str]| {
            let argv = ["fusion", "chat"].iter().chain(extra).copied();
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Chat(args) => (args.expire_in, args.expire_idle),
                other => panic!("parsed as {other:?}"),
            })
        };
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(chat(&["--expire-in", "1d"]).unwrap(), (Some(day), None));
        assert_eq!(chat(&["--expire-idle", "24h"]).unwrap(), (None, Some(day)));
        let err = chat(&["--expire-in", "1d", "--expire-idle", "1d"]).unwrap_err();
        assert!(err.to_string().contains("cannot be used with"), "{err}");
        let err = chat(&["--expire-idle", "1 day"]).unwrap_err();
        assert!(err.to_string().contains("--expire-idle"), "{err}");
    }

    #[test]
    fn chat_refuses_a_tool_timeout_that_is_not_a_positive_whole_number() {
        let chat = |value: &str| {
            Cli::try_parse_from(["fusion", "chat", "--tool-timeout", value]).map(|cli| {
                match cli.command {
                    Command::Chat(args) => args.tool_timeout,
                    other => panic!("parsed as {other:?}"),
                }
            })
        };
        assert_eq!(chat("2").unwrap(), Some(Duration::from_secs(2)));
        // A negative number reaches the parser rather than reading as an unknown flag.
        for (value, says) in [
            ("0", "at least 1 second"),
            ("-1", "at least 1 second"),
            ("ten", "not a whole number"),
        ] {
            let err = chat(value).unwrap_err().to_string();
            assert!(
                err.contains("--tool-timeout") && err.contains(says),
                "{err}"
            );
        }
    }

    #[test]
    fn error_line_lists_causes_once() {
        let root = std::io::Error::other("connection refused");
        let quoting = anyhow::Error::new(root).context("cannot connect: connection refused");
        let err = quoting.context("cannot open storage");
        assert_eq!(
            one_line(&err),
            "cannot open storage: cannot connect: connection refused"
        );
        let multi = anyhow::anyhow!("line one\nline two").context("outer");
        assert_eq!(one_line(&multi), "outer: line one line two");
    }
}
