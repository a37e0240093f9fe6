//! The query parameters a `postgres://` URL may carry, checked before connecting.
//!
//! sqlx only logs a warning for a parameter it does not know and goes on without it, so a
//! misspelt `schma=x` would connect and create the default schema: another application's
//! data. Every parameter is therefore checked here against what Fusion and sqlx read, and
//! anything else is refused, as the SQLite backend's driver already does.

use fusion_core::{Error, Result, UrlQueryProblem, url_query_problem, url_without_query};

/// The URL parameter that picks the schema (Fusion's, not the driver's).
pub(crate) const SCHEMA_PARAM: &str = "schema";

/// Every query parameter sqlx-postgres 0.8 reads from a URL under a fixed name: the arms
/// of the `match` in `PgConnectOptions::parse_from_url` (sqlx-postgres 0.8.6,
/// `src/options/parse.rs`, lines 52 to 92), aliases included. The one other arm, line 101,
/// is `options[NAME]` ([`is_named_option`]).
const DRIVER_PARAMS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Refuses a query parameter of `url` that neither Fusion nor sqlx reads, and Fusion's
/// `schema` if it is still in `url`: [`PostgresOptions::new`] takes it out when it is given
/// once with a value, so here it was given twice or bare, which is ambiguous.
///
/// The message names the parameter, never its value, and shows the URL without its query
/// and password: a misspelt `pasword=` must not print the password.
///
/// [`PostgresOptions::new`]: crate::PostgresOptions::new
pub(crate) fn check(url: &str) -> Result<()> {
    let what = match url_query_problem(url, &[SCHEMA_PARAM], is_driver_param) {
        None => return Ok(()),
        Some(UrlQueryProblem::Ambiguous { name, times: 1 }) => {
            format!("query parameter `{name}` has no value; use {name}=NAME")
        }
        Some(UrlQueryProblem::Ambiguous { name, times }) => {
            format!("query parameter `{name}` is given {times} times; give it once")
        }
        // sqlx matches the decoded key, so `options%5Bx%5D` is as good as `options[x]`.
        Some(UrlQueryProblem::Unknown { key, .. }) => format!(
            "unknown query parameter `{key}`; accepted: `{SCHEMA_PARAM}` (Fusion's) and the \
             driver's `{}`, `options[NAME]`",
            DRIVER_PARAMS.join("`, `")
        ),
    };
    Err(Error::Config(format!(
        "invalid PostgreSQL URL {}: {what}",
        url_without_query(url)
    )))
}

fn is_driver_param(key: &str) -> bool {
    DRIVER_PARAMS.contains(&key) || is_named_option(key)
}

/// `options[NAME]`, one server setting: sqlx also matches `options[` without the closing
/// bracket (or with an empty name) and then drops it silently, so only the whole form
/// counts.
fn is_named_option(key: &str) -> bool {
    key.strip_prefix("options[")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PostgresOptions;
    use crate::config::parse;

    fn refusal(url: &str) -> String {
        let err = parse(&PostgresOptions::new(url)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{url}: {err}");
        err.to_string()
    }

    #[test]
    fn unknown_and_misspelt_parameters_are_refused_by_name() {
        for (url, name) in [
            ("postgres://postgres@127.0.0.1:5432/test?schma=x", "schma"),
            ("postgres://h/db?schema=chat&sslmod=require", "sslmod"),
            ("postgres://h/db?application-name=x", "application-name"),
            (
                "postgres://h/db?options[search_path=x",
                "options[search_path",
            ),
            ("postgres://h/db?options[]=x", "options[]"),
            ("postgres://h/db?connect_timeout=5", "connect_timeout"),
            ("postgresql://h/db?sslmode=require&bogus", "bogus"),
        ] {
            let text = refusal(url);
            assert!(text.contains(&format!("`{name}`")), "{url}: {text}");
            assert!(text.contains("`schema` (Fusion's)"), "{text}");
            assert!(text.contains("`sslmode`"), "{text}");
        }
    }

    #[test]
    fn the_schema_given_twice_or_bare_is_refused() {
        for url in [
            "postgres://h/db?schema=a&schema=b",
            "postgres://h/db?schema=chat&sslmode=require&schema=chat",
        ] {
            let text = refusal(url);
            assert!(text.contains("`schema` is given 2 times"), "{url}: {text}");
        }
        let text = refusal("postgres://h/db?schema");
        assert!(text.contains("`schema` has no value"), "{text}");
        // The option does not make an ambiguous URL acceptable.
        let options = PostgresOptions::new("postgres://h/db?schema=a&schema=b").schema("c");
        assert!(matches!(parse(&options), Err(Error::Config(_))));
    }

    #[test]
    fn every_parameter_sqlx_reads_is_accepted() {
        let query = "sslmode=require&ssl-mode=require&sslrootcert=/ca.pem&ssl-root-cert=/ca.pem\
                     &ssl-ca=/ca.pem&sslcert=/c.pem&ssl-cert=/c.pem&sslkey=/k.pem&ssl-key=/k.pem\
                     &statement-cache-capacity=10&host=db&hostaddr=10.0.0.1&port=5433\
                     &dbname=app&user=u&password=p&application_name=x&options=-c%20a%3Db\
                     &options[lock_timeout]=100&options%5Bwork_mem%5D=4MB";
        let target = parse(&PostgresOptions::new(format!("postgres://h/db?{query}"))).unwrap();
        assert_eq!(target.connect.get_port(), 5433);
        let options =
            PostgresOptions::new("postgres://h/db?sslmode=require&schema=chat&application_name=x");
        assert_eq!(options.schema, "chat");
        parse(&options).unwrap();
        parse(&PostgresOptions::new("postgres://h/db?&sslmode=disable&")).unwrap();
    }

    #[test]
    fn refusals_never_show_a_password() {
        for url in [
            "postgres://u:hunter2@h/db?pasword=hunter2",
            "postgres://u:hunter2@h/db?password=hunter2&schema=a&schema=b",
        ] {
            let text = refusal(url);
            assert!(
                text.contains("invalid PostgreSQL URL postgres://u:***@h/db:"),
                "{text}"
            );
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
