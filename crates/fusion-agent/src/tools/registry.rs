//! [`ToolRegistry`]: the tools a session offers to the model, in a stable order.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use fusion_core::Result;

use super::files::{DeleteFile, ListDirectory, ReadFile, WriteFile};
use super::tool::Tool;
use super::workspace::Workspace;
use crate::llm::ToolDefinition;

/// The tools offered to the model, in registration order (which is the order the model sees).
///
/// Cheap to clone: tools are shared behind `Arc`s.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    // A Vec rather than a map: registries hold a handful of tools, lookups by scanning are
    // as fast as hashing, and the order stays stable so prompts (and server-side prompt
    // caches) do not change between requests.
    tools: Vec<Arc<dyn Tool>>,
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

    /// The tool called `name`, if registered.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// Removes the tool called `name`, returning it.
    pub fn remove(&mut self, name: &str) -> Option<Arc<dyn Tool>> {
        let at = self.tools.iter().position(|t| t.name() == name)?;
        Some(self.tools.remove(at))
    }

    /// The registered tool names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name()).collect()
    }

    /// How many tools are registered.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// True when no tool is registered.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The definitions to advertise in a request, in order.
    pub fn definitions(&self) -> Vec<ToolDefinition> {
        self.tools
            .iter()
            .map(|t| ToolDefinition {
                name: t.name().to_owned(),
                description: t.description().to_owned(),
                parameters: t.parameters(),
            })
            .collect()
    }
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.names())
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
