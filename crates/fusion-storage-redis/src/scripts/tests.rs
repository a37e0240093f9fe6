//! The scripts run on the server at `REDIS_URL`: what they refuse before writing, their
//! arithmetic, the walk's order.

use super::*;

/// `REDIS_URL`, or `None` (skip, or panic when the backends are required) without it.
pub(crate) fn server_url() -> Option<String> {
    let url = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    url.or_else(|| fusion_core::testkit::unavailable("redis", "set REDIS_URL to run"))
}

/// A blocking connection to `REDIS_URL`, or `None` (skip, or panic when the backends
/// are required) without one.
pub(crate) fn server() -> Option<redis::Connection> {
    let url = server_url()?;
    let client = redis::Client::open(url).expect("REDIS_URL parses");
    Some(client.get_connection().expect("connecting to REDIS_URL"))
}

/// A key prefix of this test's own.
pub(crate) fn prefix(test: &str) -> String {
    fusion_core::testkit::unique_name(&format!("fusion-test:{test}"))
}

#[test]
fn the_scripts_carry_the_ttl_bound_and_legacy_generation_of_the_crate() {
    let bound = MAX_TTL.as_millis().to_string();
    for last in [writes::WRITE, writes::TRUNCATE] {
        let text = source(&[
            COMMON,
            DIGITS,
            CLOCK,
            TTL,
            CONDITION,
            INDEX,
            FINGERPRINT,
            last,
        ]);
        assert!(!text.contains('@'), "placeholder left in the script");
        assert!(
            text.contains(&format!("at_most(ttl_arg, '{bound}')")),
            "{text}"
        );
        assert!(
            text.contains(&format!("fresh == '{LEGACY_GENERATION}'")),
            "{text}"
        );
    }
}

#[test]
fn only_the_publishing_form_publishes_and_it_keeps_no_mark() {
    let scripts = [
        writes::WRITE,
        writes::TRUNCATE,
        writes::DELETE,
        writes::UPDATE,
        retention::PURGE,
        retention::PURGE_ONE,
    ];
    for last in scripts {
        let quiet = source(&[COMMON, DIGITS, CLOCK, TTL, CONDITION, INDEX, UNINDEX, last]);
        assert!(quiet.contains(notify::MARK), "{last}");
        // In the quiet form every call of notify() is behind the mark, a comment.
        for line in quiet.lines().filter(|line| line.contains("notify(")) {
            assert!(line.trim_start().starts_with(notify::MARK), "{line}");
        }
        let publishing = notify::publishing("ARGV[1]", &quiet);
        assert!(!publishing.contains(notify::MARK), "{last}");
        // The ACL check comes first, before anything could be written.
        let check = notify::MAY_PUBLISH.replace("@PREFIX@", "ARGV[1]");
        assert!(publishing.starts_with(&check), "{last}");
        assert!(publishing[check.len()..].starts_with(notify::NOTIFY));
    }
}

#[test]
fn a_write_with_an_argument_that_would_fail_later_fails_first_and_writes_nothing() {
    let Some(mut conn) = server() else { return };
    let prefix = prefix("scripts");
    let (list, meta) = (format!("{prefix}:s:{{x}}"), format!("{prefix}:m:{{x}}"));
    let message = r#"{"role":"user","content":"hi"}"#;
    let good = ["12345", "any", "0", "0"];
    // No metadata, no message ids.
    let no_meta: &[&str] = &["0", "0"];
    // Mode, TTL, condition, metadata and id arguments, messages.
    type Write<'a> = (&'a str, &'a str, [&'a str; 4], &'a [&'a str], &'a [&'a str]);
    let bad_writes: [Write; 25] = [
        ("append", "9223372036854775808", good, no_meta, &[message]), // 2^63
        ("append", "4611686018427387905", good, no_meta, &[message]), // MAX_TTL + 1 ms
        ("append", "abc", good, no_meta, &[message]),
        ("append", "0600", good, no_meta, &[message]),
        ("append", "1e5", good, no_meta, &[message]),
        ("insert", "0", good, no_meta, &[message]),
        ("replace", "0", good, no_meta, &[]),
        ("append", "0", ["1", "any", "0", "0"], no_meta, &[message]), // legacy gen
        ("append", "0", ["0", "any", "0", "0"], no_meta, &[message]), // absent
        ("append", "0", ["7x", "any", "0", "0"], no_meta, &[message]),
        (
            "append",
            "0",
            ["12345", "maybe", "0", "0"],
            no_meta,
            &[message],
        ),
        (
            "append",
            "0",
            ["12345", "exact", "-1", "0"],
            no_meta,
            &[message],
        ),
        ("append", "0", good, &["x", "0"], &[message]),
        ("append", "0", good, &["3", "title", "t", "0"], &[message]), // more pairs than given
        (
            "append",
            "0",
            good,
            &["1", "colour", "red", "0"],
            &[message],
        ),
        ("append", "0", good, &["1", "idle", "0", "0"], &[message]),
        ("append", "0", good, &["0", "x"], &[message]),
        ("append", "0", good, &["0", "2", "id-a"], &[message]), // more ids than messages
        (
            "append",
            "0",
            good,
            &["0", "1", "id-b"],
            &[message, message],
        ), // an append's ids cover all
        (
            "append",
            "0",
            good,
            &["1", "idle", "3153600000000001", "0"],
            &[message],
        ), // MAX_IDLE + 1 µs
        (
            "append",
            "0",
            good,
            &["1", "expires_at", "253402300800000000", "0"],
            &[message],
        ), // 10000
        (
            "append",
            "0",
            good,
            &["1", "expires_at", "-5", "0"],
            &[message],
        ),
        // A copy's times: whole ms up to the year 9999.
        (
            "append",
            "0",
            good,
            &["1", "created_at", "-1", "0"],
            &[message],
        ),
        (
            "append",
            "0",
            good,
            &["1", "updated_at", "1.5", "0"],
            &[message],
        ),
        (
            "append",
            "0",
            good,
            &["1", "updated_at", "253402300800000", "0"],
            &[message],
        ),
    ];
    let mut bad_writes = bad_writes.to_vec();
    let one: &[&str] = &[message];
    // The instant of `Expect::UnwrittenSince`: whole ms, up to 2^53.
    for word in [
        "before:",
        "before:x",
        "before:-1",
        "before:01",
        "before:1.5",
        "before:9007199254740993",
        "after:5",
    ] {
        let condition = ["12345", word, "0", "0"];
        bad_writes.push(("append", "0", condition, no_meta, one));
    }
    for (mode, ttl, condition, meta_args, messages) in bad_writes {
        let result: redis::RedisResult<Outcome> = WRITE
            .publishing(false)
            .key(&list)
            .key(&meta)
            .arg(mode)
            .arg(ttl)
            .arg(&condition)
            .arg("x")
            .arg(&prefix)
            .arg(meta_args)
            .arg(messages)
            .invoke(&mut conn);
        let what = format!("mode {mode}, TTL {ttl}, condition {condition:?}, {meta_args:?}");
        let err = result.expect_err(&format!("{what}: should fail"));
        assert!(err.to_string().contains("nothing was written"), "{err}");
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&list)
            .arg(&meta)
            .query(&mut conn)
            .unwrap();
        assert_eq!(exists, 0, "{what}: a key was written");
    }
    let bound = MAX_TTL.as_millis().to_string();
    let created: Outcome = WRITE
        .publishing(false)
        .key(&list)
        .key(&meta)
        .arg("append")
        .arg(&bound)
        .arg(&good)
        .arg("x")
        .arg(&prefix)
        .arg(&["1", "owner", "o", "0"])
        .arg(message)
        .invoke(&mut conn)
        .unwrap();
    assert_eq!(
        (created.applied, created.generation.as_str(), created.len),
        (true, "12345", 1)
    );
    let written = created.wrote.expect("the script wrote");
    assert_eq!(written.owner.as_deref(), Some("o"));
    assert!(written.updated.is_some());
    assert_eq!(written.due, None, "no expiry");
    for length in ["-1", "01", "x"] {
        let truncate: redis::RedisResult<Outcome> = TRUNCATE
            .publishing(false)
            .key(&list)
            .key(&meta)
            .arg(length)
            .arg(&bound)
            .arg(&["678", "any", "0", "0"])
            .arg("x")
            .arg(&prefix)
            .invoke(&mut conn);
        assert!(truncate.is_err(), "a length of {length} must be refused");
    }
    // The latest instant `Expect::UnwrittenSince` is sent as is taken, and met.
    let kept: Outcome = TRUNCATE
        .publishing(false)
        .key(&list)
        .key(&meta)
        .arg(1)
        .arg(&bound)
        .arg(&["678", "before:9007199254740992", "12345", "1"])
        .arg("x")
        .arg(&prefix)
        .invoke(&mut conn)
        .unwrap();
    assert_eq!((kept.applied, kept.len), (true, 1));
    let _: i64 = redis::cmd("DEL")
        .arg(&list)
        .arg(&meta)
        .query(&mut conn)
        .unwrap();
}

/// The expiry arithmetic is exact over the whole range: the ms Redis is told is the
/// µs instant rounded up (as strings past 2^53), an idle span in µs is added to the
/// time in ms the script stores, an instant is compared with the clock to the µs, and
/// values Fusion did not write are no expiry.
#[test]
fn the_expiry_arithmetic_of_the_scripts_is_exact_to_the_year_9999() {
    let Some(mut conn) = server() else { return };
    let probe = Script::new(&source(&[
        COMMON,
        DIGITS,
        CLOCK,
        r#"
        local gone, at, due = expiry(ARGV[1], ARGV[2] ~= '' and ARGV[2], ARGV[3] == 'check', clock)
        if ARGV[2] ~= '' and at then
          at = string.format('%.0f', tonumber(string.sub(at, 1, -4)) - tonumber(now))
            .. string.sub(at, -3)
        end
        return {tostring(gone), tostring(at), tostring(due)}
        "#,
    ]));
    let cases = [
        ("0", "", "", ["false", "0", "0"]),
        ("1", "", "", ["false", "1", "1"]),
        ("999", "", "", ["false", "999", "1"]),
        ("1000", "", "", ["false", "1000", "1"]),
        ("1001", "", "", ["false", "1001", "2"]),
        ("1700000000123456", "", "check", ["true", "nil", "nil"]),
        (
            LATEST_MICROS,
            "",
            "check",
            ["false", LATEST_MICROS, "253402300800000"],
        ),
        (
            "253402300799000000",
            "",
            "",
            ["false", "253402300799000000", "253402300799000"],
        ),
        ("soon", "", "check", ["false", "false", "false"]),
        // With an idle span the instant is the script's time (subtracted here) plus it.
        ("1", "1500", "", ["false", "1500", ""]),
        (
            "",
            "3153600000000000",
            "",
            ["false", "3153600000000000", ""],
        ),
        ("", "x", "", ["false", "false", "false"]),
    ];
    for (at, idle, check, want) in cases {
        let got: [String; 3] = probe
            .arg(at)
            .arg(idle)
            .arg(check)
            .invoke(&mut conn)
            .unwrap();
        let [gone, at_got, due] = &got;
        assert_eq!(
            (gone, at_got),
            (&want[0].to_string(), &want[1].to_string()),
            "{at} {idle}"
        );
        if !want[2].is_empty() {
            assert_eq!(due, want[2], "{at} {idle}");
        }
    }
}

/// The walk's order is (score, member) descending, and it resumes strictly after any
/// position: a member still at its score, one that moved or left, and ties.
#[test]
fn the_walk_resumes_strictly_after_any_position_in_score_then_member_order() {
    let Some(mut conn) = server() else { return };
    let key = format!("{}:updated", prefix("walk"));
    let mut entries: Vec<(i64, String)> = Vec::new();
    for (i, score) in [5, 5, 5, 7, 3, 5, 9, 5, 3, 0].into_iter().enumerate() {
        entries.push((score, format!("m{}", (i * 7) % 10)));
    }
    for (score, member) in &entries {
        let _: () = redis::cmd("ZADD")
            .arg(&key)
            .arg(score)
            .arg(member)
            .query(&mut conn)
            .unwrap();
    }
    entries.sort_by(|a, b| b.cmp(a));
    let walk = |conn: &mut redis::Connection, score: &str, member: &str, n: usize| {
        let flat: Vec<String> = WALK
            .key(&key)
            .arg(score)
            .arg(member)
            .arg(n)
            .invoke(conn)
            .unwrap();
        flat.chunks(2)
            .map(|pair| (pair[1].parse::<i64>().unwrap(), pair[0].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(walk(&mut conn, "", "", 100), entries);
    assert_eq!(walk(&mut conn, "", "", 3), entries[..3]);
    // From every stored position, and from positions between and beyond them.
    let mut probes: Vec<(i64, String)> = entries.clone();
    for score in [10, 5, 4, 3, -1] {
        for member in ["m", "m4", "m45", "n", ""] {
            probes.push((score, member.to_string()));
        }
    }
    for (score, member) in probes {
        let expected: Vec<(i64, String)> = entries
            .iter()
            .filter(|(s, m)| *s < score || (*s == score && (member.is_empty() || *m < member)))
            .cloned()
            .collect();
        let got = walk(&mut conn, &score.to_string(), &member, 100);
        assert_eq!(got, expected, "after ({score}, {member:?})");
        let got = walk(&mut conn, &score.to_string(), &member, 2);
        assert_eq!(
            got,
            expected[..expected.len().min(2)],
            "2 after ({score}, {member:?})"
        );
    }
    let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();
}

/// The scripts' fingerprint of an id is the client's: a truncate rebuilds from the list
/// the window that appends wrote with the fingerprints they were given.
#[test]
fn the_scripts_fingerprint_ids_as_the_client_does() {
    let Some(mut conn) = server() else { return };
    let probe = Script::new(&source(&[FINGERPRINT, "return fingerprint(ARGV[1])"]));
    let longest = "z".repeat(fusion_core::MessageId::MAX_LEN);
    let fresh = fusion_core::MessageId::new();
    for id in [
        "a",
        "evt_1",
        "evt_2",
        "A-Z.a:z_09",
        &longest,
        fresh.as_str(),
    ] {
        let lua: Vec<u8> = probe.arg(id).invoke(&mut conn).unwrap();
        assert_eq!(lua, fingerprint(id), "{id}");
    }
}

/// Found by a review: a cluster's `CLAIM` took the due entries out of the expiry index,
/// so one whose purge never finished (its reply lost and the script sent again, a failed
/// sweep, a killed process) lost them, and the sessions they named were never purged nor
/// counted. It scores them a lease ahead instead: still there, not due to a second claim
/// (another purge, or this one sent again) until the lease ends.
#[test]
fn a_claim_leases_the_due_entries_and_a_second_claim_gets_none_of_them() {
    let Some(mut conn) = server() else { return };
    let key = format!("{}:expiry", prefix("claim"));
    let now: (String, String) = redis::cmd("TIME").query(&mut conn).unwrap();
    let now_ms = now.0.parse::<i64>().unwrap() * 1000 + now.1.parse::<i64>().unwrap() / 1000;
    let later = now_ms + 3_600_000;
    for (score, member) in [
        (now_ms - 2000, "a/alice"),
        (now_ms - 1000, "b"),
        (later, "c"),
    ] {
        let _: () = redis::cmd("ZADD")
            .arg(&key)
            .arg(score)
            .arg(member)
            .query(&mut conn)
            .unwrap();
    }
    let claim = Script::new(CLAIM.source());
    let lease = 600_000;
    let (at, due, _): (i64, Vec<String>, Vec<String>) = claim
        .key(&key)
        .arg(10)
        .arg(lease)
        .arg("3")
        .invoke(&mut conn)
        .unwrap();
    assert_eq!(due, ["a/alice", "b"]);
    for member in ["a/alice", "b"] {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&key)
            .arg(member)
            .query(&mut conn)
            .unwrap();
        // The claimer's token past a whole ms: claimed (`CLAIMED`).
        let whole = (at + lease) as f64;
        assert_eq!(score, Some(whole + super::token_of(whole, 3)), "{member}");
    }
    let score: Option<i64> = redis::cmd("ZSCORE")
        .arg(&key)
        .arg("c")
        .query(&mut conn)
        .unwrap();
    assert_eq!(score, Some(later), "an entry not due is left as it was");
    let (_, again, _): (i64, Vec<String>, Vec<String>) = claim
        .key(&key)
        .arg(10)
        .arg(lease)
        .arg("4")
        .invoke(&mut conn)
        .unwrap();
    assert_eq!(again, Vec::<String>::new());
    let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();
}
