//! The built-in file tools: `read_file`, `write_file`, `list_directory` and `delete_file`,
//! each confined to a [`Workspace`].
//! [`ToolRegistry::with_file_tools`](crate::ToolRegistry::with_file_tools) and
//! [`register_file_tools`](crate::ToolRegistry::register_file_tools) register all four.
//!
//! Every path goes through the workspace checks first (no absolute path outside a root,
//! no `..` or symbolic-link escape), and every failure is an [`Error::Tool`] worded for
//! the model. The file system is used through `std::fs` inside `spawn_blocking`, one hop
//! per call rather than one per syscall as `tokio::fs` would take.

use std::collections::BinaryHeap;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::{Error, Result, regular_file};
use serde_json::{Value, json};

use super::tool::{Tool, ToolEffects};
use super::workspace::{Workspace, describe_io};

/// The default cap on what `read_file` returns: 1 MiB.
pub const DEFAULT_MAX_READ_BYTES: usize = 1024 * 1024;

/// Longest `path` argument accepted: Linux's `PATH_MAX`.
const MAX_PATH_BYTES: usize = 4096;

/// Longest listing `list_directory` returns, so one huge directory cannot flood the context.
const MAX_LIST_ENTRIES: usize = 1000;

/// `read_file {path}`: the text of a file, up to a size cap.
#[derive(Debug, Clone)]
pub struct ReadFile {
    workspace: Arc<Workspace>,
    max_bytes: usize,
}

impl ReadFile {
    /// Reads inside `workspace`, up to [`DEFAULT_MAX_READ_BYTES`].
    pub fn new(workspace: Arc<Workspace>) -> Self {
        Self {
            workspace,
            max_bytes: DEFAULT_MAX_READ_BYTES,
        }
    }

    /// Caps what one call returns at `max_bytes`; longer files are cut, and the output says so.
    ///
    /// The executor bounds every call's output too
    /// ([`ExecutorConfig::max_output_bytes`](crate::ExecutorConfig::max_output_bytes), by
    /// default [`DEFAULT_MAX_READ_BYTES`] and room for this tool's note): a cap past that
    /// bound is cut again there, to the start and the end of what was read, so raise both.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

#[async_trait]
impl Tool for ReadFile {
    fn effects(&self) -> ToolEffects {
        ToolEffects::READ_ONLY
    }

    fn name(&self) -> &str {
        "read_file"
    }

    fn description(&self) -> &str {
        "Read a UTF-8 text file in the workspace and return its contents. \
         Paths are relative to the workspace root."
    }

    fn parameters(&self) -> Value {
        path_schema("The file to read, relative to the workspace root.")
    }

    async fn call(&self, args: Value) -> Result<String> {
        let path = path_arg("read_file", &args)?;
        let (workspace, max) = (self.workspace.clone(), self.max_bytes);
        blocking("read_file", move || {
            let real = workspace.resolve_existing(&path)?;
            if real.is_dir() {
                return Err(format!(
                    "`{path}` is a directory; use list_directory to see what it holds"
                ));
            }
            // A FIFO would wait for a writer for ever, and a device give endless bytes.
            let (file, meta) = regular_file::open(OpenOptions::new().read(true), &real)
                .map_err(|e| io_msg(&path, &e))?;
            // One byte past the cap tells "exactly max" from "longer", without trusting the
            // size in the metadata (it can change).
            let mut bytes = Vec::new();
            file.take((max as u64).saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|e| io_msg(&path, &e))?;
            let truncated = bytes.len() > max;
            bytes.truncate(max);
            let mut text = match String::from_utf8(bytes) {
                Ok(text) => text,
                // The cut landed inside a multi-byte character: drop its first bytes.
                Err(e) if truncated && e.utf8_error().error_len().is_none() => {
                    let valid = e.utf8_error().valid_up_to();
                    let mut bytes = e.into_bytes();
                    bytes.truncate(valid);
                    String::from_utf8(bytes).unwrap_or_default()
                }
                Err(_) => {
                    return Err(format!(
                        "`{path}` is not a UTF-8 text file ({} bytes); read_file only reads text",
                        meta.len()
                    ));
                }
            };
            if truncated {
                text.push_str(&format!(
                    "\n\n[read_file: output truncated to the first {max} bytes of `{path}` \
                     ({} bytes in all)]",
                    meta.len()
                ));
            } else if text.is_empty() {
                text = format!("(`{path}` is empty)");
            }
            Ok(text)
        })
        .await
    }
}

/// `write_file {path, content}`: creates or replaces a file, creating missing directories.
#[derive(Debug, Clone)]
pub struct WriteFile {
    workspace: Arc<Workspace>,
}

impl WriteFile {
    /// Writes inside `workspace`.
    pub fn new(workspace: Arc<Workspace>) -> Self {
        Self { workspace }
    }
}

#[async_trait]
impl Tool for WriteFile {
    fn effects(&self) -> ToolEffects {
        ToolEffects::DESTRUCTIVE
    }

    fn name(&self) -> &str {
        "write_file"
    }

    fn description(&self) -> &str {
        "Create or overwrite a text file in the workspace with the given content, creating \
         missing parent directories. Paths are relative to the workspace root."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "The file to write, relative to the workspace root."},
                "content": {"type": "string", "description": "The complete new content of the file."}
            },
            "required": ["path", "content"]
        })
    }

    async fn call(&self, args: Value) -> Result<String> {
        let path = path_arg("write_file", &args)?;
        let content = match args.get("content") {
            Some(Value::String(content)) => content.clone(),
            _ => return Err(tool_error("write_file", "`content` must be a string")),
        };
        if names_a_directory(&path) {
            return Err(tool_error(
                "write_file",
                format!(
                    "`{path}` names a directory (it ends with `/`, `.` or `..`); give a file's name"
                ),
            ));
        }
        let workspace = self.workspace.clone();
        blocking("write_file", move || {
            let entry = workspace.resolve_entry(&path)?;
            let existing = match entry.symlink_metadata() {
                Ok(meta) if meta.is_dir() => {
                    return Err(format!("`{path}` is a directory, not a file"));
                }
                Ok(meta) => {
                    regular_file::check(&meta).map_err(|e| io_msg(&path, &e))?;
                    // Replacing goes through the directory, which would get past a file
                    // made read-only to keep it as it is: refused, whoever runs the agent.
                    if meta.permissions().readonly() {
                        return Err(format!(
                            "`{path}`: permission denied (the file is read-only)"
                        ));
                    }
                    Some(meta.permissions())
                }
                Err(_) => None,
            };
            if let Some(parent) = entry.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_msg(&path, &e))?;
            }
            // Whole or not at all, so a failed write (a full disk) keeps the old content;
            // and a new file, so a hard link to one outside the workspace is not written
            // through.
            let verb = if existing.is_some() {
                "replaced"
            } else {
                "created"
            };
            regular_file::replace(&entry, content.as_bytes(), existing)
                .map_err(|e| io_msg(&path, &e))?;
            Ok(format!(
                "Wrote {} bytes to `{path}` ({verb}).",
                content.len()
            ))
        })
        .await
    }
}

/// `list_directory {path?}`: the entries of a directory, sorted, directories marked `/`.
#[derive(Debug, Clone)]
pub struct ListDirectory {
    workspace: Arc<Workspace>,
}

impl ListDirectory {
    /// Lists inside `workspace`.
    pub fn new(workspace: Arc<Workspace>) -> Self {
        Self { workspace }
    }
}

#[async_trait]
impl Tool for ListDirectory {
    fn effects(&self) -> ToolEffects {
        ToolEffects::READ_ONLY
    }

    fn name(&self) -> &str {
        "list_directory"
    }

    fn description(&self) -> &str {
        "List the files and directories in a workspace directory (directories end in `/`, \
         symbolic links in `@`). Paths are relative to the workspace root; omit `path` or \
         use \".\" for the root."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "The directory to list, relative to the workspace root (default \".\")."}
            }
        })
    }

    async fn call(&self, args: Value) -> Result<String> {
        let path = match args.get("path") {
            None | Some(Value::Null) => ".".to_owned(),
            Some(_) => path_arg("list_directory", &args)?,
        };
        let workspace = self.workspace.clone();
        blocking("list_directory", move || {
            let real = workspace.resolve_existing(&path)?;
            if !real.is_dir() {
                return Err(format!(
                    "`{path}` is a file, not a directory; use read_file to read it"
                ));
            }
            // The first entries by name, kept in a heap whose top is the last of them, so a
            // huge directory costs a pass over its names, not memory and a `stat` each.
            let mut first = BinaryHeap::with_capacity(MAX_LIST_ENTRIES + 1);
            let mut total = 0usize;
            for entry in std::fs::read_dir(&real).map_err(|e| io_msg(&path, &e))? {
                let entry = entry.map_err(|e| io_msg(&path, &e))?;
                total += 1;
                let raw = entry.file_name();
                let name = raw.to_string_lossy().into_owned();
                if first.len() == MAX_LIST_ENTRIES
                    && first.peek().is_some_and(|(last, _)| &name >= last)
                {
                    continue;
                }
                first.push((name, raw));
                if first.len() > MAX_LIST_ENTRIES {
                    first.pop();
                }
            }
            if total == 0 {
                return Ok(format!("(`{path}` is empty)"));
            }
            let lines: Vec<String> = first
                .into_sorted_vec()
                .into_iter()
                .map(|(name, raw)| entry_line(name, &real.join(raw)))
                .collect();
            let mut out = lines.join("\n");
            if total > MAX_LIST_ENTRIES {
                out.push_str(&format!(
                    "\n[list_directory: showing the first {MAX_LIST_ENTRIES} of {total} entries by name]"
                ));
            }
            Ok(out)
        })
        .await
    }
}

/// The line of a listing for the entry `name` at `path`: `name/` for a directory, `name@`
/// for a link (not followed), else `name (N bytes)`; only `name` if it went meanwhile.
fn entry_line(name: String, path: &std::path::Path) -> String {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => format!("{name}/"),
        Ok(meta) if meta.is_symlink() => format!("{name}@"),
        Ok(meta) => format!("{name} ({} bytes)", meta.len()),
        Err(_) => name,
    }
}

/// `delete_file {path}`: removes one file (never a directory, never through a link).
#[derive(Debug, Clone)]
pub struct DeleteFile {
    workspace: Arc<Workspace>,
}

impl DeleteFile {
    /// Deletes inside `workspace`.
    pub fn new(workspace: Arc<Workspace>) -> Self {
        Self { workspace }
    }
}

#[async_trait]
impl Tool for DeleteFile {
    fn effects(&self) -> ToolEffects {
        ToolEffects::DESTRUCTIVE
    }

    fn name(&self) -> &str {
        "delete_file"
    }

    fn description(&self) -> &str {
        "Delete one file in the workspace (not a directory). Paths are relative to the \
         workspace root."
    }

    fn parameters(&self) -> Value {
        path_schema("The file to delete, relative to the workspace root.")
    }

    async fn call(&self, args: Value) -> Result<String> {
        let path = path_arg("delete_file", &args)?;
        if names_a_directory(&path) {
            return Err(tool_error(
                "delete_file",
                format!(
                    "`{path}` names a directory (it ends with `/`, `.` or `..`); delete_file only \
                     deletes files"
                ),
            ));
        }
        let workspace = self.workspace.clone();
        blocking("delete_file", move || {
            let entry = workspace.resolve_entry(&path)?;
            let meta = entry.symlink_metadata().map_err(|e| io_msg(&path, &e))?;
            if meta.is_dir() {
                return Err(format!(
                    "`{path}` is a directory; delete_file only deletes files"
                ));
            }
            std::fs::remove_file(&entry).map_err(|e| io_msg(&path, &e))?;
            Ok(format!("Deleted `{path}`."))
        })
        .await
    }
}

fn path_schema(description: &str) -> Value {
    json!({
        "type": "object",
        "properties": {"path": {"type": "string", "description": description}},
        "required": ["path"]
    })
}

/// The `path` argument (the executor already checked the schema; this guards direct
/// callers). One longer than any file system takes is refused without being
/// quoted, so no message echoes megabytes of the model's text back to it.
fn path_arg(tool: &str, args: &Value) -> Result<String> {
    match args.get("path") {
        Some(Value::String(path)) if path.len() > MAX_PATH_BYTES => Err(tool_error(
            tool,
            format!(
                "`path` is {} bytes long; a path is at most {MAX_PATH_BYTES} bytes",
                path.len()
            ),
        )),
        Some(Value::String(path)) => Ok(path.clone()),
        _ => Err(tool_error(tool, "`path` must be a string")),
    }
}

/// Whether `path`, as the model wrote it, can only name a directory: it ends with `/`,
/// `.` or `..`. The workspace's lexical normalisation drops such endings, so without this
/// `newdir/` or `notes.txt/.` would name the file `newdir` or `notes.txt`.
fn names_a_directory(path: &str) -> bool {
    matches!(path.rsplit('/').next(), Some("" | "." | ".."))
}

fn tool_error(tool: &str, message: impl Into<String>) -> Error {
    Error::Tool {
        tool: tool.to_owned(),
        message: message.into(),
    }
}

fn io_msg(path: &str, e: &io::Error) -> String {
    format!("`{path}`: {}", describe_io(e))
}

/// Runs `work` on the blocking pool, turning its message into an [`Error::Tool`].
async fn blocking<T: Send + 'static>(
    tool: &'static str,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|message| tool_error(tool, message)),
        // Re-raised so the executor reports a panic the same way for every tool.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(tool_error(
            tool,
            format!("the file operation was cancelled: {e}"),
        )),
    }
}
