//! What to start: [`McpConfig`], the servers by name, from the `mcpServers` JSON of desktop
//! MCP clients, from command lines, or added in code.
//!
//! ```no_run
//! use fusion_mcp::{McpConfig, McpServerConfig, StdioServerConfig};
//!
//! # fn demo() -> fusion_core::Result<()> {
//! let mut config = McpConfig::from_file("mcp.json")?;
//! config.add("time", StdioServerConfig::new("uvx").arg("mcp-server-time"));
//! let name = config.add_command_line("npx -y @modelcontextprotocol/server-everything")?;
//! assert_eq!(name, "server-everything");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use fusion_core::{Error, Result};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::error::Category;

use crate::environment::{InheritEnv, is_variable_name};
use crate::server_config::{HttpServerConfig, McpServerConfig, StdioServerConfig, shown};

/// The longest configuration file [`McpConfig::from_file`] reads: far more than any list
/// of servers takes.
const MAX_CONFIG_FILE_LEN: u64 = 1 << 20;

/// The servers to start, by name (iterated in name order).
///
/// Read from the JSON desktop MCP clients use:
/// ```json
/// {"mcpServers": {
///   "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "./docs"],
///             "env": {"DEBUG": "1"}},
///   "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"],
///              "inheritEnv": ["GITHUB_PERSONAL_ACCESS_TOKEN"]},
///   "remote": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer …"}},
///   "off": {"command": "old-server", "disabled": true}
/// }}
/// ```
/// A server has either `command` (with optional `args`, `env`, `cwd`, `inheritEnv`) or
/// `url` (with optional `headers`). A command is given, of the environment this program
/// runs in, only [`DEFAULT_INHERITED_ENV`](crate::DEFAULT_INHERITED_ENV) and the variables
/// its `"inheritEnv"` lists (`true` gives it the whole environment; see [`InheritEnv`]),
/// then its `env`. Other fields (`type`, `alwaysAllow`, …) are ignored, except that
/// `"disabled": true` leaves the server out and `"type": "sse"` (the legacy transport,
/// which this client does not speak) is refused. A name given twice is refused, saying
/// where, rather than the last entry kept as JSON alone would (a copied entry whose name
/// was not changed would silently take the place of the first); so is a variable given
/// twice in a server's `env` or a header in its `headers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpConfig {
    servers: BTreeMap<String, McpServerConfig>,
}

impl McpConfig {
    /// No servers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the `{"mcpServers": {...}}` JSON. Fails with [`Error::Config`] saying which
    /// server is wrong and how: the server and field, the line and column, and what was
    /// expected, never a value from the JSON (they hold tokens and keys); or which server,
    /// variable or header is named twice, and where again.
    pub fn from_json_str(json: &str) -> Result<Self> {
        Self::parse(json).map_err(|e| Error::Config(format!("MCP configuration: {e}")))
    }

    /// Reads and parses a configuration file. Fails with [`Error::Config`] naming the file
    /// and what is wrong with it (unreadable, longer than 1 MiB, not UTF-8, not JSON, a
    /// server without a command, …).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        use std::io::Read;
        let path = path.as_ref();
        let describe =
            |e: String| Error::Config(format!("MCP configuration file `{}`: {e}", path.display()));
        // Read no further than a configuration can be: a path given by mistake to a device
        // or a stream (`/dev/zero`, a log) would otherwise be read until memory ran out.
        let file = std::fs::File::open(path).map_err(|e| describe(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| describe(e.to_string()))?;
        if bytes.len() as u64 > MAX_CONFIG_FILE_LEN {
            return Err(describe(format!(
                "longer than {} MiB, so not an MCP configuration",
                MAX_CONFIG_FILE_LEN >> 20
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| describe("not UTF-8 text".to_owned()))?;
        Self::parse(&text).map_err(describe)
    }

    /// Adds (or replaces) the server called `name`.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        server: impl Into<McpServerConfig>,
    ) -> &mut Self {
        self.servers.insert(name.into(), server.into());
        self
    }

    /// [`add`](Self::add) for building a configuration in one expression.
    pub fn with(mut self, name: impl Into<String>, server: impl Into<McpServerConfig>) -> Self {
        self.add(name, server);
        self
    }

    /// Adds a server given as a command line (see [`McpServerConfig::command_line`]) under
    /// its [suggested name](McpServerConfig::suggested_name), with `-2`, `-3`, … appended
    /// if that name is taken. Returns the name.
    pub fn add_command_line(&mut self, line: &str) -> Result<String> {
        let server = McpServerConfig::command_line(line)?;
        let base = server.suggested_name();
        let mut name = base.clone();
        let mut n = 1;
        while self.servers.contains_key(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        self.servers.insert(name.clone(), server);
        Ok(name)
    }

    /// Adds the servers of `other` (another file's, say): the way to give one session the
    /// servers of several configurations, since [`McpSessionExt`](crate::McpSessionExt)
    /// starts each configuration given to it as a set of its own. Fails with
    /// [`Error::Config`] naming every server both have, adding none of `other`'s: which
    /// of the two was meant is not for this client to guess.
    pub fn merge(&mut self, other: McpConfig) -> Result<&mut Self> {
        let clashes: Vec<&str> = other
            .servers
            .keys()
            .filter(|name| self.servers.contains_key(*name))
            .map(String::as_str)
            .collect();
        if !clashes.is_empty() {
            return Err(Error::Config(format!(
                "MCP configuration: both configurations have a server called {}; rename one \
                 of each pair",
                clashes
                    .iter()
                    .map(|name| format!("`{}`", name.escape_debug()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.servers.extend(other.servers);
        Ok(self)
    }

    /// The server called `name`.
    pub fn get(&self, name: &str) -> Option<&McpServerConfig> {
        self.servers.get(name)
    }

    /// Every server with its name, in name order.
    pub fn servers(&self) -> impl Iterator<Item = (&str, &McpServerConfig)> {
        self.servers
            .iter()
            .map(|(name, server)| (name.as_str(), server))
    }

    /// How many servers there are.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// True when there are no servers.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    fn parse(json: &str) -> std::result::Result<Self, String> {
        let file: RawFile = serde_json::from_str(json).map_err(|e| describe_error(json, &e))?;
        let mut config = McpConfig::new();
        for (name, raw) in file.mcp_servers {
            if raw.disabled {
                tracing::debug!(server = %name, "MCP server disabled in the configuration");
                continue;
            }
            let server = raw
                .into_config()
                .map_err(|e| format!("server `{}`: {e}", shown(&name)))?;
            config.servers.insert(name, server);
        }
        Ok(config)
    }
}

/// What is wrong with the file, without any value from it: the place (server and field,
/// line and column) and what was expected. serde's messages quote the value they could
/// not take (`invalid type: string "API_KEY=sk-…", expected a map`), and the values here
/// are environment variables, header values and tokens, so its message is rebuilt.
fn describe_error(json: &str, error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let text = text.strip_suffix(&position).unwrap_or(&text);
    let problem = match error.classify() {
        // Syntax errors describe the text ("expected `,` or `}`"), never a value.
        Category::Syntax | Category::Eof | Category::Io => text.to_owned(),
        // Names the server and says where: no field of it is wrong, whatever `locate` finds.
        Category::Data if is_given_twice(text) => {
            return format!(
                "{text} (again{position}); JSON would keep only the last, so rename or \
                 remove one"
            );
        }
        Category::Data => data_problem(text),
    };
    match locate(json) {
        Some(place) => format!("{place}: {problem}{position}"),
        None => format!("{problem}{position}"),
    }
}

/// serde's message for a value of the wrong type or form, without the value.
fn data_problem(text: &str) -> String {
    for what in ["invalid type", "invalid value"] {
        if let Some(rest) = text.strip_prefix(what).and_then(|r| r.strip_prefix(": "))
            && let Some(at) = rest.rfind(", expected ")
        {
            // The value is quoted after its kind: `string "…"`, ``integer `5` ``.
            let kind = rest[..at]
                .split(['"', '`', '\''])
                .next()
                .unwrap_or("")
                .trim();
            let kind =
                if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase() || c == ' ') {
                    kind
                } else {
                    "value"
                };
            let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            let expected = &rest[at + ", expected ".len()..];
            let expected = if expected.starts_with("struct ") {
                "an object"
            } else {
                expected
            };
            return format!("{what}: {article} {kind}, expected {expected}");
        }
    }
    // Messages naming only this file's own fields or a count; any other may quote a value.
    if ["missing field `", "duplicate field `", "invalid length "]
        .iter()
        .any(|start| text.starts_with(start))
    {
        return text.to_owned();
    }
    "a value has the wrong type or form".to_owned()
}

/// The server and field a file that is valid JSON but not a valid configuration goes
/// wrong at, when only one does: each field is read alone. With several, none is named
/// (the map is read in key order, not the file's, so the first found need not be the one
/// the error's line and column point at).
fn locate(json: &str) -> Option<String> {
    let file: Value = serde_json::from_str(json).ok()?;
    let servers = file.get("mcpServers")?;
    let Some(servers) = servers.as_object() else {
        return Some("`mcpServers`".to_owned());
    };
    let mut wrong = Vec::new();
    for (name, server) in servers {
        let Some(fields) = server.as_object() else {
            wrong.push(format!("server `{}`", shown(name)));
            continue;
        };
        for (field, value) in fields {
            let alone = serde_json::Map::from_iter([(field.clone(), value.clone())]);
            if serde_json::from_value::<RawServer>(Value::Object(alone)).is_err() {
                wrong.push(format!(
                    "server `{}`, field `{}`",
                    shown(name),
                    shown(field)
                ));
            }
        }
    }
    match <[String; 1]>::try_from(wrong) {
        Ok([place]) => Some(place),
        Err(_) => None,
    }
}

/// The file as written; unknown fields are ignored.
#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "mcpServers", deserialize_with = "unique_servers")]
    mcp_servers: BTreeMap<String, RawServer>,
}

/// The maps of the file whose keys are refused when given twice, as the error names
/// them: what a key is, and the map. [`describe_error`] knows the error by these.
const UNIQUE: [(&str, &str); 3] = [
    ("server", "mcpServers"),
    ("variable", "env"),
    ("header", "headers"),
];

/// `mcpServers`, refusing a name given twice: serde keeps the last of a repeated key, so
/// a copied entry whose name was not changed would silently take the place of the first.
fn unique_servers<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BTreeMap<String, RawServer>, D::Error> {
    deserializer.deserialize_map(Unique::new(UNIQUE[0]))
}

/// A server's `env`, refusing a variable given twice (which of the two values was meant?).
fn unique_env<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    deserializer.deserialize_map(Unique::new(UNIQUE[1]))
}

/// A server's `headers`, refusing a header given twice.
fn unique_headers<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    deserializer.deserialize_map(Unique::new(UNIQUE[2]))
}

/// The error of a key given twice in one of the [`UNIQUE`] maps: it names the key (a
/// server's name, a variable's or a header's, never a value).
fn given_twice((what, map): (&str, &str), key: &str) -> String {
    format!("{what} `{}` is given twice in `{map}`", key.escape_debug())
}

/// Whether serde's `text` is a [`given_twice`] error.
fn is_given_twice(text: &str) -> bool {
    UNIQUE.iter().any(|(what, map)| {
        text.starts_with(&format!("{what} `"))
            && text.ends_with(&format!("` is given twice in `{map}`"))
    })
}

/// A map read key by key, refusing a key given twice.
struct Unique<V> {
    names: (&'static str, &'static str),
    value: PhantomData<V>,
}

impl<V> Unique<V> {
    fn new(names: (&'static str, &'static str)) -> Self {
        Self {
            names,
            value: PhantomData,
        }
    }
}

impl<'de, V: Deserialize<'de>> Visitor<'de> for Unique<V> {
    type Value = BTreeMap<String, V>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut read = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if read.contains_key(&key) {
                return Err(serde::de::Error::custom(given_twice(self.names, &key)));
            }
            let value = map.next_value()?;
            read.insert(key, value);
        }
        Ok(read)
    }
}

#[derive(Deserialize)]
struct RawServer {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default, deserialize_with = "unique_env")]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    url: Option<String>,
    #[serde(default, deserialize_with = "unique_headers")]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    disabled: bool,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Read by [`inherit_env`], whose messages are clearer than serde's for a field of two
    /// forms.
    #[serde(rename = "inheritEnv")]
    inherit_env: Option<Value>,
}

impl RawServer {
    fn into_config(self) -> std::result::Result<McpServerConfig, String> {
        if self.kind.as_deref() == Some("sse") {
            return Err(
                "`\"type\": \"sse\"` is the legacy HTTP+SSE transport, which is not \
                        supported; give the server's streamable-HTTP endpoint instead"
                    .to_owned(),
            );
        }
        match (self.command, self.url) {
            (Some(_), Some(_)) => Err("has both `command` and `url`; give one".to_owned()),
            (None, None) => Err("needs `command` (a program to start) or `url` (a \
                                 streamable-HTTP endpoint)"
                .to_owned()),
            (Some(command), None) if command.trim().is_empty() => {
                Err("`command` is empty".to_owned())
            }
            (Some(command), None) => Ok(McpServerConfig::Stdio(StdioServerConfig {
                command,
                args: self.args,
                env: self.env,
                cwd: self.cwd,
                inherit_env: inherit_env(self.inherit_env)?,
            })),
            (None, Some(url)) => Ok(McpServerConfig::Http(HttpServerConfig {
                url,
                headers: self.headers,
                bearer_token: None,
            })),
        }
    }
}

/// `"inheritEnv"`: a list of variable names, or `true` for the whole environment (`false`
/// or none: the defaults only). An entry is named by its position, never quoted: one
/// holding `=` is likely a value put here by mistake.
fn inherit_env(value: Option<Value>) -> std::result::Result<InheritEnv, String> {
    let entries = match value {
        None | Some(Value::Null | Value::Bool(false)) => return Ok(InheritEnv::default()),
        Some(Value::Bool(true)) => return Ok(InheritEnv::All),
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(
                "`inheritEnv` must be a list of environment variable names, or true \
                        to pass the whole environment"
                    .to_owned(),
            );
        }
    };
    let mut names = Vec::with_capacity(entries.len());
    for (at, entry) in entries.into_iter().enumerate() {
        let n = at + 1;
        let Value::String(name) = entry else {
            return Err(format!("`inheritEnv` entry {n} is not a string"));
        };
        if !is_variable_name(&name) {
            return Err(format!(
                "`inheritEnv` entry {n} is not a variable name (it lists names whose values \
                 come from Fusion's environment; set values in `env`)"
            ));
        }
        names.push(name);
    }
    Ok(InheritEnv::Named(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESKTOP: &str = r#"{
      "mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "./docs"],
                  "env": {"API_KEY": "sk-secret"}, "type": "stdio", "alwaysAllow": ["read_file"]},
        "remote": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer tok-secret"}},
        "off": {"command": "old-server", "disabled": true}
      },
      "globalShortcut": "Ctrl+Space"
    }"#;

    #[test]
    fn merging_adds_the_other_servers_and_refuses_a_name_both_have() {
        let mut config = McpConfig::new().with("a", StdioServerConfig::new("a"));
        let other = McpConfig::new()
            .with("b", StdioServerConfig::new("b"))
            .with("c", StdioServerConfig::new("c"));
        config.merge(other).unwrap();
        let names: Vec<&str> = config.servers().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b", "c"]);

        let clashing = McpConfig::new()
            .with("c", StdioServerConfig::new("other-c"))
            .with("d", StdioServerConfig::new("d"))
            .with("a", StdioServerConfig::new("other-a"));
        let Err(Error::Config(message)) = config.merge(clashing) else {
            panic!("a server name both have is refused")
        };
        assert!(message.contains("server called `a`, `c`"), "{message}");
        // Nothing of the refused configuration was added.
        assert_eq!(config.len(), 3);
        let McpServerConfig::Stdio(a) = config.get("a").unwrap() else {
            panic!("a is a stdio server")
        };
        assert_eq!(a.command, "a");
    }

    #[test]
    fn a_server_named_twice_in_one_file_is_refused_naming_it_and_the_file() {
        // A copy-pasted entry whose name was not changed: JSON alone keeps the last.
        let json = r#"{"mcpServers": {
            "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "./a"]},
            "time": {"command": "uvx", "args": ["mcp-server-time"]},
            "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "./b"]}
        }}"#;
        let message = McpConfig::from_json_str(json).unwrap_err().to_string();
        assert!(
            message.contains("server `files` is given twice in `mcpServers`"),
            "{message}"
        );
        assert!(message.contains("line 4"), "{message}");
        // Not taken for a mistake inside a server.
        assert!(!message.contains("field"), "{message}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.json");
        std::fs::write(&path, json).unwrap();
        let message = McpConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            message.contains(&format!("MCP configuration file `{}`", path.display()))
                && message.contains("server `files` is given twice"),
            "{message}"
        );

        // Whatever the copies hold: disabled, or the same name written with an escape.
        for json in [
            r#"{"mcpServers": {"a": {"command": "x", "disabled": true}, "a": {"command": "y"}}}"#,
            r#"{"mcpServers": {"a": {"command": "x"}, "\u0061": {"command": "x"}}}"#,
            r#"{"mcpServers": {"a": {"command": "x"}, "a": {"command": 5}}}"#,
        ] {
            let message = McpConfig::from_json_str(json).unwrap_err().to_string();
            assert!(
                message.contains("server `a` is given twice"),
                "{json}: {message}"
            );
        }
        // One name in each of two files is `merge`'s to refuse; distinct names merge.
        let mut first =
            McpConfig::from_json_str(r#"{"mcpServers": {"a": {"command": "x"}}}"#).unwrap();
        let second = r#"{"mcpServers": {"b": {"command": "y"}}}"#;
        first
            .merge(McpConfig::from_json_str(second).unwrap())
            .unwrap();
        assert_eq!(first.len(), 2);
    }

    #[test]
    fn a_variable_or_header_given_twice_is_refused_naming_it_but_no_value() {
        let env = r#"{"mcpServers": {"files": {"command": "npx",
            "env": {"API_KEY": "sk-first", "HOME": "/h",
                    "API_KEY": "sk-second"}}}}"#;
        let message = McpConfig::from_json_str(env).unwrap_err().to_string();
        assert!(
            message.contains("variable `API_KEY` is given twice in `env` (again at line 3"),
            "{message}"
        );
        let headers = r#"{"mcpServers": {"remote": {"url": "https://mcp.example/mcp",
            "headers": {"Authorization": "Bearer one", "Authorization": "Bearer two"}}}}"#;
        let message = McpConfig::from_json_str(headers).unwrap_err().to_string();
        assert!(
            message.contains("header `Authorization` is given twice in `headers`"),
            "{message}"
        );
        for secret in ["sk-first", "sk-second", "Bearer"] {
            assert!(!message.contains(secret), "{message}");
        }
        // The same name in two servers' maps is no repeat.
        let two = r#"{"mcpServers": {"a": {"command": "x", "env": {"K": "1"}},
            "b": {"command": "y", "env": {"K": "2"}}}}"#;
        assert_eq!(McpConfig::from_json_str(two).unwrap().len(), 2);
    }

    #[test]
    fn the_desktop_format_parses_with_extra_fields_and_disabled_servers() {
        let config = McpConfig::from_json_str(DESKTOP).unwrap();
        let names: Vec<&str> = config.servers().map(|(n, _)| n).collect();
        assert_eq!(names, ["files", "remote"]);
        let McpServerConfig::Stdio(files) = config.get("files").unwrap() else {
            panic!("files is a stdio server")
        };
        assert_eq!(files.command, "npx");
        assert_eq!(files.args[2], "./docs");
        assert_eq!(files.env["API_KEY"], "sk-secret");
        let McpServerConfig::Http(remote) = config.get("remote").unwrap() else {
            panic!("remote is an HTTP server")
        };
        assert_eq!(remote.headers["Authorization"], "Bearer tok-secret");
        let debug = format!("{config:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(
            debug.contains("API_KEY") && debug.contains("Authorization"),
            "{debug}"
        );
    }

    #[test]
    fn mistakes_are_named_with_the_server_and_the_file() {
        let err = |json: &str| McpConfig::from_json_str(json).unwrap_err().to_string();
        assert!(err(r#"{"mcpServers": {"a": {}}}"#).contains("server `a`: needs `command`"));
        assert!(
            err(r#"{"mcpServers": {"a": {"command": "x", "url": "http://h"}}}"#)
                .contains("both `command` and `url`")
        );
        assert!(
            err(r#"{"mcpServers": {"a": {"url": "http://h", "type": "sse"}}}"#).contains("legacy")
        );
        assert!(err(r#"{"mcpServers": {"a": {"command": 3}}}"#).contains("line 1"));
        assert!(err(r#"{"servers": {}}"#).contains("mcpServers"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.json");
        std::fs::write(&path, "{not json").unwrap();
        let message = McpConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            message.contains("mcp.json") && message.contains("line 1"),
            "{message}"
        );
        let missing = McpConfig::from_file(dir.path().join("nope.json")).unwrap_err();
        assert!(missing.to_string().contains("nope.json"), "{missing}");
    }

    /// A file longer than any configuration is refused unread past the bound, saying so,
    /// even when what it holds would parse (JSON padded with spaces); a device that never
    /// ends (`--mcp-config /dev/zero`) fails at once rather than fill memory.
    #[test]
    fn a_file_longer_than_a_configuration_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.json");
        let padding = " ".repeat(MAX_CONFIG_FILE_LEN as usize);
        std::fs::write(&path, format!("{{\"mcpServers\": {{}}}}{padding}")).unwrap();
        let message = McpConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            message.contains("huge.json") && message.contains("longer than 1 MiB"),
            "{message}"
        );
        std::fs::write(&path, "{\"mcpServers\": {}}").unwrap();
        assert!(McpConfig::from_file(&path).unwrap().is_empty());
        if cfg!(unix) {
            let message = McpConfig::from_file("/dev/zero").unwrap_err().to_string();
            assert!(message.contains("longer than 1 MiB"), "{message}");
        }
        std::fs::write(&path, b"{\"mcpServers\": {}}\xFF").unwrap();
        let message = McpConfig::from_file(&path).unwrap_err().to_string();
        assert!(message.contains("not UTF-8"), "{message}");
    }

    #[test]
    fn errors_name_the_place_and_the_expected_type_but_never_a_value_from_the_file() {
        let err = |json: &str| McpConfig::from_json_str(json).unwrap_err().to_string();
        let cases = [
            (
                r#"{"mcpServers": {"py": {"command": "x", "env": "API_KEY=sk-SUPERSECRET-123"}}}"#,
                "server `py`, field `env`: invalid type: a string, expected a map at line 1",
            ),
            (
                r#"{"mcpServers": {"web": {"url": "http://h",
                    "headers": "Authorization: Bearer tok-SUPERSECRET"}}}"#,
                "server `web`, field `headers`: invalid type: a string, expected a map at line 2",
            ),
            // Not JSON: the message describes the text, never quotes it.
            (
                r#"{"mcpServers": {"py": {"command": "x", "env": {"A": "sk-SUPERSECRET\q"}}}}"#,
                "invalid escape at line 1",
            ),
            (
                r#"{"mcpServers": {"py": {"command": "x", "env": {"B": 4711000SUPERSECRET}}}}"#,
                "invalid type: an integer, expected a string at line 1",
            ),
            // Nested in a map and in a list, a number, a whole server, the top level.
            (
                r#"{"mcpServers": {"py": {"command": "x", "env": {"TOKEN": 987654321}}}}"#,
                "server `py`, field `env`: invalid type: an integer, expected a string at line 1",
            ),
            (
                r#"{"mcpServers": {"py": {"command": "x", "args": ["ok", ["sk-SUPERSECRET"], "k"]}}}"#,
                "server `py`, field `args`: invalid type: a sequence, expected a string",
            ),
            (
                r#"{"mcpServers": {"py": {"command": "x", "args": ["ok", 31415926]}}}"#,
                "server `py`, field `args`: invalid type: an integer, expected a string",
            ),
            (
                r#"{"mcpServers": {"py": "sk-SUPERSECRET, expected a map"}}"#,
                "server `py`: invalid type: a string, expected an object at line 1",
            ),
            (
                r#"{"mcpServers": "Bearer tok-SUPERSECRET"}"#,
                "`mcpServers`: invalid type: a string, expected a map at line 1",
            ),
            // Two wrong places: the keys are read sorted, not in the file's order, so
            // neither is named; the line and column point at the first in the file.
            (
                r#"{"mcpServers": {"zeta": {"command": 5},
                    "alpha": {"command": "x", "env": "A=1"}}}"#,
                "MCP configuration: invalid type: an integer, expected a string at line 1 column 37",
            ),
        ];
        for (json, expected) in cases {
            let message = err(json);
            assert!(message.contains(expected), "{message}");
            for secret in ["SUPERSECRET", "987654321", "31415926", "4711"] {
                assert!(!message.contains(secret), "{message}");
            }
        }
    }

    #[test]
    fn inherit_env_names_variables_or_takes_the_whole_environment() {
        let inherit = |field: &str| {
            let json = format!(r#"{{"mcpServers": {{"s": {{"command": "x"{field}}}}}}}"#);
            McpConfig::from_json_str(&json).map(|config| match config.get("s") {
                Some(McpServerConfig::Stdio(stdio)) => stdio.inherit_env.clone(),
                other => panic!("not a stdio server: {other:?}"),
            })
        };
        assert_eq!(inherit("").unwrap(), InheritEnv::Named(vec![]));
        assert_eq!(
            inherit(r#", "inheritEnv": false"#).unwrap(),
            InheritEnv::default()
        );
        assert_eq!(inherit(r#", "inheritEnv": true"#).unwrap(), InheritEnv::All);
        assert_eq!(
            inherit(r#", "inheritEnv": ["GITHUB_TOKEN", "AWS_PROFILE"]"#).unwrap(),
            InheritEnv::Named(vec!["GITHUB_TOKEN".into(), "AWS_PROFILE".into()])
        );
        for (field, says) in [
            (r#", "inheritEnv": "GITHUB_TOKEN""#, "must be a list"),
            (r#", "inheritEnv": ["A", 5]"#, "entry 2 is not a string"),
            (
                r#", "inheritEnv": ["TOKEN=sk-SUPERSECRET"]"#,
                "entry 1 is not a variable name",
            ),
            (r#", "inheritEnv": [""]"#, "entry 1 is not a variable name"),
        ] {
            let message = inherit(field).unwrap_err().to_string();
            assert!(message.contains("server `s`: `inheritEnv`"), "{message}");
            assert!(message.contains(says), "{message}");
            assert!(!message.contains("SUPERSECRET"), "{message}");
        }
    }

    #[test]
    fn command_lines_become_servers_with_unique_derived_names() {
        let mut config = McpConfig::new();
        let first = config
            .add_command_line("npx -y @modelcontextprotocol/server-filesystem './my docs'")
            .unwrap();
        let second = config
            .add_command_line("npx -y @modelcontextprotocol/server-filesystem /tmp")
            .unwrap();
        assert_eq!(
            (first.as_str(), second.as_str()),
            ("server-filesystem", "server-filesystem-2")
        );
        let McpServerConfig::Stdio(stdio) = config.get("server-filesystem").unwrap() else {
            panic!("stdio")
        };
        assert_eq!(stdio.args.last().unwrap(), "./my docs");
        let http = McpServerConfig::command_line("https://mcp.example.com/mcp").unwrap();
        assert_eq!(http.suggested_name(), "mcp-example-com");
        // The host alone: a token given as the URL's user is no name.
        for url in [
            "https://ghp_SECRET@mcp.example.com/mcp",
            "https://user:SECRET@mcp.example.com:8443/mcp?key=SECRET",
        ] {
            let http = McpServerConfig::command_line(url).unwrap();
            assert_eq!(http.suggested_name(), "mcp-example-com", "{url}");
        }
        assert!(McpServerConfig::command_line("  ").is_err());
        let secret = HttpServerConfig::new("http://h").bearer_token("tok-secret");
        assert!(!format!("{secret:?}").contains("tok-secret"));
    }
}
