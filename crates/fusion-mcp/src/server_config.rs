//! How to reach one server: [`McpServerConfig`], a [`StdioServerConfig`] (a program to
//! start) or an [`HttpServerConfig`] (a streamable-HTTP endpoint). `Debug` never shows the
//! secrets they may hold (environment values, header values, tokens).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use fusion_core::{Error, Result};

use crate::command_line;
use crate::environment::InheritEnv;

mod hidden;

use hidden::{file_url_with_at, hidden_pieces, hidden_words};

/// How to reach one MCP server.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum McpServerConfig {
    /// A program started as a child process, speaking MCP over its stdin and stdout.
    Stdio(StdioServerConfig),
    /// A streamable-HTTP endpoint.
    Http(HttpServerConfig),
}

impl McpServerConfig {
    /// A server given as one shell-like command line, as the CLI's `--mcp` flag takes it:
    /// `npx -y @modelcontextprotocol/server-filesystem ./docs`, quotes allowed (see
    /// [`StdioServerConfig`]). A single `http://` or `https://` URL is an HTTP server.
    ///
    /// Fails with [`Error::Config`] on an empty line or an unterminated quote, quoting the
    /// line as [`StdioServerConfig::display_command`] shows a command, and on a line that
    /// starts by setting a variable (`GITHUB_TOKEN=… npx …`, as a shell would read it): no
    /// shell runs the line, so that word would be the program to start, and a key in it
    /// the server's name; a server is given a variable in its
    /// [`env`](StdioServerConfig::env).
    pub fn command_line(line: &str) -> Result<Self> {
        let words = command_line::split(line).map_err(|e| {
            Error::Config(format!("MCP server command `{}`: {e}", shown_unsplit(line)))
        })?;
        if let [program, args @ ..] = words.as_slice()
            && let Some(name) = command_line::sets_a_variable(program)
        {
            let shown = StdioServerConfig::new(program.as_str()).args(args.iter().cloned());
            return Err(Error::Config(format!(
                "MCP server command `{}`: it starts by setting the variable `{name}`, as a \
                 shell would, but no shell runs it: give the server that variable in its \
                 `env` instead",
                shown.display_command(),
            )));
        }
        match words.as_slice() {
            [] => Err(Error::Config("MCP server command is empty".to_owned())),
            [url] if is_http_url(url) => Ok(HttpServerConfig::new(url.as_str()).into()),
            [program, args @ ..] => Ok(StdioServerConfig::new(program.as_str())
                .args(args.iter().cloned())
                .into()),
        }
    }

    /// A name for this server when none is given: the package, script or image a launcher
    /// like `npx`, `node` or `docker` runs (`server-filesystem`), never a `NAME=VALUE`
    /// word (`docker run -e TOKEN=…`; before the program, `TOKEN=… npx …`, the words after
    /// it name the server, as a shell reads them) nor an option's value (`uvx --python 3.12
    /// …`, `npx --token TOKEN …`), else the program's name, else the URL's host (never its
    /// user or password). Always a valid tool-name prefix.
    pub fn suggested_name(&self) -> String {
        let stdio = match self {
            McpServerConfig::Stdio(stdio) => stdio,
            McpServerConfig::Http(http) => return host_name(&http.url),
        };
        // A shell's `NAME=VALUE` before the program (`GITHUB_TOKEN=… npx …`, which
        // `command_line` refuses but the API takes) names nothing, its value often a key:
        // the words after it name the server, as a shell reads the line.
        let mut words = std::iter::once(&stdio.command)
            .chain(&stdio.args)
            .skip_while(|word| command_line::sets_a_variable(word).is_some());
        match words.next() {
            None => crate::naming::server_prefix(""),
            // A URL given as the command names no program: its host names the server.
            Some(program) if program.contains("://") => host_name(program),
            Some(program) => {
                // A launched URL's user and password (`npx git+https://TOKEN@host`) are no
                // name either: the words are read without them.
                let args: Vec<String> = words
                    .map(|arg| without_userinfo(arg).into_owned())
                    .collect();
                command_line::derive_name(program, &args)
            }
        }
    }
}

/// The server name of `url`: its host alone, never what goes before it
/// (`https://TOKEN@host/mcp`, a user and password), a key that as the server's name would
/// prefix every tool name sent to the model.
fn host_name(url: &str) -> String {
    let url = reqwest::Url::parse(url).ok();
    let host = url.as_ref().and_then(reqwest::Url::host_str).unwrap_or("");
    crate::naming::server_prefix(&host.replace('.', "-"))
}

/// `word` without the user and password of a URL in it (all that comes before the `@`
/// ending the URL's authority), nor its query, for naming a server; as it is without one,
/// or with an `=`, which no name is read from (`NAME=VALUE`, see
/// [`command_line::derive_name`]) and which it must keep. Its fragment is kept: a git
/// URL's ref (`git+https://github.com/org/repo.git#v1`), part of the name it always had.
///
/// Not [`fusion_core::redact_url`], which keeps a user (`https://ghp_TOKEN:x@host`, a
/// token where a user goes) and reads every `@` as the end of a password, one in the path
/// too (`git+https://github.com/org/repo@v1`, a version), whose name would change: a
/// server's name prefixes every tool name, stored in its sessions. An authority whose
/// `:` is followed by no port (`https://u:pa/ss@host`, `https://u:pa?ss@host`) is a
/// password holding a `/`, `?` or `#`: it ends at the last `@`, a query's or fragment's
/// too.
fn without_userinfo(word: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme) = word.find("://").filter(|_| !word.contains('=')) else {
        return word.into();
    };
    let start = scheme + 3;
    let rest = &word[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let no_port = |authority: &str| {
        !authority.starts_with('[')
            && authority
                .split_once(':')
                .is_some_and(|(_, port)| !port.bytes().all(|b| b.is_ascii_digit()))
    };
    let host_at = match authority.rfind('@') {
        Some(at) => at + 1,
        None if no_port(authority) => rest.rfind('@').map_or(0, |at| at + 1),
        None => 0,
    };
    let located = &rest[host_at..];
    let (located, fragment) = located.split_at(located.find('#').unwrap_or(located.len()));
    let path = &located[..located.find('?').unwrap_or(located.len())];
    format!("{}{path}{fragment}", &word[..start]).into()
}

/// Whether `word` is an `http://` or `https://` URL, its scheme in any case (`HTTPS://`),
/// as URL schemes are.
fn is_http_url(word: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        word.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    })
}

impl From<StdioServerConfig> for McpServerConfig {
    fn from(config: StdioServerConfig) -> Self {
        McpServerConfig::Stdio(config)
    }
}

impl From<HttpServerConfig> for McpServerConfig {
    fn from(config: HttpServerConfig) -> Self {
        McpServerConfig::Http(config)
    }
}

/// A server started as a child process: `command` with `args`, in `cwd` (else the current
/// directory), with `env` over what it inherits of this program's environment: by default
/// only [`DEFAULT_INHERITED_ENV`](crate::DEFAULT_INHERITED_ENV) (`PATH`, `HOME`, …), never
/// the agent's keys and passwords, unless [`inherit_env`](Self::inherit_env) names them.
///
/// ```
/// use fusion_mcp::StdioServerConfig;
///
/// // The server reads GITHUB_TOKEN from the environment Fusion runs in.
/// let github = StdioServerConfig::new("npx")
///     .args(["-y", "@modelcontextprotocol/server-github"])
///     .inherit_env("GITHUB_TOKEN");
/// ```
///
/// The command is run directly, not through a shell; it is looked up on `PATH`. The
/// process is started in its own process group, and stopping the server stops the whole
/// group, so the `node` that `npx` starts goes too. `Debug` shows `env`'s names only.
#[derive(Clone, PartialEq, Eq)]
pub struct StdioServerConfig {
    /// The program to run (`npx`, `uvx`, `/usr/local/bin/server`).
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables set for the server (often API keys), over the inherited ones. A name that
    /// is none (empty, or holding `=` or a NUL byte: a value put in it by mistake) fails
    /// the start, the error showing it only up to that character.
    pub env: BTreeMap<String, String>,
    /// The working directory, if not the current one.
    pub cwd: Option<PathBuf>,
    /// Which variables of this program's environment the server inherits: by default
    /// only [`DEFAULT_INHERITED_ENV`](crate::DEFAULT_INHERITED_ENV).
    pub inherit_env: InheritEnv,
}

impl StdioServerConfig {
    /// Runs `command` without arguments.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            inherit_env: InheritEnv::default(),
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the server.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Passes the variable `name` of this program's environment on to the server, when it
    /// is set, besides the [defaults](crate::DEFAULT_INHERITED_ENV). No effect after
    /// [`inherit_all_env`](Self::inherit_all_env).
    pub fn inherit_env(mut self, name: impl Into<String>) -> Self {
        if let InheritEnv::Named(names) = &mut self.inherit_env {
            names.push(name.into());
        }
        self
    }

    /// Passes this program's whole environment on to the server, secrets included (the
    /// LLM provider's key, `FUSION_ENCRYPTION_KEY`, database passwords): for a server
    /// trusted with all of them.
    pub fn inherit_all_env(mut self) -> Self {
        self.inherit_env = InheritEnv::All;
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The command line for messages: the command and its arguments, space-separated, each
    /// control character in them (a NUL, a line break, an escape sequence) shown escaped
    /// (`\u{0}`, `\n`, `\u{1b}`), as every message and log line of this crate shows a
    /// command. An argument holding a URL (`postgresql://app:secret@db/x`, the way
    /// database servers take their connection) is shown without its secrets, as an HTTP
    /// server's URL is ([`fusion_core::redact_url`]: its password, its query's values).
    ///
    /// So is the value of an option whose name says it holds a secret (`--api-key KEY`,
    /// `--token=TOKEN`, read as server names read them), of a variable naming one
    /// (`docker run -e GITHUB_TOKEN=ghp_…`) and of a header a proxy like `mcp-remote` is
    /// given (`--header "Authorization: Bearer TOKEN"`): shown as `***`.
    pub fn display_command(&self) -> String {
        (self.hidden_words().iter().map(|word| shown(word)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The program alone, for messages that leave its arguments out: shown as
    /// [`display_command`](Self::display_command) shows it, its secrets hidden.
    pub(crate) fn display_program(&self) -> String {
        shown(&hidden_words([&self.command])[0])
    }

    /// The command and its arguments, their secrets hidden as one line's
    /// ([`hidden_words`]): what `display_command`, `display_program` and `Debug` show, so
    /// that none shows what another hides.
    fn hidden_words(&self) -> Vec<String> {
        hidden_words(std::iter::once(&self.command).chain(&self.args))
    }
}

/// A command line that could not be split into words, for a message: from the
/// whitespace-separated piece holding its first `://` on, read as one URL whose secrets
/// are hidden ([`fusion_core::redact_url`]), then [`shown`].
///
/// Its words are not known: a quote that is never closed may hold a password with a
/// space (`"postgresql://u:my pass@db`), which pieces cut at whitespace would show half
/// by half, and a piece may start with a scheme whose URLs `redact_url` shows with their
/// path whole (`file:/x<TAB>https://u:p@h`, `file:///x 'https://u:p@h`), the rest of the
/// line with it. So the rest is never read as such a URL (a space put before it), and
/// everything up to its last `@` and every query value after it is hidden: more than a
/// secret, maybe, never less.
///
/// The secrets of options, variables and headers in its pieces are hidden first, as
/// [`display_command`](StdioServerConfig::display_command) hides them in words.
fn shown_unsplit(line: &str) -> String {
    let line = &hidden_pieces(line);
    let Some(scheme) = line.find("://").or_else(|| file_url_with_at(line)) else {
        return shown(line);
    };
    let start = line[..scheme].rfind(char::is_whitespace).map_or(0, |at| {
        at + line[at..].chars().next().map_or(1, char::len_utf8)
    });
    let (head, rest) = line.split_at(start);
    let hidden = fusion_core::redact_url(&format!(" {rest}"));
    shown(head) + &shown(&hidden[1..])
}

/// `text` (a configured command, an argument) for a message or a log line: each control
/// character escaped as Rust writes it (`\u{0}`, `\n`, `\u{1b}`), and so are Unicode's
/// line and paragraph separators (`\u{2028}`, `\u{2029}`) and its bidirectional
/// controls (`\u{202e}`, `\u{2066}`…); the rest as it is. Shown raw, a NUL cuts or garbles
/// the line a terminal or a log collector shows, a line break (or a separator, to a viewer
/// that breaks lines there) forges a log line of its own, an escape sequence drives the
/// terminal, and a bidirectional override shows the rest of the line reordered.
pub fn shown(text: &str) -> String {
    shown_within(text, usize::MAX)
}

/// [`shown`] `text`, cut to at most `max_chars` characters where an escape ends, never
/// inside one: half an escape (`\u{20` of `\u{202e}`) would read as text never written.
pub fn shown_within(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    let mut chars = 0;
    for c in text.chars() {
        let kept = out.len();
        // An escape is ASCII: as many characters as bytes.
        chars += if c.is_control() {
            out.extend(c.escape_default());
            out.len() - kept
        } else if breaks_or_reorders(c) {
            out.extend(c.escape_unicode());
            out.len() - kept
        } else {
            out.push(c);
            1
        };
        if chars > max_chars {
            out.truncate(kept);
            break;
        }
    }
    out
}

/// Whether `c`, no control character, breaks a line to some viewers (U+2028, U+2029) or
/// changes the order the rest of a line is shown in (the bidirectional marks, embeddings,
/// overrides and isolates).
fn breaks_or_reorders(c: char) -> bool {
    matches!(
        c,
        '\u{2028}'
            | '\u{2029}'
            | '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

impl fmt::Debug for StdioServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values often hold API keys: names only.
        let words = self.hidden_words();
        f.debug_struct("StdioServerConfig")
            .field("command", &words[0])
            .field("args", &&words[1..])
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .field("inherit_env", &self.inherit_env)
            .finish()
    }
}

/// A server reached over streamable HTTP at `url`, with extra `headers` and an optional
/// bearer token on every request.
///
/// Header values and the token are secrets: they are sent marked sensitive and never
/// appear in `Debug`, logs or error messages; nor do the URL's password and query values
/// (`?api_key=`), which `Debug` and messages show as `***`. A redirect is followed only within the
/// origin of `url` (scheme, host and port); one elsewhere fails the request, saying so,
/// rather than take the headers there.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpServerConfig {
    /// The endpoint, e.g. `https://mcp.example.com/mcp`.
    pub url: String,
    /// Headers sent with every request (`X-Api-Key`, or `Authorization` in desktop configs).
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer {token}`.
    pub bearer_token: Option<String>,
}

impl HttpServerConfig {
    /// The server at `url`, without extra headers.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: BTreeMap::new(),
            bearer_token: None,
        }
    }

    /// Adds a header sent with every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sends `Authorization: Bearer {token}` with every request.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }
}

impl fmt::Debug for HttpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServerConfig")
            .field("url", &fusion_core::redact_url(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a review: a stdio server's arguments went into the messages and log lines
    /// naming its command, and into its `Debug`, as they are, so the connection URL a
    /// database server takes (`server-postgres postgresql://app:secret@db/x`) showed its
    /// password, where an HTTP server's URL never does.
    #[test]
    fn a_url_among_the_arguments_is_shown_without_its_password() {
        let config = StdioServerConfig::new("npx").args([
            "-y",
            "@modelcontextprotocol/server-postgres",
            "postgresql://app:s3cret@db/x?sslmode=require&password=other",
            "--url=redis://:t0ken@cache",
        ]);
        let shown = config.display_command();
        assert_eq!(
            shown,
            "npx -y @modelcontextprotocol/server-postgres \
             postgresql://app:***@db/x?sslmode=require&password=*** --url=redis://:***@cache"
        );
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("other"),
            "{debug}"
        );
        assert!(
            !debug.contains("t0ken") && debug.contains("db/x"),
            "{debug}"
        );
    }

    /// Found by a review: a URL given as the command itself (an HTTP server's URL with
    /// arguments after it, or its scheme in capitals, read as a program to start) showed
    /// its password in `Debug`, and a URL's user (`https://TOKEN@host`, also one a
    /// launcher runs) became the server's name, which prefixes every tool name the model is
    /// sent.
    #[test]
    fn a_url_given_as_the_command_is_shown_and_named_without_its_secrets() {
        let config = StdioServerConfig::new("https://user:s3cret@host/mcp?key=k3y").arg("-v");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("k3y"),
            "{debug}"
        );
        assert!(
            debug.contains("https://user:***@host/mcp?key=***"),
            "{debug}"
        );
        assert_eq!(
            config.display_program(),
            "https://user:***@host/mcp?key=***"
        );
        assert_eq!(McpServerConfig::from(config).suggested_name(), "host");
        for line in [
            "https://ghp_S3CRET@mcp.example.com -v",
            "npx git+https://ghp_S3CRET@github.com",
        ] {
            let name = McpServerConfig::command_line(line)
                .unwrap()
                .suggested_name();
            assert!(!name.contains("S3CRET"), "{line}: {name}");
        }
        // A URL's scheme is read in any case: this one is an HTTP server, not a program.
        for url in ["HTTPS://user:s3cret@host/mcp", "Http://host/mcp"] {
            let server = McpServerConfig::command_line(url).unwrap();
            assert!(
                matches!(server, McpServerConfig::Http(_)),
                "{url}: {server:?}"
            );
        }
    }

    /// Found by a review: the suggested name read a launched URL through `redact_url`,
    /// which reads an `@` in its path (a version, `git+https://github.com/org/repo@main`)
    /// as the end of a password, so such a server's name, which prefixes every tool name
    /// stored in its sessions, changed (`repo_main` became `main`); and it keeps a user,
    /// where a token often goes (`https://ghp_TOKEN:x-oauth-basic@github.com`), which
    /// became the name. The names of configurations that hold no credentials are the
    /// ones they always had.
    #[test]
    fn names_stay_as_they_were_and_never_hold_a_credential() {
        let name = |line: &str| {
            let server = McpServerConfig::command_line(line).unwrap();
            server.suggested_name()
        };
        for (line, was) in [
            (
                "npx -y @modelcontextprotocol/server-filesystem ./docs",
                "server-filesystem",
            ),
            ("uvx mcp-server-git --repository .", "mcp-server-git"),
            ("node ./server.js", "server"),
            ("/usr/local/bin/my-server --flag", "my-server"),
            ("./bin/weather", "weather"),
            ("uvx git+https://github.com/org/repo", "repo"),
            // An `@` in a URL's path, a version, not the end of a password.
            ("uvx git+https://github.com/org/repo@main", "repo_main"),
            ("pipx run git+https://github.com/x/y.git@v1", "y_git_v1"),
            ("npx https://github.com/u/repo/tarball/main", "tarball"),
            ("npx -y https://host/pkg.tgz?x=1", "npx"),
            (
                "npx -y mcp-remote https://mcp.example.com/sse?token=abc",
                "mcp-remote",
            ),
            ("docker -H tcp://engine:2375 run -i mcp/github", "github"),
            // A credential the name never showed keeps it as it was.
            ("npx git+https://ghp_TOK3N@github.com/org/repo", "repo"),
            // A git URL's ref, its fragment (npm's `#branch`, `#semver:`).
            (
                "npx git+https://github.com/org/repo.git#main",
                "repo_git_main",
            ),
            (
                "npx git+https://github.com/org/repo#semver:1.0",
                "repo_semver_1",
            ),
            (
                "npx git+https://ghp_TOK3N@github.com/org/repo.git#v2",
                "repo_git_v2",
            ),
            // Other launchers and programs, a Windows path among them.
            (
                "docker run -i --rm -e GITHUB_PERSONAL_ACCESS_TOKEN ghcr.io/github/github-mcp-server",
                "github-mcp-server",
            ),
            (
                "python -m mcp_server_time --local-timezone=Europe/Paris",
                "mcp_server_time",
            ),
            ("uv --directory /home/me/weather run weather.py", "weather"),
            ("bunx @scope/pkg@1.0", "pkg"),
            ("deno run -A npm:@scope/server@1.2", "server_1"),
            ("deno run -A https://deno.land/x/mcp/server.ts", "mcp"),
            ("node C:/Users/me/weather/build/index.js", "weather"),
            (
                r#""C:\Program Files\nodejs\node.exe" 'C:\servers\weather\index.js'"#,
                "weather",
            ),
        ] {
            assert_eq!(name(line), was, "{line}");
            // The name it had before its URLs were read without their credentials.
            let words = command_line::split(line).unwrap();
            assert_eq!(command_line::derive_name(&words[0], &words[1..]), was);
        }
        for (line, named) in [
            ("npx git+https://ghp_TOK3N@github.com", "github"),
            (
                "npx git+https://ghp_TOK3N:x-oauth-basic@github.com",
                "github",
            ),
            ("uvx git+https://oauth2:TOK3N@gitlab.com", "gitlab"),
            ("npx https://ghp_TOK3N:x@mcp.example.com", "mcp_example"),
            ("npx git+https://u:pa/TOK3N@github.com", "github"),
            // A password holding a `?` or `#`, written unescaped.
            ("npx git+https://u:pa?TOK3N@github.com/org/repo", "repo"),
            ("npx git+https://u:pa#TOK3N@github.com/org/repo", "repo"),
            ("npx git+https://u:pa/TOK3N?x@github.com/org/repo", "repo"),
            ("npx https://u:TOK3N#x@github.com", "github"),
            ("npx https://host.example/pkg?TOK3N", "pkg"),
        ] {
            assert_eq!(name(line), named, "{line}");
        }
    }

    /// Found by a review: a stdio server was named after the first word that is no
    /// option, so an option's value became its name, which prefixes every tool name sent
    /// to the model and stored in its sessions: `npx --token TOK3N pkg` was named
    /// `TOK3N`, `uvx --python 3.12 mcp-server-fetch` was named `3`. The options of each
    /// launcher that take a value, and for any launcher an option whose name says its
    /// value is a secret, skip that value.
    #[test]
    fn an_options_value_never_names_a_server() {
        let name = |line: &str| {
            let server = McpServerConfig::command_line(line).unwrap();
            server.suggested_name()
        };
        for (line, named) in [
            ("uvx --python 3.12 mcp-server-fetch", "mcp-server-fetch"),
            ("uvx -p 3.12 mcp-server-fetch", "mcp-server-fetch"),
            (
                "uvx --from git+https://github.com/org/repo@main mcp-server",
                "mcp-server",
            ),
            (
                "uvx --with httpx --index-url https://pypi.example/simple mcp-server-fetch",
                "mcp-server-fetch",
            ),
            (
                "uv tool run --with-requirements req.txt --env-file .env mcp-server-fetch",
                "mcp-server-fetch",
            ),
            (
                "uv run --project /srv/weather --directory /srv weather.py",
                "weather",
            ),
            ("uv run --with mcp[cli] mcp run server.py", "mcp"),
            ("pipx run --spec git+https://github.com/x/y.git@v1 y", "y"),
            (
                "pipx run --python python3.12 --pip-args --no-cache mcp-server-time",
                "mcp-server-time",
            ),
            ("npx --package @scope/server-files files-mcp", "files-mcp"),
            (
                "npx -y --registry https://npm.example --cache /c @scope/server-files",
                "server-files",
            ),
            ("bunx -p @scope/pkg pkg-bin", "pkg-bin"),
            ("node -r dotenv/config --import tsx ./weather.ts", "weather"),
            ("node --env-file .env build/index.js", "index"),
            (
                "deno run --allow-net=api.example -c deno.json server.ts",
                "server",
            ),
            ("python -X utf8 -m mcp_server_time", "mcp_server_time"),
        ] {
            assert_eq!(name(line), named, "{line}");
        }
        // An option whose name says its value is a secret, for any launcher.
        for line in [
            "npx --token TOK3N pkg",
            "npx -y --api-key TOK3N pkg",
            "uvx --Auth-Token TOK3N pkg",
            "pipx run --secret TOK3N pkg",
            "bunx --password TOK3N pkg",
            "deno run --bearer TOK3N pkg",
            "node --credential TOK3N pkg",
            "docker run --passwd TOK3N -i pkg",
            "pnpm dlx --npm-TOKEN TOK3N pkg",
        ] {
            let named = name(line);
            assert!(!named.contains("TOK3N"), "{line}: {named}");
            assert_eq!(named, "pkg", "{line}");
        }
        // A negated flag takes no value: the word after it is the package.
        assert_eq!(name("npx --no-auth pkg"), "pkg");
        assert_eq!(
            name("uvx --no-keyring mcp-server-fetch"),
            "mcp-server-fetch"
        );
    }

    /// Found by a review: a command line that could not be split into words (an
    /// unterminated quote) was quoted as written in its error, so the URL a database
    /// server takes showed its password there, and a control character in the line reached
    /// the terminal, where the messages naming a started command hide and escape both.
    #[test]
    fn a_command_line_that_cannot_be_split_is_quoted_without_its_secrets() {
        let line = "npx -y \x1b[2J server-postgres 'postgresql://app:s3cret@db/x?password=other";
        let err = McpServerConfig::command_line(line).unwrap_err().to_string();
        assert!(
            err.contains(
                "`npx -y \\u{1b}[2J server-postgres 'postgresql://app:***@db/x?password=***`"
            ),
            "{err}"
        );
        assert!(err.contains("unterminated single quote"), "{err}");
        assert!(!err.contains("s3cret") && !err.contains("other"), "{err}");
        assert!(!err.contains('\x1b'), "{err}");
    }

    /// Found by a review: a command line that could not be split was cut at spaces alone
    /// and each piece holding `://` redacted as one URL, so a password with a space in the
    /// quote left open showed half by half, and a tab-separated piece starting with a
    /// `file:` URL (whose path `redact_url` shows whole) showed the URL after it.
    #[test]
    fn no_secret_of_a_command_line_that_cannot_be_split_is_shown() {
        for (line, kept) in [
            (
                "npx server \"postgresql://app:my s3cret@db/x",
                "postgresql://app:***@db/x",
            ),
            (
                "server file:/x\thttps://u:s3cret@h/mcp 'x",
                "https://u:***@h/mcp",
            ),
            ("server file:///data 'https://u:s3cret@h/mcp", ":***@h/mcp"),
            (
                "server --db='postgresql://u:s3cret@h/x",
                "--db='postgresql://u:***@h/x",
            ),
            (
                "run\t--url=https://h/x?key=s3cret\t'",
                "--url=https://h/x?key=***",
            ),
        ] {
            let err = McpServerConfig::command_line(line).unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{line:?}: {err}");
            assert!(err.contains(kept), "{line:?}: {err}");
        }
        let err = McpServerConfig::command_line("server 'a b").unwrap_err();
        assert!(err.to_string().contains("`server 'a b`"), "{err}");
    }

    /// Found by a review: an argument was redacted only when it held a `://`, so a URL
    /// written without one after a file's path (`file:/x,redis:u:p@h`, `file:/x,//u:p@h`)
    /// was shown with its password in messages, `Debug` and a line that cannot be split.
    #[test]
    fn a_url_without_slashes_after_a_file_path_is_shown_without_its_password() {
        let config = StdioServerConfig::new("server").args([
            "file:/x,//u:s3cret@h",
            "--db=SQLITE:a.db;redis:u:s3cret@h/0",
            "@scope/pkg@1.2",
        ]);
        let shown = config.display_command();
        assert_eq!(
            shown,
            "server file:/x,//u:***@h --db=SQLITE:***@h/0 @scope/pkg@1.2"
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        let line = "server file:/x,redis:u:s3cret@h 'x";
        let err = McpServerConfig::command_line(line).unwrap_err().to_string();
        assert!(!err.contains("s3cret") && err.contains("@h"), "{err}");
    }

    /// Found by a review: the arguments were shown with only a URL's secrets hidden, so
    /// a key given as an option's value (`--api-key KEY`, `--token=TOKEN`) or the header
    /// a proxy is given (`npx mcp-remote URL --header "Authorization: Bearer TOKEN"`) went
    /// as it is into every message and log line naming the command, and into `Debug`.
    #[test]
    fn an_options_or_a_headers_secret_is_shown_hidden() {
        let config = StdioServerConfig::new("npx").args([
            "mcp-remote",
            "https://mcp.example.com/sse",
            "--header",
            "Authorization: Bearer s3cret",
            "--api-key",
            "s3cret",
            "--token=s3cret",
            "--use-token-cache",
            "X-Api-Key:s3cret",
            "--port=8080",
        ]);
        assert_eq!(
            config.display_command(),
            "npx mcp-remote https://mcp.example.com/sse --header Authorization: *** \
             --api-key *** --token=*** --use-token-cache X-Api-Key: *** --port=8080"
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    /// Found by a review: d6d07f4 hid a secret given as an option's value or a header in
    /// one word, but not one set as a variable (`docker run -e GITHUB_TOKEN=ghp_…`, the
    /// way container servers take their keys), nor a header given as an option's value
    /// (`--header=Authorization: Bearer T`), nor `--authorization T`: each was shown.
    #[test]
    fn a_variables_secret_and_a_header_in_an_options_value_are_shown_hidden() {
        let config = StdioServerConfig::new("docker").args([
            "run",
            "-e",
            "GITHUB_TOKEN=s3cret",
            "--env=API_KEY=s3cret",
            "-e",
            "LOG_LEVEL=debug",
            "mcp/github",
            "--header=Authorization: Bearer s3cret",
            "--authorization",
            "s3cret",
        ]);
        assert_eq!(
            config.display_command(),
            "docker run -e GITHUB_TOKEN=*** --env=API_KEY=*** -e LOG_LEVEL=debug mcp/github \
             --header=Authorization: *** --authorization ***"
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    /// Found by a review: a header whose value was not in its name's word was shown:
    /// `mcp-proxy --headers Authorization 'Bearer T'` (name and value two words), and an
    /// unquoted `--header Authorization: Bearer T` (`--mcp` splits it in three).
    #[test]
    fn a_header_written_over_several_words_is_shown_hidden() {
        let config = StdioServerConfig::new("mcp-proxy").args([
            "--headers",
            "Authorization",
            "Bearer s3cret",
            "--header",
            "Authorization:",
            "Bearer",
            "s3cret",
            "--headers",
            "Accept",
            "text/plain",
            "https://h/sse",
        ]);
        assert_eq!(
            config.display_command(),
            "mcp-proxy --headers Authorization *** --header Authorization: *** *** \
             --headers Accept text/plain https://h/sse"
        );
    }

    /// Found by a review: d6d07f4 hid what is no secret: the option after a flag whose
    /// name ends in a secret's word (`--enable-auth --port 8080` showed `*** 8080`), and a
    /// path read as a header (`-v /run/key:/key` showed `/run/key: ***`).
    #[test]
    fn what_holds_no_secret_is_shown_as_it_is() {
        let args = [
            "--enable-auth",
            "--port",
            "8080",
            "-v",
            "/run/key:/key",
            "x",
            // Found by a second review: a letter's option after such a flag was hidden
            // (`*** 8080`), and so was what comes before the `@` of a word holding `file:`
            // inside it (`myfile:***@y`).
            "--enable-auth",
            "-p",
            "8080",
            "myfile:x@y",
            // A variable given from the environment (no value to hide, and the next word
            // is not one), a header that holds no secret, a file holding a token (a path,
            // no secret), the shell's `PWD` (a folder).
            "-e",
            "GITHUB_TOKEN",
            "mcp/github",
            "--header",
            "Accept:",
            "json",
            "--token-file",
            "/run/token",
            "PWD=/srv",
        ];
        let config = StdioServerConfig::new("server").args(args);
        assert_eq!(
            config.display_command(),
            format!("server {}", args.join(" "))
        );
    }

    /// Found by a second review: the program (`display_program`, in the errors of a server
    /// that cannot start, the model's included) and `Debug`'s `command` hid a URL's secrets
    /// only, so a line starting as a shell's would (`GITHUB_TOKEN=ghp_… npx …`) showed the
    /// key, and was named after it (every tool name sent to the model prefixed with it).
    #[test]
    fn a_variable_set_before_the_program_is_refused_and_shown_hidden() {
        let err = McpServerConfig::command_line("GITHUB_TOKEN=s3cret npx -y server-github")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`GITHUB_TOKEN=*** npx -y server-github`")
                && err.contains("`GITHUB_TOKEN`")
                && err.contains("`env`")
                && !err.contains("s3cret"),
            "{err}"
        );
        // What only looks so is a program, as before.
        for line in ["./a=b x", "C:\\tools\\a=b.exe x"] {
            assert!(McpServerConfig::command_line(line).is_ok(), "{line}");
        }
        let config = StdioServerConfig::new("API_KEY=s3cret").args(["--token", "s3cret"]);
        assert_eq!(config.display_program(), "API_KEY=***");
        assert_eq!(config.display_command(), "API_KEY=*** --token ***");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains(r#"command: "API_KEY=***""#),
            "{debug}"
        );
    }

    /// Left by a second review: a server built through the API with a shell's `NAME=VALUE`
    /// as its program (`command_line` refuses such a line) was named after that word, its
    /// value (a key) prefixing every tool name sent to the model.
    #[test]
    fn a_variable_set_before_the_program_never_names_the_server() {
        for (config, named) in [
            (
                StdioServerConfig::new("GITHUB_TOKEN=s3cret").args(["npx", "-y", "server-github"]),
                "server-github",
            ),
            (
                StdioServerConfig::new("A=s3cret").args(["B=s3cret", "uvx", "mcp-server-git"]),
                "mcp-server-git",
            ),
            (
                StdioServerConfig::new("URL=https://u:s3cret@h")
                    .args(["https://u:s3cret@host.example/mcp"]),
                "host-example",
            ),
            (StdioServerConfig::new("API_KEY=s3cret"), "mcp"),
            // What only looks so is a program, named as before.
            (StdioServerConfig::new("./a=b").args(["x"]), "a_b"),
        ] {
            let server = McpServerConfig::from(config);
            assert_eq!(server.suggested_name(), named, "{server:?}");
        }
    }

    /// Found by a second review: a variable whose name ends in a short word for a secret
    /// (`DB_PASS`, `MYSQL_PWD`, `GITHUB_PAT`) was shown with its value.
    #[test]
    fn a_variable_named_by_a_short_word_for_a_secret_is_shown_hidden() {
        let config = StdioServerConfig::new("docker").args([
            "run",
            "-e",
            "DB_PASS=s3cret",
            "--env=MYSQL_PWD=s3cret",
            "-e",
            "github.pat=s3cret",
            "mcp/db",
        ]);
        assert_eq!(
            config.display_command(),
            "docker run -e DB_PASS=*** --env=MYSQL_PWD=*** -e github.pat=*** mcp/db"
        );
    }

    /// Found by a review: the error of a line that cannot be split hid a URL's secrets
    /// only, so an option's (`--api-key K`) or a header's was shown in it.
    #[test]
    fn a_line_that_cannot_be_split_is_shown_without_its_options_secrets() {
        for line in [
            "npx x --api-key s3cret 'y",
            "npx mcp-remote https://h/sse --header \"Authorization: Bearer s3cret",
            "docker run -e GITHUB_TOKEN=s3cret 'mcp/github",
        ] {
            let err = McpServerConfig::command_line(line).unwrap_err().to_string();
            assert!(!err.contains("s3cret") && err.contains("***"), "{err}");
        }
    }
}
