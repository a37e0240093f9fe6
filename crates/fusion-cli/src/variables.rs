//! The environment variables clap reads for flags (`FUSION_STORAGE`, `FUSION_NO_RETRY`,
//! `FUSION_APPROVE`, `FUSION_UI_TOKEN`, `FUSION_MAX_TOOL_OUTPUT_BYTES`), read the way the
//! library reads its own: set but empty (or blank) is unset, and a yes-or-no takes the
//! words every such setting takes.

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

/// The smallest `--max-tool-output` taken: below it, a cut output would leave the model
/// little more than the note saying what was cut (some 200 bytes).
const MIN_TOOL_OUTPUT_BYTES: usize = 1024;

/// `--max-tool-output`'s value, also from `FUSION_MAX_TOOL_OUTPUT_BYTES`: a whole number of
/// bytes, at least 1024. The message names both, as clap names only the flag.
pub fn max_tool_output(text: &str) -> Result<usize, String> {
    let bytes = text.trim().parse::<usize>().map_err(|_| {
        format!(
            "not a whole number of bytes (--max-tool-output, FUSION_MAX_TOOL_OUTPUT_BYTES; \
             default {})",
            fusion::agent::DEFAULT_MAX_TOOL_OUTPUT_BYTES
        )
    })?;
    if bytes < MIN_TOOL_OUTPUT_BYTES {
        return Err(format!(
            "must be at least {MIN_TOOL_OUTPUT_BYTES} bytes (--max-tool-output, \
             FUSION_MAX_TOOL_OUTPUT_BYTES): a smaller bound leaves the model little more than \
             the note of what was cut"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_output_bound_is_a_whole_number_of_bytes_from_1024() {
        assert_eq!(max_tool_output("1024"), Ok(1024));
        assert_eq!(max_tool_output(" 200000 "), Ok(200_000));
        for bad in ["", "1k", "-5", "2.5", "big"] {
            let err = max_tool_output(bad).unwrap_err();
            assert!(
                err.starts_with("not a whole number of bytes"),
                "{bad}: {err}"
            );
            assert!(err.contains("FUSION_MAX_TOOL_OUTPUT_BYTES"), "{bad}: {err}");
        }
        for small in ["0", "1023"] {
            let err = max_tool_output(small).unwrap_err();
            assert!(
                err.starts_with("must be at least 1024 bytes"),
                "{small}: {err}"
            );
        }
    }
}
