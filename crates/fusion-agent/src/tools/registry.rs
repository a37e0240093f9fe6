//! [`ToolRegistry`]: the tools a session offers to the model, in a stable order.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;

use fusion_core::{Error, Result};

use super::files::{DeleteFile, ListDirectory, ReadFile, WriteFile};
use super::tool::{Tool, ToolSource};
use super::workspace::Workspace;
use crate::llm::ToolDefinition;

/// The tools offered to the model: the tools registered one by one, in registration order,
/// then the current tools of each [`ToolSource`] (such as an MCP server), in the order the
/// sources were added. That is the order the model sees.
///
/// Cheap to clone: tools and sources are shared behind `Arc`s, so a clone sees a source's
/// tools change too.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    // A Vec rather than a map: registries hold a handful of tools, lookups by scanning are
    // as fast as hashing, and the order stays stable so prompts (and server-side prompt
    // caches) do not change between requests.
    tools: Vec<Arc<dyn Tool>>,
    sources: Vec<Arc<dyn ToolSource>>,
}

impl ToolRegistry {
    /// An empty registry: the model is offered no tools.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the built-in file tools (`read_file`, `write_file`,
    /// `list_directory`, `delete_file`), confined to `roots`.
    ///
    /// Relative paths the model gives resolve against the first root. Fails with
    /// [`fusion_core::Error::Config`] when `roots` is empty or a root is not an existing
    /// directory.
    pub fn with_file_tools<P: Into<PathBuf>>(roots: impl IntoIterator<Item = P>) -> Result<Self> {
        let mut registry = Self::new();
        registry.register_file_tools(Arc::new(Workspace::new(roots)?));
        Ok(registry)
    }

    /// Adds the built-in file tools (`read_file`, `write_file`, `list_directory`,
    /// `delete_file`), all confined to `workspace`.
    pub fn register_file_tools(&mut self, workspace: Arc<Workspace>) -> &mut Self {
        self.register(ReadFile::new(workspace.clone()))
            .register(WriteFile::new(workspace.clone()))
            .register(ListDirectory::new(workspace.clone()))
            .register(DeleteFile::new(workspace))
    }

    /// Adds `tool`, replacing any tool with the same name (at the same position).
    pub fn register(&mut self, tool: impl Tool + 'static) -> &mut Self {
        self.register_arc(Arc::new(tool))
    }

    /// Adds an already shared `tool`, replacing any tool with the same name.
    pub fn register_arc(&mut self, tool: Arc<dyn Tool>) -> &mut Self {
        match self.tools.iter_mut().find(|t| t.name() == tool.name()) {
            Some(slot) => *slot = tool,
            None => self.tools.push(tool),
        }
        self
    }

    /// [`register`](Self::register) for building a registry in one expression.
    pub fn with(mut self, tool: impl Tool + 'static) -> Self {
        self.register(tool);
        self
    }

    /// Adds a source of tools that may change while sessions run (an MCP server). Its
    /// tools come after the ones registered one by one; a name a registered tool or an
    /// earlier source already offers stays theirs. Building a session refuses such a clash
    /// ([`SessionBuilder::build`](crate::SessionBuilder::build)); one that appears later,
    /// when a source's tools change, keeps the earlier tool. Two distinct names offered in
    /// one form (a name servers refuse is offered as a readable part and a hash, and
    /// another tool may have that form as its name) are refused, where they are offered as
    /// native tools, when the session is built and, once a source's tools change so, by
    /// every turn until they no longer do: a call would run the wrong tool. The text ReAct
    /// mode names tools as they are, so it takes them.
    pub fn register_source(&mut self, source: Arc<dyn ToolSource>) -> &mut Self {
        self.sources.push(source);
        self
    }

    /// The tool called `name`, if registered or offered by a source now.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        if let Some(tool) = self.tools.iter().find(|t| t.name() == name) {
            return Some(tool.clone());
        }
        self.sources
            .iter()
            .find_map(|source| source.tools().iter().find(|t| t.name() == name).cloned())
    }

    /// Removes the tool called `name` (one registered one by one), returning it.
    pub fn remove(&mut self, name: &str) -> Option<Arc<dyn Tool>> {
        let at = self.tools.iter().position(|t| t.name() == name)?;
        Some(self.tools.remove(at))
    }

    /// Every tool offered now, in order, sources included.
    pub fn all(&self) -> Vec<Arc<dyn Tool>> {
        let mut all = self.tools.clone();
        for source in &self.sources {
            for tool in source.tools().iter() {
                if !all.iter().any(|t| t.name() == tool.name()) {
                    all.push(tool.clone());
                }
            }
        }
        all
    }

    /// Fails with [`Error::Config`] naming the tool and both owners when two of them (the
    /// tools registered one by one, or a source) offer one name now: the later one would
    /// never be offered or called, and nothing would say so.
    pub(crate) fn refuse_shared_names(&self) -> Result<()> {
        // Each name with its owner: `None` for the tools registered one by one, else the
        // source's position (two sources may have one name, as two MCP sets' servers may).
        let mut owners: Vec<(String, Option<usize>)> = self
            .tools
            .iter()
            .map(|tool| (tool.name().to_owned(), None))
            .collect();
        let owner_name = |owner: Option<usize>| match owner {
            None => "the session's own tools".to_owned(),
            Some(at) => format!("tool source `{}`", self.sources[at].source_name()),
        };
        for (at, source) in self.sources.iter().enumerate() {
            for tool in source.tools().iter() {
                let name = tool.name();
                match owners.iter().find(|(known, _)| known == name) {
                    // A source that lists a name twice is its own affair, not a clash.
                    Some(&(_, first)) if first == Some(at) => {}
                    Some(&(_, first)) => {
                        return Err(Error::Config(format!(
                            "tool `{}` is offered by {} and again by {}, added later, whose \
                             tool would never be called: give each source a name of its own \
                             (one MCP configuration names each server once) or offer the \
                             tool once",
                            name.escape_debug(),
                            owner_name(first),
                            owner_name(Some(at)),
                        )));
                    }
                    None => owners.push((name.to_owned(), Some(at))),
                }
            }
        }
        Ok(())
    }

    /// The names of the tools offered now, in order.
    pub fn names(&self) -> Vec<String> {
        self.all().iter().map(|t| t.name().to_owned()).collect()
    }

    /// How many tools are offered now.
    pub fn len(&self) -> usize {
        self.all().len()
    }

    /// True when no tool is offered now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A number that changes whenever a source's tools change; constant for a registry
    /// without sources. Sessions rebuild their tool definitions when it moves.
    pub fn revision(&self) -> u64 {
        // Each source's revision only grows, so their sum moves whenever one does.
        self.sources
            .iter()
            .fold(0u64, |sum, source| sum.wrapping_add(source.revision()))
    }

    /// [`definitions`](Self::definitions), failing with [`Error::Config`] naming the tool
    /// whose `name`, `description` or `parameters` panics, or the source whose `tools` does
    /// (hand-written code), where the panic unwound through the session's caller: sessions
    /// build their list with this when built and when a source's tools change (then once
    /// per change, as it is cached), so such a tool fails the build or the turn cleanly.
    pub(crate) fn checked_definitions(&self) -> Result<Vec<ToolDefinition>> {
        let tools = catch_unwind(AssertUnwindSafe(|| self.all())).map_err(|panic| {
            // A source's `tools` or a tool's `name`: each source asked again, on its own,
            // to tell which.
            let source = self
                .sources
                .iter()
                .find(|source| catch_unwind(AssertUnwindSafe(|| source.tools())).is_err());
            let culprit = source.map_or_else(
                || "a tool's `name`".to_owned(),
                |source| format!("tool source `{}`", source.source_name().escape_debug()),
            );
            Error::Config(format!(
                "the tools to offer could not be listed: {culprit} {}",
                crate::panics::describe(panic.as_ref())
            ))
        })?;
        tools
            .iter()
            .enumerate()
            .map(|(at, tool)| {
                catch_unwind(AssertUnwindSafe(|| definition(tool.as_ref()))).map_err(|panic| {
                    // The name again, on its own: it may be what panicked.
                    let name =
                        catch_unwind(AssertUnwindSafe(|| tool.name().escape_debug().to_string()))
                            .map_or_else(
                                |_| format!("number {} (whose name panics)", at + 1),
                                |name| format!("`{name}`"),
                            );
                    Error::Config(format!(
                        "tool {name} could not give its definition (name, description, \
                         parameters): it {}; no request can offer it, so fix the tool or leave \
                         it out",
                        crate::panics::describe(panic.as_ref())
                    ))
                })
            })
            .collect()
    }

    /// The definitions to advertise in a request, in order.
    pub fn definitions(&self) -> Vec<ToolDefinition> {
        self.all().iter().map(|t| definition(t.as_ref())).collect()
    }
}

/// What to say, naming both tools, when two of `tools` (what a request offers) have
/// distinct names that are offered alike as native tools: a name servers refuse (outside
/// `[a-zA-Z0-9_-]`, past 64 characters) is offered as a readable part of it and a hash
/// (`functions.read_file` as `functions_read_file_<16 hex digits>`), and a tool named
/// that form outright would take every call of the other. `None` when no two clash. The
/// text ReAct mode, which names tools as they are, has no such clash.
pub(crate) fn shared_sendable_name(tools: &[ToolDefinition]) -> Option<String> {
    let sent: Vec<_> = tools
        .iter()
        .map(|tool| crate::openai::sendable::sendable_call_name(&tool.name))
        .collect();
    let (at, other) = sent
        .iter()
        .enumerate()
        .find_map(|(at, name)| Some((at, (0..at).find(|&before| sent[before] == *name)?)))?;
    Some(format!(
        "tools `{}` and `{}` would both be offered to the model as `{}` (a tool \
         name outside [a-zA-Z0-9_-] or past 64 characters is offered as a readable \
         part of it and a hash), so calls of one would run the other: rename one of \
         them",
        tools[other].name.escape_debug(),
        tools[at].name.escape_debug(),
        sent[at],
    ))
}

/// What a request offers of `tool`.
fn definition(tool: &dyn Tool) -> ToolDefinition {
    ToolDefinition {
        name: tool.name().to_owned(),
        description: tool.description().to_owned(),
        parameters: tool.parameters(),
    }
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<&str> = self.sources.iter().map(|s| s.source_name()).collect();
        f.debug_struct("ToolRegistry")
            .field("tools", &self.names())
            .field("sources", &sources)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use serde_json::{Value, json};

    struct Echo(&'static str);

    #[async_trait]
    impl Tool for Echo {
        fn name(&self) -> &str {
            self.0
        }
        fn description(&self) -> &str {
            "echoes"
        }
        fn parameters(&self) -> Value {
            json!({"type": "object"})
        }
        async fn call(&self, args: Value) -> Result<String> {
            Ok(args.to_string())
        }
    }

    #[test]
    fn registering_a_name_twice_replaces_the_tool_in_place() {
        let mut registry = ToolRegistry::new().with(Echo("a")).with(Echo("b"));
        registry.register(Echo("a"));
        assert_eq!(registry.names(), ["a", "b"]);
        assert_eq!(registry.definitions()[1].name, "b");
        assert!(registry.remove("a").is_some());
        assert_eq!(registry.names(), ["b"]);
        assert!(registry.get("a").is_none());
    }

    /// Found by a review: a tool named as another's sendable form (`functions.read_file`
    /// is offered as `functions_read_file_<hash>`) would take the other's calls.
    #[test]
    fn two_tools_offered_under_one_name_are_refused_naming_both() {
        let dotted = "functions.read_file";
        let sent: &'static str = crate::openai::sendable::sendable_call_name(dotted)
            .into_owned()
            .leak();
        let fine = ToolRegistry::new()
            .with(Echo(dotted))
            .with(Echo("functions_read_file"));
        assert_eq!(shared_sendable_name(&fine.definitions()), None);
        let clash = ToolRegistry::new().with(Echo(dotted)).with(Echo(sent));
        let err = shared_sendable_name(&clash.definitions()).unwrap();
        for named in [dotted, sent, "rename one"] {
            assert!(err.contains(named), "{named}: {err}");
        }
    }

    /// A source whose tool list the test swaps.
    type Snapshot = (u64, Arc<[Arc<dyn Tool>]>);
    struct Swapping(std::sync::Mutex<Snapshot>);

    impl ToolSource for Swapping {
        fn source_name(&self) -> &str {
            "swapping"
        }
        fn tools(&self) -> Arc<[Arc<dyn Tool>]> {
            self.0.lock().unwrap().1.clone()
        }
        fn revision(&self) -> u64 {
            self.0.lock().unwrap().0
        }
    }

    #[test]
    fn a_source_offers_its_current_tools_after_the_registered_ones() {
        let source = Arc::new(Swapping(std::sync::Mutex::new((
            1,
            Arc::from(vec![
                Arc::new(Echo("s1")) as Arc<dyn Tool>,
                Arc::new(Echo("a")),
            ]),
        ))));
        let mut registry = ToolRegistry::new().with(Echo("a"));
        registry.register_source(source.clone());
        let clone = registry.clone();
        assert_eq!(registry.names(), ["a", "s1"]);
        assert_eq!(registry.revision(), 1);
        *source.0.lock().unwrap() = (2, Arc::from(vec![Arc::new(Echo("s2")) as Arc<dyn Tool>]));
        assert_eq!(clone.names(), ["a", "s2"]);
        assert_eq!(clone.revision(), 2);
        assert!(clone.get("s2").is_some() && clone.get("s1").is_none());
        assert_eq!(clone.definitions()[1].name, "s2");
    }

    /// A source offering `names`, never changing.
    fn source(name: &'static str, names: &[&'static str]) -> Arc<dyn ToolSource> {
        let tools: Vec<Arc<dyn Tool>> = names.iter().map(|n| Arc::new(Echo(n)) as _).collect();
        Arc::new(Fixed(name, Arc::from(tools)))
    }
    struct Fixed(&'static str, Arc<[Arc<dyn Tool>]>);

    impl ToolSource for Fixed {
        fn source_name(&self) -> &str {
            self.0
        }
        fn tools(&self) -> Arc<[Arc<dyn Tool>]> {
            self.1.clone()
        }
        fn revision(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_name_two_owners_offer_is_refused_naming_both() {
        let mut registry = ToolRegistry::new().with(Echo("a"));
        registry.register_source(source("probe", &["probe__x", "probe__x", "b"]));
        registry.refuse_shared_names().unwrap();

        let mut same_server_twice = registry.clone();
        same_server_twice.register_source(source("probe", &["probe__x"]));
        let err = same_server_twice.refuse_shared_names().unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("`probe__x`"), "{message}");
        assert!(message.contains("by tool source `probe` and again by tool source `probe`"));

        let mut over_a_registered_tool = ToolRegistry::new().with(Echo("a"));
        over_a_registered_tool.register_source(source("other", &["c", "a"]));
        let message = over_a_registered_tool
            .refuse_shared_names()
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(
                "`a` is offered by the session's own tools and again by tool source `other`"
            ),
            "{message}"
        );
    }

    #[test]
    fn file_tools_need_an_existing_root() {
        let err = ToolRegistry::with_file_tools(["/definitely/not/here"]).unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let registry = ToolRegistry::with_file_tools([dir.path()]).unwrap();
        assert_eq!(
            registry.names(),
            ["read_file", "write_file", "list_directory", "delete_file"]
        );
    }
}
