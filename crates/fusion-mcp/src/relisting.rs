//! At most one re-listing of a connection's tools at a time, however often the server
//! announces a change.

/// One connection's re-listing after `notifications/tools/list_changed`: at most one runs
/// at a time, and a notification while it runs makes it list once more when it finishes.
/// A server announcing a change thousands of times a second thus costs two listings, not
/// one task and one `tools/list` request per notification.
#[derive(Default)]
pub struct Relisting {
    state: std::sync::Mutex<RelistState>,
}

#[derive(Default)]
struct RelistState {
    running: bool,
    changed_again: bool,
}

impl Relisting {
    /// A change was announced: true when the caller is to start the re-listing, false
    /// when one is running (which will then list once more).
    pub fn start(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.running {
            state.changed_again = true;
            return false;
        }
        state.running = true;
        true
    }

    /// A listing finished: true when a change was announced since it started (the flag is
    /// then cleared for the next listing), else false and the re-listing ends.
    pub fn again(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let again = std::mem::take(&mut state.changed_again);
        state.running = again;
        again
    }
}
