//! [`McpTool`]: one tool of an MCP server as the agent sees it: the server's description
//! (cut to the configured length) and input schema, its effects from the server's
//! annotations, and calls forwarded to the server.

use std::sync::Weak;

use async_trait::async_trait;
use fusion_agent::{Tool, ToolEffects};
use fusion_core::{Error, Result};
use serde_json::Value;

use crate::core::Core;
use crate::schema;

/// A tool of an MCP server, under its [collision-free name](crate::naming).
pub struct McpTool {
    name: String,
    mcp_name: String,
    description: String,
    parameters: Value,
    effects: ToolEffects,
    // Weak: the server owns its tools' snapshot, so a strong link would keep it (and its
    // process) alive forever.
    core: Weak<Core>,
}

impl McpTool {
    /// The tool `listed` by the server behind `core`, called `name` by the model, its
    /// description cut to `max_description_chars`. Fails, with the reason, when its input
    /// schema is not a well-formed JSON Schema for an object (the only kind of arguments
    /// a model can send) of at most [`MAX_SCHEMA_BYTES`](crate::MAX_SCHEMA_BYTES).
    pub fn new(
        name: String,
        listed: &rmcp::model::Tool,
        max_description_chars: usize,
        core: Weak<Core>,
    ) -> Result<Self, String> {
        let schema = &listed.input_schema;
        schema::check_input_schema(schema)?;
        let description = listed
            .description
            .as_deref()
            .or(listed.title.as_deref())
            .unwrap_or("");
        let description = match cut_description(description, max_description_chars) {
            Some(cut) => {
                tracing::info!(
                    tool = %name,
                    chars = description.chars().count(),
                    max = max_description_chars,
                    "MCP tool description cut"
                );
                cut
            }
            None => description.to_owned(),
        };
        Ok(Self {
            name,
            mcp_name: listed.name.to_string(),
            description,
            parameters: Value::Object((**schema).clone()),
            effects: effects(listed.annotations.as_ref()),
            core,
        })
    }
}

impl McpTool {
    /// The tool's name on the server.
    pub fn mcp_name(&self) -> &str {
        &self.mcp_name
    }
}

/// `description` cut to `max` characters, its end replaced by a note saying how long it
/// was; `None` when it fits. The note counts toward `max`, so the result is what a
/// provider checking that length takes.
fn cut_description(description: &str, max: usize) -> Option<String> {
    let chars = description.chars().count();
    if chars <= max {
        return None;
    }
    let note = format!(" [description cut: {chars} characters]");
    let keep = max.saturating_sub(note.chars().count() + 1);
    let kept: String = description.chars().take(keep).collect();
    let mut cut = format!("{}…{note}", kept.trim_end());
    if cut.chars().count() > max {
        // A limit shorter than the note: the text alone, cut to the limit.
        cut = description.chars().take(max).collect();
    }
    Some(cut)
}

/// The hints read cautiously: read-only only when `readOnlyHint` is true; destructive
/// when `destructiveHint` is true or the tool is not marked read-only, because a tool that
/// does not promise to only read may change things, and a server's `destructiveHint:
/// false` is a claim an approval policy should not rest on alone.
fn effects(annotations: Option<&rmcp::model::ToolAnnotations>) -> ToolEffects {
    let read_only = annotations.and_then(|a| a.read_only_hint) == Some(true);
    let destructive = annotations.and_then(|a| a.destructive_hint) == Some(true) || !read_only;
    ToolEffects {
        read_only,
        destructive,
    }
}

#[async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    fn effects(&self) -> ToolEffects {
        self.effects
    }

    async fn call(&self, args: Value) -> Result<String> {
        let Some(core) = self.core.upgrade() else {
            return Err(Error::Tool {
                tool: self.name.clone(),
                message: "its MCP server has been shut down".to_owned(),
            });
        };
        core.call(&self.name, &self.mcp_name, args).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ToolAnnotations;
    use serde_json::json;

    fn listed(schema: Value, annotations: Option<ToolAnnotations>) -> rmcp::model::Tool {
        let mut tool = rmcp::model::Tool::new(
            "t",
            "does t",
            std::sync::Arc::new(schema.as_object().unwrap().clone()),
        );
        tool.annotations = annotations;
        tool
    }

    #[test]
    fn only_object_schemas_are_accepted() {
        let ok = McpTool::new(
            "s__t".into(),
            &listed(json!({"type": "object"}), None),
            1024,
            Weak::new(),
        );
        let ok = ok.unwrap();
        assert_eq!((ok.name(), ok.description()), ("s__t", "does t"));
        assert_eq!(ok.parameters(), json!({"type": "object"}));
        for (schema, says) in [
            (json!({"type": "string"}), "\"type\": \"string\""),
            (json!({"properties": {}}), "no \"type\""),
            (
                json!({"type": "object", "properties": []}),
                "\"properties\"",
            ),
        ] {
            let reason = McpTool::new("s__t".into(), &listed(schema, None), 1024, Weak::new())
                .err()
                .unwrap();
            assert!(reason.contains(says), "{reason}");
        }
    }

    #[test]
    fn a_long_description_is_cut_to_the_limit_with_a_note() {
        let mut huge = listed(json!({"type": "object"}), None);
        huge.description = Some(format!("Fetches pages. {}", "é".repeat(5 << 20)).into());
        let tool = McpTool::new("s__t".into(), &huge, 1024, Weak::new()).unwrap();
        let description = tool.description();
        assert_eq!(description.chars().count(), 1024);
        assert!(
            description.starts_with("Fetches pages. éé"),
            "{description}"
        );
        assert!(
            description.ends_with("é… [description cut: 5242895 characters]"),
            "{description}"
        );
        let fits = McpTool::new("s__t".into(), &huge, 6 << 20, Weak::new()).unwrap();
        assert_eq!(fits.description(), huge.description.as_deref().unwrap());
        assert_eq!(cut_description("abcdef", 3).as_deref(), Some("abc"));
        assert_eq!(cut_description("abc", 3), None);
    }

    #[test]
    fn effects_follow_the_hints_with_mcp_defaults() {
        let hints = |read_only: Option<bool>, destructive: Option<bool>| {
            let mut a = ToolAnnotations::default();
            a.read_only_hint = read_only;
            a.destructive_hint = destructive;
            effects(Some(&a))
        };
        assert_eq!(effects(None), ToolEffects::DESTRUCTIVE);
        assert_eq!(hints(Some(true), None), ToolEffects::READ_ONLY);
        assert_eq!(hints(Some(false), Some(false)), ToolEffects::DESTRUCTIVE);
        assert_eq!(
            hints(Some(true), Some(true)),
            ToolEffects {
                read_only: true,
                destructive: true
            }
        );
    }
}
