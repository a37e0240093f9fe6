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
#[derive(Clone, Debug)]
pub struct Logs {
    lines: Arc<Mutex<Vec<u8>>>,
    /// A dispatcher that records nothing, alive as long as these logs: while tracing-core
    /// knows of just one dispatcher, it asks only the calling thread's whether a callsite
    /// is wanted, so a test of the same binary reaching a callsite first on a thread with
    /// no subscriber marks it "never" for every thread, and the events a capturing test
    /// waits for are lost. With two alive, every live dispatcher is asked.
    _second: tracing::Dispatch,
}

impl Default for Logs {
    fn default() -> Self {
        Self {
            lines: Arc::default(),
            _second: tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
        }
    }
}

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
        String::from_utf8_lossy(&self.lines.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut logged = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        logged.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::Logs;

    #[test]
    fn a_callsite_first_reached_on_a_thread_without_a_subscriber_still_logs_here() {
        fn warn_from_either_thread() {
            tracing::warn!("reached from two threads");
        }
        let logs = Logs::new();
        let (installed, wait_installed) = mpsc::channel();
        let (reached, wait_reached) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                wait_installed.recv().unwrap();
                warn_from_either_thread();
                reached.send(()).unwrap();
            });
            tracing::subscriber::with_default(logs.subscriber(tracing::Level::WARN), || {
                installed.send(()).unwrap();
                wait_reached.recv().unwrap();
                warn_from_either_thread();
            });
        });
        assert!(
            logs.text().contains("reached from two threads"),
            "{}",
            logs.text()
        );
    }
}
