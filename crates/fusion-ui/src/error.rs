//! [`UiError`]: why the UI could not start or stopped serving.
//!
//! Errors of a single page (a bad cursor, an unknown session) are not here: they are
//! answered as error pages and the server carries on.

use std::io;
use std::net::SocketAddr;

/// Why the UI could not start, or why serving stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UiError {
    /// The access token given is not one the UI can use (too short, or characters that a
    /// URL or a cookie would mangle).
    #[error("invalid UI token: {0}")]
    InvalidToken(String),
    /// The operating system's random source failed while making a token.
    #[error("cannot make a random UI token: {0}")]
    Random(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}{}", bind_hint(source))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// Accepting or serving connections failed.
    #[error("the UI server failed: {0}")]
    Serve(#[source] io::Error),
}

/// What to do about a bind error a person can fix, appended to its message.
fn bind_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::AddrInUse => {
            " (another program, or another `fusion ui`, holds this port: choose another with \
             --bind, or port 0 for any free one)"
        }
        io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need privileges: choose a port above 1024)"
        }
        io::ErrorKind::AddrNotAvailable => " (this machine has no such address)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_says_how_to_pick_another() {
        let err = UiError::Bind {
            addr: "127.0.0.1:8765".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("cannot listen on 127.0.0.1:8765: "),
            "{text}"
        );
        assert!(text.contains("choose another with --bind"), "{text}");
    }
}
