//! Which call of the reply so far each streamed tool-call piece belongs to: by its
//! `index`, or, for servers that leave it out, by its id and name.

use super::{Assembler, PartialCall, PieceIndex};

impl Assembler {
    /// The slot a piece streamed at `index` (bringing `id`, if any, and a name if
    /// `named`) goes to. A piece with a name and an id other than the one the server gave
    /// the call in that slot is another call, not more of it: servers that number every
    /// parallel call 0 (Ollama) tell their calls apart only by id, and merging them would
    /// run one call with both calls' arguments run together and silently drop the other.
    /// A piece with another id but no name continues the call: some servers send a fresh
    /// id with every piece of one call (Poolside, mlx-openai-server), and every call
    /// starts with its name.
    pub(super) fn slot_of(&mut self, index: PieceIndex, id: Option<&str>, named: bool) -> usize {
        let slot = match (self.slots.get(&index), &index) {
            (Some(&slot), _) => slot,
            // First sight of this index: its own slot, unless a call moved there (or it is
            // no number, which keeps its pieces together but orders nothing).
            (None, PieceIndex::Number(own)) if !self.calls.contains_key(own) => *own,
            (None, _) => self.next_slot(),
        };
        let another = named
            && id.is_some_and(|id| {
                self.calls
                    .get(&slot)
                    .is_some_and(|call| call.id_given && call.id != id)
            });
        let slot = if another { self.next_slot() } else { slot };
        self.slots.insert(index, slot);
        slot
    }

    /// The slot of a piece streamed without an `index`, bringing `id` and `name` if any,
    /// and arguments `fragment`; and, for a piece without a name that starts a new call,
    /// the name the last piece of its id gave once the arguments of the call before were
    /// whole (its first piece, taken for a repeat: see [`PartialCall::named_again`]).
    ///
    /// Servers that leave out `index` send each call's pieces one after another, a new
    /// call starting with a new id (or a name, without ids); some repeat the call's id on
    /// each piece, and its name on the last (vLLM). So a piece with neither continues the
    /// last call; a piece with an id is more of the latest call the server gave that id,
    /// the last one or an earlier one whose pieces it interleaved, unless it is another
    /// call given the same id: it names another tool (a call's name does not change), or
    /// it starts new arguments after that call's are whole (a server that sends each call
    /// whole, or its name first and then its arguments, one id for all). Anything else
    /// starts a new call.
    pub(super) fn unindexed_slot(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        fragment: Option<&str>,
    ) -> (usize, Option<String>) {
        let Some(last) = self.last_call else {
            return (self.next_slot(), None);
        };
        if id.is_none() && name.is_none() {
            return (last, None);
        }
        let given = id.and_then(|id| {
            let mut calls = self.calls.iter().rev();
            calls.find(|(_, call)| call.id_given && call.id == id)
        });
        match given {
            Some((&slot, call))
                if name.is_none_or(|name| call.name.is_empty() || call.name == name) =>
            {
                if !starts_after_whole(call, fragment) {
                    (slot, None)
                } else {
                    let named = (name.is_none() && call.named_again).then(|| call.name.clone());
                    (self.next_slot(), named)
                }
            }
            _ => (self.next_slot(), None),
        }
    }

    /// The slot after every call so far.
    fn next_slot(&self) -> usize {
        // Saturating: a server may number a call usize::MAX (a later one then shares it).
        self.calls
            .keys()
            .next_back()
            .map_or(0, |last| last.saturating_add(1))
    }
}

/// Whether arguments `fragment` start a JSON object after `call`'s arguments are a whole
/// one, so cannot be more of them. Checked in that order, and parsed only when the
/// arguments end in `}` and the fragment starts with `{` (which no continuation of JSON
/// does right after a `}`), so a long call streamed in many pieces is not parsed anew
/// for each.
fn starts_after_whole(call: &PartialCall, fragment: Option<&str>) -> bool {
    let arguments = call.arguments.as_deref().unwrap_or_default();
    fragment.is_some_and(|f| f.trim_start().starts_with('{'))
        && arguments.trim_end().ends_with('}')
        && serde_json::from_str::<serde::de::IgnoredAny>(arguments).is_ok()
}
