//! `fusion sessions rekey`: re-encrypt a whole store in place with the current key, after
//! a rotation (messages under an older key) or to encrypt a store written in clear text.
//!
//! It works on the storage *under* the encryption layer, so that what is already under
//! the current key is left as it is and a rerun after an interruption skips what is done;
//! each session is rewritten only if nobody wrote it since it was read (see
//! [`EncryptionLayer::rekey_store`](fusion::layers::encryption::EncryptionLayer::rekey_store)).

use anyhow::{Context, Result};
use fusion::layers::encryption::Rekeyed;

use crate::render::{self, plural};
use crate::store::{Store, require_key};

/// `sessions rekey [--dry-run]`: rekeys every session and prints the counts.
pub async fn run(store: &Store, dry_run: bool) -> Result<()> {
    let encryption = store.encryption();
    require_key(encryption, "sessions rekey")?;
    let raw = store.open_raw().await?;
    let done = if dry_run {
        encryption.rekey_store_dry_run(raw.as_ref()).await
    } else {
        encryption.rekey_store(raw.as_ref()).await
    }
    .with_context(|| {
        format!(
            "rekey of {store} stopped; fix the cause and re-run (sessions already done are \
             skipped)"
        )
    })?;
    let current = encryption.keys().map_or("", |keys| keys.current_id());
    render::say(summary(&done, current, dry_run))?;
    if done.encrypted > 0 {
        let verb = if dry_run { "would be" } else { "are now" };
        render::say(format_args!(
            "the store held clear-text messages: they {verb} encrypted; from now on read it \
             with the key"
        ))?;
    }
    Ok(())
}

/// The counts line: what was (or, in a dry run, would be) rewritten, and under which key.
fn summary(done: &Rekeyed, current: &str, dry_run: bool) -> String {
    let (head, rewritten, reencrypted, encrypted) = if dry_run {
        (
            "dry run, nothing written",
            "to rewrite",
            "to re-encrypt",
            "to encrypt",
        )
    } else {
        ("rekeyed", "rewritten", "re-encrypted", "encrypted")
    };
    format!(
        "{head}: {} read, {} {rewritten}: {} {reencrypted} from an older key, {} clear-text \
         {encrypted}, all under key \"{current}\"",
        plural(done.sessions, "session"),
        done.rewritten,
        plural(done.reencrypted, "message"),
        done.encrypted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_happened_or_would_happen() {
        let done = Rekeyed::default();
        assert_eq!(
            summary(&done, "k2", false),
            "rekeyed: 0 sessions read, 0 rewritten: 0 messages re-encrypted from an older \
             key, 0 clear-text encrypted, all under key \"k2\""
        );
        assert!(summary(&done, "k2", true).starts_with("dry run, nothing written: "));
    }
}
