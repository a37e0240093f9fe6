//! What a caught panic says, for the error or log line that reports it: tools and approvers
//! run under `catch_unwind`, so one that panics fails its call instead of the turn.

use std::any::Any;

/// `panicked: <message>` for a panic raised with a string (as `panic!` and `unwrap` do),
/// plain `panicked` for any other payload.
pub(crate) fn describe(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        format!("panicked: {text}")
    } else if let Some(text) = panic.downcast_ref::<String>() {
        format!("panicked: {text}")
    } else {
        "panicked".to_owned()
    }
}
