//! The `data` of a `json` export's `meta`, read as written.

use super::super::*;
use super::{chain, with_meta};

/// A key written twice in `meta.data`, at any depth, in an object inside an array too,
/// would lose its first value: refused where it is, as a message's is. One written once
/// reads as it was, and `data` that is no object is refused as before.
#[test]
fn a_key_written_twice_in_the_metadata_data_is_refused() {
    for data in [
        r#"{"ticket": 1, "ticket": 2}"#,
        r#"{"ticket": {"n": 1, "n": 2}}"#,
        r#"{"list": [{"a": 1}, {"n": 1, "n": 2}]}"#,
    ] {
        let text = with_meta(&format!(r#"{{"title": "t", "data": {data}}}"#));
        let err = read(&text).unwrap_err();
        let said = chain(&err);
        assert!(matches!(err, ImportError::Document(_)), "{data}: {said}");
        assert!(
            said.contains("is written twice at line 1 column"),
            "{data}: {said}"
        );
    }
    let text = with_meta(r#"{"data": {"ticket": {"n": [1, {"m": null}]}, "b": 2}}"#);
    let meta = read(&text).unwrap().meta;
    let expected = serde_json::json!({"ticket": {"n": [1, {"m": null}]}, "b": 2});
    assert_eq!(serde_json::Value::Object(meta.data), expected);
    let err = chain(&read(&with_meta(r#"{"data": "x"}"#)).unwrap_err());
    assert!(
        err.contains("invalid type: string \"x\", expected a JSON object"),
        "{err}"
    );
}
