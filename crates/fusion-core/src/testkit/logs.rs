//! What code logs, captured as text for a test to read: a `tracing` subscriber that
//! writes into a buffer, without colours.

use std::sync::{Arc, Mutex, PoisonError};

/// The lines logged through [`Logs::subscriber`]'s subscribers. Clones share them.
///
/// ```
/// use fusion_core::testkit::logs::Logs;
///
/// let logs = Logs::new();
/// tracing::subscriber::with_default(logs.subscriber(tracing::Level::WARN), || {
///     tracing::warn!(tool = "extra", "MCP tool left out");
///     tracing::info!("not at warn");
/// });
/// assert!(logs.text().contains("MCP tool left out tool=\"extra\""));
/// assert!(!logs.text().contains("not at warn"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Nothing logged yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A subscriber writing every event at `level` and above into these logs. Install it
    /// for a closure (`tracing::subscriber::with_default`), from here on in this thread
    /// (`set_default`: a current-thread runtime's spawned tasks too), or for one future
    /// (`tracing::instrument::WithSubscriber`).
    pub fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut logged = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        logged.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
