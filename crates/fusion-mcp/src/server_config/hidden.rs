//! A stdio server's command line as messages, log lines and `Debug` show it: its secrets
//! hidden, a URL's ([`fusion_core::redact_url`]), an option's value (`--api-key KEY`,
//! `--token=TOKEN`), a variable's (`-e GITHUB_TOKEN=ghp_…`) and a header's (`--header
//! "Authorization: Bearer TOKEN"`), each shown as `***`.

use std::borrow::Cow;

use crate::command_line;

/// `words`, a command line, with their secrets hidden ([`Hider`]).
pub(super) fn hidden_words<'a>(words: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut hider = Hider::default();
    (words.into_iter()).map(|word| hider.hide(word)).collect()
}

/// `line`, a command line that could not be split into words, with the secrets of its
/// whitespace-separated pieces hidden as [`hidden_words`] hides a word's (a quote around
/// a name is no part of it: `'--api-key K3Y'`); the whitespace kept.
pub(super) fn hidden_pieces(line: &str) -> String {
    let mut hider = Hider::default();
    (line.split_inclusive(char::is_whitespace))
        .map(|piece| {
            let word = piece.trim_end_matches(char::is_whitespace);
            match word.is_empty() {
                true => piece.to_owned(),
                false => hider.hide(word) + &piece[word.len()..],
            }
        })
        .collect()
}

/// `arg` with the password and query values of a URL in it hidden; as it is without one.
pub(super) fn without_url_secrets(arg: &str) -> Cow<'_, str> {
    match arg.contains("://") || file_url_with_at(arg).is_some() {
        true => fusion_core::redact_url(arg).into(),
        false => arg.into(),
    }
}

/// Where a `file:` or `sqlite:` URL (any case) starts in `text` when an `@` follows it: its
/// path may be followed by a URL written without `://` (`file:/x,redis:u:p@h`, `file:/x,//u:p@h`),
/// whose credentials [`fusion_core::redact_url`] hides. Other text with an `@` and no
/// `://` is no URL (`@scope/pkg@1.2`), shown as it is; so is a word merely ending in such
/// a scheme (`myfile:x@y`): a scheme starts the text or follows a character no scheme
/// holds (`--db=sqlite:…`).
pub(super) fn file_url_with_at(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let in_scheme = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
    ["file:", "sqlite:"]
        .iter()
        .flat_map(|scheme| lower.match_indices(scheme).map(|(at, _)| at))
        .filter(|&at| !lower[..at].ends_with(in_scheme))
        .min()
        .filter(|&at| text[at..].contains('@'))
}

/// Options whose value is a header, `Name: value` in one word or, for `--headers` (as
/// `mcp-proxy` takes them), the name and the value in two (`--headers Authorization
/// 'Bearer TOKEN'`).
const HEADER_OPTIONS: &[&str] = &["--header", "--headers", "-H"];

/// Authorization schemes, whose credential may be written as the word after them
/// (`Authorization: Bearer TOKEN` unquoted).
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token", "digest"];

/// What the next word of a command line is taken to be.
#[derive(Default, Clone, Copy, PartialEq)]
enum Next {
    /// A word to read for secrets of its own.
    #[default]
    Anything,
    /// The value of a secret option or header: hidden whole.
    Secret,
    /// The name of a header, after a [header option](HEADER_OPTIONS).
    HeaderName,
}

/// Hides the secrets of a command line's words, one after the other: a URL's password and
/// query values; the word after an option whose name says it holds a secret (`--token
/// TOKEN`, as server names read it, [`command_line::names_a_secret`]: `--use-token-cache`
/// takes none), unless it is an option itself (`--enable-auth --port 8080`, `-p 8080`); the
/// value after `=` of such an option (`--token=TOKEN`) or of a variable naming a secret
/// (`GITHUB_TOKEN=ghp_…`, `--env=API_KEY=K`); and the value of a header named
/// `Authorization` or naming a secret (`X-Api-Key: K`, `--header=Authorization: Bearer T`),
/// also written over the next words (`Authorization: Bearer T` unquoted). More than a
/// secret, maybe, never less of these forms.
#[derive(Default)]
struct Hider {
    next: Next,
}

impl Hider {
    /// `word`, the next word, shown with its secrets hidden.
    fn hide(&mut self, word: &str) -> String {
        let bare = word.trim_matches(['"', '\'']);
        let next = std::mem::take(&mut self.next);
        if next == Next::Secret && !is_option(bare) {
            if AUTH_SCHEMES.contains(&bare.to_ascii_lowercase().as_str()) {
                self.next = Next::Secret;
            }
            return "***".to_owned();
        }
        if next == Next::HeaderName && secret_header(bare) {
            self.next = Next::Secret;
            return word.to_owned();
        }
        self.next = if command_line::names_a_secret(bare) {
            Next::Secret
        } else if HEADER_OPTIONS.contains(&bare) {
            Next::HeaderName
        } else {
            match bare.split_once(':') {
                // `Authorization:` or `Authorization: Bearer`: the credential comes next.
                Some((name, value)) if secret_header(name) => {
                    let value = value.trim().to_ascii_lowercase();
                    match value.is_empty() || AUTH_SCHEMES.contains(&value.as_str()) {
                        true => Next::Secret,
                        false => Next::Anything,
                    }
                }
                _ => Next::Anything,
            }
        };
        without_secret_value(&without_url_secrets(word)).into_owned()
    }
}

/// Whether `word` is an option, never a secret's value: a long one (`--port`) or a
/// letter's (`-p`).
fn is_option(word: &str) -> bool {
    let letter = |rest: &str| rest.len() == 1 && rest.bytes().all(|b| b.is_ascii_alphabetic());
    word.starts_with("--") || word.strip_prefix('-').is_some_and(letter)
}

/// `word` without the value of a secret option given in it (`--api-key=KEY`), of a
/// variable naming a secret (`API_KEY=K`, also an option's value: `--env=API_KEY=K`) or
/// of a secret header (`Authorization: Bearer TOKEN`, `--header=X-Api-Key: KEY`).
fn without_secret_value(word: &str) -> Cow<'_, str> {
    let bare = word.trim_matches(['"', '\'']);
    if let Some((option, value)) = bare.split_once('=')
        && option.starts_with('-')
    {
        return match without_secret_value(value) {
            _ if command_line::names_a_secret(option) => format!("{option}=***").into(),
            Cow::Owned(value) => format!("{option}={value}").into(),
            Cow::Borrowed(_) => word.into(),
        };
    }
    if let Some((name, _)) = bare.split_once('=')
        && is_variable(name)
        && names_a_secret(name)
    {
        return format!("{name}=***").into();
    }
    match bare.split_once(':') {
        // With no value, the value is the next words (`Authorization: Bearer T`), which
        // the Hider hides: nothing of this word is.
        Some((name, value)) if secret_header(name) && !value.trim().is_empty() => {
            format!("{name}: ***").into()
        }
        _ => word.into(),
    }
}

/// Whether `name` (no leading `-`) says its value is a secret, as an option's name says it
/// ([`command_line::names_a_secret`]: `API_KEY`, `X-Api-Key`, `Authorization`), or as a
/// variable's short names do, by their last part ([`SHORT_SECRET_WORDS`]: `DB_PASS`,
/// `MYSQL_PWD`, `GITHUB_PAT`; the shell's `PWD`, a folder, is none).
fn names_a_secret(name: &str) -> bool {
    let last = name.rsplit(['-', '_', '.']).next().unwrap_or("");
    let short = (SHORT_SECRET_WORDS.iter()).any(|word| last.eq_ignore_ascii_case(word));
    command_line::names_a_secret(&format!("--{name}"))
        || (short && !name.eq_ignore_ascii_case("pwd"))
}

/// Short words that, as the whole last part of a variable's or a header's name, say its
/// value is a secret (`DB_PASS`, `MYSQL_PWD`, `GITHUB_PAT`). Not an option's: as the end
/// of a word they are too common (`--bypass`), and an option named so would take the next
/// word as its value, changing the name servers are given.
const SHORT_SECRET_WORDS: &[&str] = &["pass", "pwd", "pat"];

/// Whether `name` is a variable's name (`GITHUB_TOKEN`, `api.key`): letters, digits, `_`,
/// `.` and `-`, not a path or a URL (`/run/key`, `https://h?token`).
fn is_variable(name: &str) -> bool {
    !name.is_empty()
        && (name.chars()).all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `name` is the name of a header holding a secret: `Authorization` (by
/// [`names_a_secret`]), `Cookie`, or one naming a secret (`X-Api-Key`). A header's name is
/// a token (letters, digits, `-` and a few others), no path (`/run/key:/key`, a volume
/// `docker run -v` mounts) nor a URL.
fn secret_header(name: &str) -> bool {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    !name.is_empty()
        && name.chars().all(token)
        && (name.eq_ignore_ascii_case("cookie") || names_a_secret(name))
}
