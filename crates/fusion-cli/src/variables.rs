//! The environment variables clap reads for flags (`FUSION_STORAGE`, `FUSION_NO_RETRY`,
//! `FUSION_APPROVE`, `FUSION_UI_TOKEN`), read the way the library reads its own: set but
//! empty (or blank) is unset, and a yes-or-no takes the words every such setting takes.

/// `command` with each variable that is set but empty or blank read as unset, in it and its
/// subcommands: `FUSION_STORAGE=` means the default store, not an empty URL, and
/// `FUSION_APPROVE=` no choice, not a missing value (clap takes an empty value as given).
pub fn without_empty(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let empty = arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|value| value.to_str().is_some_and(|value| value.trim().is_empty()));
            if empty { arg.env(None) } else { arg }
        })
        .mut_subcommands(without_empty)
}

/// `--no-retry`'s value from `FUSION_NO_RETRY` (`FUSION_NO_RETRY=1`), in the words every
/// yes-or-no setting of the library takes ([`fusion_core::parse_flag`]).
pub fn no_retry(text: &str) -> Result<bool, String> {
    fusion_core::parse_flag("FUSION_NO_RETRY", text).map_err(|err| err.to_string())
}
