//! [`ToolBudget`]: how many tools the servers of one set may offer together
//! ([`McpOptions::max_tools`](crate::McpOptions::max_tools)).
//!
//! Providers refuse a request offering more tools than they take (OpenAI: 128), so a set
//! of servers listing more would fail every request of the session. The bound is held
//! where a server's tools are built from a listing: each listing takes what it offers from
//! what the other servers of the set do not offer, and the tools past that are left out,
//! so no list change can push the set over it.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The tools offered by each server of a set, within a limit for them all.
#[derive(Debug)]
pub struct ToolBudget {
    max: usize,
    /// Server name → tools it offers now.
    offered: Mutex<BTreeMap<String, usize>>,
}

impl ToolBudget {
    /// A budget of `max` tools for a set of servers.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            offered: Mutex::new(BTreeMap::new()),
        }
    }

    /// The limit for the whole set.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many of `wanted` tools `server` may offer, now that it has listed them: as
    /// many as the other servers leave of the limit. That many are then counted as its
    /// own until its next listing; a share another server gives up is taken at this
    /// server's next listing, not before.
    pub fn take(&self, server: &str, wanted: usize) -> usize {
        let mut offered = self.offered.lock().unwrap_or_else(|e| e.into_inner());
        let others: usize = offered
            .iter()
            .filter(|(name, _)| name.as_str() != server)
            .map(|(_, count)| count)
            .sum();
        let granted = wanted.min(self.max.saturating_sub(others));
        offered.insert(server.to_owned(), granted);
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_share_the_limit_in_the_order_they_list() {
        let budget = ToolBudget::new(10);
        assert_eq!(budget.take("a", 6), 6);
        assert_eq!(budget.take("b", 6), 4);
        // `a` listing again keeps its share, and cannot take `b`'s.
        assert_eq!(budget.take("a", 8), 6);
        assert_eq!(budget.take("a", 2), 2);
        assert_eq!(budget.take("b", 9), 8);
    }
}
