//! `fusion ui`: the local web app of `fusion-ui` over the storage the other commands use
//! (encrypted and retried the same way), served until Ctrl-C.
//!
//! When the environment names an LLM (as for `fusion chat`), the transcript page can chat
//! with the session's agent: the same file tools, confined to the current directory, and
//! the same approval policy, with the page's Approve / Deny buttons in place of the
//! terminal's question.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use fusion::agent::{ApprovalPolicy, OpenAiConfig, ToolRegistry};
use fusion::api::session;
use fusion_ui::{ChatAgent, UiConfig};

use crate::chat::ApproveMode;
use crate::render;
use crate::store::Store;

/// Options of `fusion ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// The address to listen on. A loopback address (the default) needs no token; any
    /// other gets one (given with --token, or a random one) that the printed URL carries.
    #[arg(long, value_name = "ADDR", default_value_t = UiConfig::DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// The access token to require (16 to 256 characters of A-Z a-z 0-9 - . _ ~).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FUSION_UI_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Another host name the pages may be reached by (a name on your LAN, say), with its
    /// port: `box.lan:8765`. Requests naming any other host are refused.
    #[arg(long = "allow-host", value_name = "HOST:PORT")]
    pub allow_hosts: Vec<String>,
    /// Open the URL in the default browser once the app listens.
    #[arg(long)]
    pub open: bool,
    /// Whether the chat's tool calls that may change something wait for the page's
    /// Approve / Deny buttons (ask, the default), run at once (all) or are refused (none).
    #[arg(long, value_enum, value_name = "MODE", env = "FUSION_APPROVE")]
    pub approve: Option<ApproveMode>,
    /// Serve the pages without the chat even when an LLM is configured.
    #[arg(long)]
    pub no_chat: bool,
}

/// Opens the storage, binds, prints the URL (with the token, if any) and serves.
pub async fn run(storage: Store, args: UiArgs) -> Result<()> {
    let storage = storage.open().await?;
    let mut config = UiConfig::new(args.bind);
    if let Some(token) = args.token {
        config = config.token(token);
    }
    for host in args.allow_hosts {
        config = config.allow_host(host);
    }
    let chat = if args.no_chat {
        None
    } else {
        chat_agent(args.approve)?
    };
    let chat_line = match &chat {
        Some(_) => "Chat: on, with the file tools in the current directory.".to_string(),
        None if args.no_chat => "Chat: off (--no-chat).".to_string(),
        None => {
            "Chat: off; set OPENAI_API_KEY (or OPENAI_BASE_URL) to chat with sessions.".to_string()
        }
    };
    if let Some(agent) = chat {
        config = config.chat(agent);
    }
    let bound = fusion_ui::bind(&config).await?;
    let url = bound.url();
    // The URL names 127.0.0.1 for a bind on every interface: this says the app is open.
    // Before the URL, so whoever reads the URL (a person, a script that then stops the
    // app) has been warned already, not maybe.
    if let Some(warning) = bound.settings().exposure_warning() {
        render::note(format_args!("fusion: {warning}"));
    }
    // Serving is the command's work: a reader that went away (`fusion ui | head -1`) does
    // not stop it, as it does not stop a migrate; any other failed write (a full disk)
    // fails the command, naming stdout, since nobody has the address.
    render::say_unless_gone(format_args!("Fusion UI: {url}"))?;
    render::say_unless_gone(&chat_line)?;
    render::say_unless_gone("Press Ctrl-C to stop.")?;
    if args.open {
        open_in_browser(&url);
    }
    bound
        .serve(storage, async {
            // An error here means no Ctrl-C can ever arrive: serve until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
        .context("serving the web app")
}

/// The chat's agent when the environment names an LLM: the client `fusion chat` would
/// use, the file tools confined to the current directory, and `approve`'s policy.
fn chat_agent(approve: Option<ApproveMode>) -> Result<Option<ChatAgent>> {
    if !session::llm_configured() {
        return Ok(None);
    }
    let llm = OpenAiConfig::from_env()?.build()?;
    let here = std::env::current_dir().context("the current directory cannot be used")?;
    let tools = ToolRegistry::with_file_tools([here])?;
    let approval = match approve.unwrap_or(ApproveMode::Ask) {
        ApproveMode::Ask => ApprovalPolicy::ask_destructive(),
        ApproveMode::All => ApprovalPolicy::auto(),
        ApproveMode::None => ApprovalPolicy::deny_destructive(),
    };
    Ok(Some(
        ChatAgent::new(Arc::new(llm))
            .tools(tools)
            .approval(approval),
    ))
}

/// Starts the platform's opener on `url`; a failure is a warning, since the URL is
/// printed anyway.
fn open_in_browser(url: &str) {
    let (program, args): (&str, &[&str]) = if cfg!(target_os = "macos") {
        ("open", &[])
    } else if cfg!(windows) {
        ("cmd", &["/C", "start", ""])
    } else {
        ("xdg-open", &[])
    };
    let started = Command::new(program)
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(err) = started {
        render::note(format_args!(
            "fusion: could not open a browser with `{program}` ({err}); open the URL above"
        ));
    }
}
