//! Tools the agent can call: the [`Tool`](crate::Tool) trait, the
//! [`ToolRegistry`](crate::ToolRegistry) that offers them to the model, and the built-in
//! file tools.
//!
//! A tool is described to the model by its name, a description and a JSON Schema for its
//! arguments; the [`ToolExecutor`](crate::ToolExecutor) runs the calls the model makes.
//! Unlike an `Err` from storage or the LLM, which ends a turn, a failing tool never does:
//! its error becomes an observation the model reads and can react to. The built-in file
//! tools ([`files`]) are confined to workspace roots ([`Workspace`](crate::Workspace)).
//!
//! `Tool`, `ToolRegistry` and `Workspace` are at the crate root; this module holds what
//! writing or configuring tools needs beyond them: the built-in [`files`] tools and
//! [`check_arguments`].
//!
//! ```no_run
//! use async_trait::async_trait;
//! use fusion_agent::{Tool, ToolRegistry};
//! use serde_json::{json, Value};
//!
//! struct Clock;
//!
//! #[async_trait]
//! impl Tool for Clock {
//!     fn name(&self) -> &str { "clock" }
//!     fn description(&self) -> &str { "The current Unix time in seconds." }
//!     fn parameters(&self) -> Value { json!({"type": "object", "properties": {}}) }
//!     async fn call(&self, _args: Value) -> fusion_core::Result<String> {
//!         let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
//!         Ok(now.as_secs().to_string())
//!     }
//! }
//!
//! # fn demo() -> fusion_core::Result<()> {
//! let mut tools = ToolRegistry::with_file_tools(["./project"])?;
//! tools.register(Clock);
//! assert_eq!(tools.names(), ["read_file", "write_file", "list_directory", "delete_file", "clock"]);
//! # Ok(()) }
//! ```

pub mod files;
pub(crate) mod registry;
pub(crate) mod schema;
pub(crate) mod tool;
pub(crate) mod workspace;

pub use schema::check_arguments;
