//! `fusion sessions tag / retitle / set-owner` (and `expire`, in `retention`): change a
//! session's metadata in one atomic step
//! ([`update_session`](fusion::storage::ConversationStorage::update_session)); and how
//! `import --replace` and `migrate` bring one copy of a session's metadata in line with
//! another.
//!
//! Metadata follows the same "nothing lost" rule as messages in `migrate`: what the target
//! lacks is filled in from the source ([`merge`]), a value both hold differently is a
//! difference to report, and only an explicit overwrite (`--replace`, `--force`) makes the
//! target equal to the source ([`overwrite`]).

use anyhow::{Context, Result, bail};
use fusion::SessionId;
use fusion::storage::{MetaUpdate, SessionInfo, SessionMeta};

use crate::render;
use crate::store::Store;

/// `sessions tag ID --add T --remove T`.
pub async fn tag(store: &Store, id: &str, add: Vec<String>, remove: Vec<String>) -> Result<()> {
    if add.is_empty() && remove.is_empty() {
        bail!("nothing to change: pass --add TAG or --remove TAG");
    }
    // The storage would add it and then remove it, saying only that the session lacks it:
    // refused instead, as a typo or a script's mistake, before anything is written.
    if let Some(tag) = add.iter().find(|tag| remove.contains(tag)) {
        bail!("tag {tag:?} is both in --add and in --remove; name it in one of them");
    }
    let mut update = MetaUpdate::new();
    update.add_tags = add;
    update.remove_tags = remove;
    let info = apply(store, id, &update).await?;
    let tags = match info.meta.tags.as_slice() {
        [] => "none".to_string(),
        tags => tags.join(", "),
    };
    render::say(format_args!("session {id} tags: {tags}"))?;
    Ok(())
}

/// `sessions retitle ID TITLE` (an empty title removes it).
pub async fn retitle(store: &Store, id: &str, title: &str) -> Result<()> {
    let title = (!title.is_empty()).then_some(title);
    apply(store, id, &MetaUpdate::new().title(title)).await?;
    match title {
        Some(title) => render::say(format_args!("retitled session {id}: {title}"))?,
        None => render::say(format_args!("removed the title of session {id}"))?,
    }
    Ok(())
}

/// `sessions set-owner ID OWNER` (`None`: `--none`).
pub async fn set_owner(store: &Store, id: &str, owner: Option<String>) -> Result<()> {
    let update = MetaUpdate::new().owner(owner.as_deref());
    apply(store, id, &update).await?;
    match owner {
        Some(owner) => render::say(format_args!("session {id} now belongs to {owner}"))?,
        None => render::say(format_args!("session {id} now has no owner"))?,
    }
    Ok(())
}

/// Applies `update` to session `id`, failing when it does not exist.
pub async fn apply(store: &Store, id: &str, update: &MetaUpdate) -> Result<SessionInfo> {
    SessionId::validate(id)?;
    let storage = store.open_existing().await?;
    let updated = storage
        .update_session(id, update)
        .await
        .with_context(|| format!("cannot update session \"{id}\" in {store}"))?;
    match updated {
        Some(info) => Ok(info),
        None => bail!("session \"{id}\" not found in {store}"),
    }
}

/// The change that makes metadata `current` equal to `wanted` (every field).
///
/// The expiry is set only when it differs: setting one is a write that restarts an idle
/// expiry from now, which leaving an equal one alone does anyway.
pub fn overwrite(current: &SessionMeta, wanted: &SessionMeta) -> MetaUpdate {
    let mut update = MetaUpdate::new()
        .owner(wanted.owner.as_deref())
        .title(wanted.title.as_deref());
    if current.expiry != wanted.expiry {
        update = update.expiry(wanted.expiry);
    }
    update.add_tags.clone_from(&wanted.tags);
    update.remove_tags = current
        .tags
        .iter()
        .filter(|tag| !wanted.tags.contains(tag))
        .cloned()
        .collect();
    for key in current.data.keys() {
        if !wanted.data.contains_key(key) {
            update.data.insert(key.clone(), serde_json::Value::Null);
        }
    }
    update.data.extend(wanted.data.clone());
    update
}

/// How a target's metadata compares with a source's.
pub struct Merge {
    /// What the target lacks: the source's owner, title and expiry where the target has
    /// none, its tags, and its data entries the target has no key for. Empty when nothing
    /// is missing.
    pub fill: MetaUpdate,
    /// The values both hold differently ("title: source "A", target "B""), which a fill
    /// leaves as the target has them.
    pub differs: Vec<String>,
}

/// Compares `target` with `source` (see [`Merge`]).
pub fn merge(source: &SessionMeta, target: &SessionMeta) -> Merge {
    let mut fill = MetaUpdate::new();
    let mut differs = Vec::new();
    let mut field =
        |name: &str, source: &Option<String>, target: &Option<String>| match (source, target) {
            (Some(value), None) => Some(Some(value.clone())),
            (Some(source), Some(target)) if source != target => {
                differs.push(format!("{name}: source {source:?}, target {target:?}"));
                None
            }
            _ => None,
        };
    fill.owner = field("owner", &source.owner, &target.owner);
    fill.title = field("title", &source.title, &target.title);
    match (&source.expiry, &target.expiry) {
        (Some(expiry), None) => fill.expiry = Some(Some(*expiry)),
        (Some(source), Some(target)) if source != target => differs.push(format!(
            "expiry: source {}, target {}",
            render::expiry(source),
            render::expiry(target)
        )),
        _ => {}
    }
    fill.add_tags = source
        .tags
        .iter()
        .filter(|tag| !target.tags.contains(tag))
        .cloned()
        .collect();
    for (key, value) in &source.data {
        match target.data.get(key) {
            None => {
                fill.data.insert(key.clone(), value.clone());
            }
            Some(held) if held != value => {
                differs.push(format!("data {key:?}: source {value}, target {held}"));
            }
            Some(_) => {}
        }
    }
    Merge { fill, differs }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use fusion::storage::Expiry;

    use super::*;

    fn applied(mut meta: SessionMeta, update: &MetaUpdate) -> SessionMeta {
        update.apply_to(&mut meta);
        meta
    }

    #[test]
    fn an_overwrite_makes_the_target_equal_to_the_source() {
        let current = SessionMeta::new()
            .owner("a")
            .title("old")
            .tags(["x", "y"])
            .data("gone", 1)
            .data("kept", 1)
            .expiry(Expiry::Idle(Duration::from_secs(60)));
        let wanted = SessionMeta::new().tags(["y", "z"]).data("kept", 2);
        let update = overwrite(&current, &wanted);
        assert_eq!(update.expiry, Some(None), "the expiry is removed");
        assert_eq!(applied(current.clone(), &update), wanted);
        let at = SessionMeta::new().expiry(Expiry::At(UNIX_EPOCH));
        assert_eq!(applied(current.clone(), &overwrite(&current, &at)), at);
        assert_eq!(
            overwrite(&current, &current).expiry,
            None,
            "an equal expiry is left alone"
        );
    }

    #[test]
    fn a_merge_fills_what_is_missing_and_names_what_differs() {
        let source = SessionMeta::new()
            .owner("alice")
            .title("From source")
            .tags(["a", "b"])
            .data("new", 1)
            .data("same", 2)
            .data("clash", 3)
            .expiry(Expiry::Idle(Duration::from_secs(30 * 86_400)));
        let target = SessionMeta::new()
            .title("Renamed")
            .tags(["b", "c"])
            .data("same", 2)
            .data("clash", 4)
            .expiry(Expiry::At(UNIX_EPOCH + Duration::from_millis(1_500)));
        let merge = merge(&source, &target);
        let filled = applied(target.clone(), &merge.fill);
        assert_eq!(filled.owner.as_deref(), Some("alice"));
        assert_eq!(
            filled.title.as_deref(),
            Some("Renamed"),
            "the target's kept"
        );
        assert_eq!(filled.tags, ["a", "b", "c"]);
        assert_eq!(filled.data["new"], 1);
        assert_eq!(filled.data["clash"], 4);
        assert_eq!(filled.expiry, target.expiry, "the target's kept");
        assert_eq!(
            merge.differs,
            [
                "title: source \"From source\", target \"Renamed\"",
                "expiry: source after 30d idle, target at 1970-01-01T00:00:01.5Z",
                "data \"clash\": source 3, target 4"
            ]
        );
        assert!(super::merge(&source, &source).fill.is_empty());
        let fill = super::merge(&source, &SessionMeta::new()).fill;
        assert_eq!(
            fill.expiry,
            Some(source.expiry),
            "a missing expiry is filled"
        );
        assert!(
            super::merge(&SessionMeta::new(), &target)
                .differs
                .is_empty(),
            "an expiry only the target has is the target's own"
        );
    }
}
