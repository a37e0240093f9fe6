//! clap's refusal of a command line, printed with the password of every URL in it hidden.

/// Prints clap's error (or help) and exits as [`clap::Error::exit`] does, with the
/// password of any URL in it hidden: clap quotes a misplaced argument as given
/// (`unexpected argument 'postgres://u:secret@host/db'`), and an error goes to logs.
pub fn exit_redacted(err: clap::Error) -> ! {
    if !err.use_stderr() {
        exit_after_printing(&err);
    }
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    // A stderr that cannot be written to (a closed pipe) loses the message, not the exit
    // code: `eprint!` panicked, exit 101.
    use std::io::Write as _;
    let _ = write!(
        std::io::stderr().lock(),
        "{}",
        redacted(&err.render().to_string(), &args)
    );
    std::process::exit(err.exit_code());
}

/// Prints `--help` or `--version` to stdout and exits 0, or, when stdout cannot take it
/// (`fusion --help >/dev/full`), fails as any other command's output does
/// ([`crate::render::report`]: a reader that went away is still no failure).
/// [`clap::Error::exit`] ignored the failed write and exited 0, nothing printed.
fn exit_after_printing(help: &clap::Error) -> ! {
    use std::io::Write as _;
    let printed = help.print().and_then(|()| std::io::stdout().flush());
    let failed = printed
        .err()
        .map(|err| anyhow::Error::new(err).context("cannot write to stdout"));
    match failed {
        // `report` prints the error line, or nothing for a reader that went away.
        Some(err) if crate::render::report(&err) == std::process::ExitCode::FAILURE => {
            std::process::exit(1)
        }
        _ => std::process::exit(help.exit_code()),
    }
}

/// `said` with each URL hidden: first as the arguments gave it (an argument, or the value
/// after a flag's `=`), whatever its characters (a `'` in a password ends no quote here);
/// then any quoted URL left (one from an environment variable).
fn redacted(said: &str, args: &[String]) -> String {
    let mut urls: Vec<&str> = args
        .iter()
        .flat_map(|arg| {
            let value = arg
                .strip_prefix('-')
                .and_then(|flag| flag.split_once('='))
                .map(|(_, value)| value);
            [Some(arg.as_str()), value]
        })
        .flatten()
        .filter(|arg| arg.contains("://"))
        .collect();
    // The longest first: a whole `--from=URL` before the URL in it.
    urls.sort_by_key(|url| std::cmp::Reverse(url.len()));
    let mut said = said.to_string();
    for url in urls {
        said = said.replace(url, &fusion_core::redact_url(url));
    }
    let parts: Vec<String> = said
        .split('\'')
        .map(|part| match part.contains("://") {
            true => fusion_core::redact_url(part),
            false => part.to_string(),
        })
        .collect();
    parts.join("'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_with_a_quote_in_it_is_hidden_whole() {
        let url = "postgres://u:it's@h/db";
        let said = format!("error: unexpected argument '{url}' found\n");
        let args = ["fusion".to_string(), "--".to_string(), url.to_string()];
        let shown = redacted(&said, &args);
        assert_eq!(
            shown,
            "error: unexpected argument 'postgres://u:***@h/db' found\n"
        );
    }

    #[test]
    fn a_value_after_a_flags_equals_sign_is_hidden() {
        let said = "error: invalid value 'redis://:pw@h' for '--storage <URL>'\n";
        let args = ["fusion".to_string(), "--storage=redis://:pw@h".to_string()];
        assert!(
            !redacted(said, &args).contains("pw@"),
            "{}",
            redacted(said, &args)
        );
    }
}
