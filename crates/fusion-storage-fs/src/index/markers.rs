//! The index's markers as the rest of the crate reaches them: the owner and tag sets
//! ([`sets`]) and the expiry markers ([`expiry`]), under the index's directory.

use std::ops::ControlFlow;

use fusion_core::Result;

use super::own_dirs::CheckedDirs;
use super::sets::{self, Members, SetKey};
use super::{Index, expiry};

impl Index {
    /// Adds `id` to a set (see [`sets`]); with `sync`, durably.
    pub(crate) fn add_member(&self, key: SetKey<'_>, id: &str, sync: bool) -> Result<()> {
        sets::add(&self.root, key, id, sync, None)
    }

    /// [`Self::add_member`] for a build, without durability, checking each directory on
    /// the way once per `checked` (see [`super::own_dirs::check_once`]).
    pub(crate) fn restore_member(
        &self,
        key: SetKey<'_>,
        id: &str,
        checked: &mut CheckedDirs,
    ) -> Result<()> {
        sets::add(&self.root, key, id, false, Some(checked))
    }

    /// Removes `id` from a set.
    pub(crate) fn remove_member(&self, key: SetKey<'_>, id: &str) -> Result<()> {
        sets::remove(&self.root, key, id)
    }

    /// Whether `id` has a marker in a set, whose directory [`Self::members_up_to`] found
    /// its own ([`Members::Many`]) for the same page: not checked again here.
    pub(crate) fn is_member(&self, key: SetKey<'_>, id: &str) -> Result<bool> {
        sets::contains(&self.root, key, id)
    }

    /// A set's members if it has at most `limit`, else whether its markers tell.
    pub(crate) fn members_up_to(&self, key: SetKey<'_>, limit: usize) -> Result<Members> {
        sets::members_up_to(&self.root, key, limit)
    }

    /// Adds the expiry marker of `id` at `at` (a [`marker_instant`](expiry::marker_instant); see [`expiry`]); with
    /// `sync`, durably.
    pub(crate) fn add_expiry(&self, at: i64, id: &str, sync: bool) -> Result<()> {
        expiry::add(&self.root, at, id, sync, None)
    }

    /// [`Self::add_expiry`] for a build, without durability, checking each directory on
    /// the way once per `checked` (see [`super::own_dirs::check_once`]).
    pub(crate) fn restore_expiry(
        &self,
        at: i64,
        id: &str,
        checked: &mut CheckedDirs,
    ) -> Result<()> {
        expiry::add(&self.root, at, id, false, Some(checked))
    }

    /// Removes the expiry marker of `id` at `at`, if any.
    pub(crate) fn remove_expiry(&self, at: i64, id: &str) -> Result<()> {
        expiry::remove(&self.root, at, id)
    }

    /// Calls `f` with every expiry marker at or before `now`, earliest first, until it
    /// breaks: O(those markers), whatever the number of sessions. `false` when a bucket
    /// due was skipped, a link (see [`expiry::for_each_due`]).
    pub(crate) fn for_each_due(
        &self,
        now: i64,
        f: impl FnMut(i64, String) -> Result<ControlFlow<()>>,
    ) -> Result<bool> {
        expiry::for_each_due(&self.root, now, f)
    }
}
