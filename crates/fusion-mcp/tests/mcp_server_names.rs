//! A server's name is in every message and log line about it: one holding a control
//! character is shown escaped in the configuration's errors and refused at the start.

use fusion_core::Error;
use fusion_mcp::{McpConfig, McpOptions, McpServer, McpServers, StdioServerConfig};

/// Found by a review: a server name holding a line break or an escape sequence (a JSON
/// configuration's key, `"a\u001b[2J"`) was written as it is into the configuration's
/// errors ("server `…`: needs `command`") and into every message and log line naming the
/// server, where a command's control characters are escaped: it forged log lines or drove
/// the terminal.
#[tokio::test]
async fn a_server_name_holding_a_control_character_is_escaped_or_refused() {
    let json = r#"{"mcpServers": {"a\u001b[2J\nb": {"args": ["x"]}}}"#;
    let err = McpConfig::from_json_str(json).unwrap_err().to_string();
    assert!(err.contains("server `a\\u{1b}[2J\\nb`"), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\n'), "{err:?}");
    let json = r#"{"mcpServers": {"a\u001b[2J": {"command": 5}}}"#;
    let err = McpConfig::from_json_str(json).unwrap_err().to_string();
    assert!(
        err.contains("server `a\\u{1b}[2J`, field `command`"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");

    // Refused before anything is started (the command does not exist either).
    let named = "tools\n\u{202e}evil";
    let config = StdioServerConfig::new("fusion-no-such-mcp-server");
    let started = McpServer::start(named, config.clone(), McpOptions::default()).await;
    let Err(Error::Config(message)) = started else {
        panic!("the start should be refused")
    };
    assert!(message.contains("`tools\\n\\u{202e}evil`"), "{message}");
    assert!(message.contains("control character"), "{message}");
    assert!(
        !message.contains('\n') && !message.contains('\u{202e}'),
        "{message:?}"
    );
    let set = McpConfig::new().with(named, config);
    let Err(Error::Config(message)) = McpServers::start(&set, McpOptions::default()).await else {
        panic!("the start should be refused")
    };
    assert!(message.contains("control character"), "{message}");
}

/// Found by a review: the refusal took every character `shown` escapes, so a name in
/// right-to-left text holding a direction mark (U+200F, U+200E, U+061C), which such
/// keyboards type and which reorders no more than the letters around it, was refused
/// where it had started before. Only what forges a line or reorders the rest of it is.
#[tokio::test]
async fn a_name_in_any_script_with_its_marks_and_joiners_starts() {
    let config = StdioServerConfig::new("fusion-no-such-mcp-server");
    for name in [
        "שרת\u{200f}-1",
        "خادم\u{200e} ملفات",
        "\u{061c}أدوات",
        "👨\u{200d}💻 dev",
        "کتاب\u{200c}ها",
        "⚙\u{fe0f} tools",
    ] {
        let set = McpConfig::new().with(name, config.clone());
        let Err(Error::Config(message)) = McpServers::start(&set, McpOptions::default()).await
        else {
            panic!("{name}: the command does not exist")
        };
        assert!(!message.contains("control character"), "{name}: {message}");
        assert!(
            message.contains("fusion-no-such-mcp-server"),
            "{name}: {message}"
        );
    }
}
