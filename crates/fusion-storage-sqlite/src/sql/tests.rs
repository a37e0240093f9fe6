//! The write model's unit tests: one text per write in both forms, a conditional write as
//! the plain one after a check, the values an append's check leaves bound, and sqlx's
//! binding replayed over every write.

use super::check::READ_REVISION_AND_UPDATED;
use super::*;
use fusion_core::DEDUP_WINDOW;

#[test]
fn both_forms_of_a_write_come_from_one_text() {
    assert_eq!(
        REMOVE.script,
        "BEGIN IMMEDIATE; DELETE FROM messages WHERE session_id = ?1; \
         DELETE FROM session_tags WHERE session_id = ?1; \
         DELETE FROM session_meta WHERE session_id = ?1; \
         DELETE FROM sessions WHERE id = ?1; COMMIT"
    );
    assert_eq!(
        REMOVE.rest,
        "DELETE FROM messages WHERE session_id = ?1; \
         DELETE FROM session_tags WHERE session_id = ?1; \
         DELETE FROM session_meta WHERE session_id = ?1; \
         DELETE FROM sessions WHERE id = ?1; COMMIT"
    );
    assert!(APPEND.script.starts_with(BEGIN_WRITE));
    assert_eq!(NOTHING.script, "BEGIN IMMEDIATE; COMMIT");
    assert_eq!(NOTHING.counted, "BEGIN IMMEDIATE; SELECT changes(); COMMIT");
    assert_eq!(format!("{}COMMIT", REMOVE.body), REMOVE.rest);
    assert_eq!(Write::remove("s").values.len(), 1);
}

/// A conditional write runs the plain write's statements with the same values, so the
/// generation rules live in one set of statements.
#[test]
fn a_conditional_write_is_the_plain_write_after_a_check() {
    let one = [ChatMessage::user("m")];
    let expect = Expect::Generation(0);
    let cases = [
        (Change::Append(&one), &APPEND, 6),
        (Change::Append(&[]), &NOTHING, 1),
        (Change::Truncate(2), &TRUNCATE, 4),
        (Change::Truncate(0), &REMOVE, 1),
        (Change::Replace(&one), &SAVE, 6),
        (Change::Replace(&[]), &REMOVE, 1),
        (Change::Rewrite(&one), &REWRITE, 6),
        (Change::Rewrite(&[]), &REMOVE, 1),
    ];
    for (change, sql, values) in cases {
        let write = Write::conditional("s", expect, change).unwrap();
        assert!(std::ptr::eq(write.sql, sql), "{change:?}");
        assert_eq!(write.values.len(), values, "{change:?}");
        assert!(matches!(write.check, Some(Check::Revision { .. })));
    }
    assert!(Write::append("s", &one).unwrap().check.is_none());

    // Messages with ids: the same statements; an append checks which are stored already,
    // whatever the revision, reading the session's `recent_ids`.
    let with_id = [ChatMessage::user("m").with_new_id()];
    for (change, sql, dedup) in [
        (Change::Append(&with_id), &APPEND, true),
        (Change::Replace(&with_id), &SAVE, false),
    ] {
        let write = Write::conditional("s", expect, change).unwrap();
        assert!(std::ptr::eq(write.sql, sql), "{change:?}");
        assert_eq!(write.values.len(), 6, "{change:?}");
        assert_eq!(write.check.unwrap().reads_recent(), dedup, "{change:?}");
    }
    // A plain append with ids: its statement decides where it can (binding the batch's
    // fingerprints), the check where it cannot; none without ids, or with more ids than
    // a window.
    let append = Write::append("s", &with_id).unwrap();
    assert!(std::ptr::eq(append.sql, &APPEND));
    assert!(std::ptr::eq(
        append.deciding.unwrap(),
        &APPEND_RECORDING_IDS
    ));
    assert!(
        matches!(&append.values[RECENT_AT], Value::Blob(b) if *b == recent_of(&with_id)),
        "the batch's fingerprints"
    );
    assert_eq!(append.check.unwrap().read(), READ_REVISION_AND_RECENT);
    assert!(Write::append("s", &one).unwrap().deciding.is_none());
    let long: Vec<ChatMessage> = (0..=DEDUP_WINDOW)
        .map(|_| ChatMessage::user("m").with_new_id())
        .collect();
    let long = Write::append("s", &long).unwrap();
    assert!(long.deciding.is_none() && matches!(long.values[RECENT_AT], Value::Null));
    assert!(
        Write::conditional("s", expect, Change::Append(&with_id))
            .unwrap()
            .deciding
            .is_none()
    );
    let save = Write::save("s", &with_id).unwrap();
    assert!(
        matches!(&save.values[RECENT_AT], Value::Blob(b) if *b == recent_of(&with_id)),
        "a save stores the fingerprints of its history"
    );
    let create = Write::create("s", &SessionMeta::new(), &with_id, None).unwrap();
    assert!(std::ptr::eq(create.sql, &CREATE));
    assert!(
        !create.check.unwrap().reads_recent(),
        "a new session stores no id"
    );
    assert_eq!(
        BEGIN_AND_READ_REVISION,
        concat!(
            "BEGIN IMMEDIATE; SELECT generation, message_count, expires_at FROM sessions \
             WHERE id = ?1 AND ",
            times_hold!()
        )
    );
}

/// Only a write under `UnwrittenSince` reads `updated_at`, with ids or not: every other
/// check reads what it read before, so the comparison costs the others nothing.
#[test]
fn only_a_write_unwritten_since_reads_updated_at() {
    let at = fusion_core::Revision {
        generation: 7,
        len: 1,
    };
    let unwritten = Expect::UnwrittenSince {
        revision: at,
        since: std::time::SystemTime::now(),
    };
    let plain = [ChatMessage::user("m")];
    let with_id = [ChatMessage::user("m").with_new_id()];
    for change in [
        Change::Truncate(0),
        Change::Append(&plain),
        Change::Append(&with_id),
    ] {
        let check = Write::conditional("s", unwritten, change)
            .unwrap()
            .check
            .unwrap();
        assert!(check.reads_updated(), "{change:?}");
        assert_eq!(check.read(), READ_REVISION_AND_UPDATED, "{change:?}");
        assert_eq!(
            check.begin_and_read(),
            format!("BEGIN IMMEDIATE; {READ_REVISION_AND_UPDATED}")
        );
        for expect in [Expect::Exactly(at), Expect::Generation(7)] {
            let check = Write::conditional("s", expect, change)
                .unwrap()
                .check
                .unwrap();
            assert!(!check.reads_updated(), "{expect:?} {change:?}");
            assert_ne!(
                check.read(),
                READ_REVISION_AND_UPDATED,
                "{expect:?} {change:?}"
            );
        }
    }
    let read = READ_REVISION_AND_UPDATED;
    assert!(read.starts_with(READ_REVISION_AND_RECENT.split(" FROM").next().unwrap()));
    assert!(
        read.contains(", updated_at FROM sessions WHERE id = ?1"),
        "{read}"
    );
}

/// An append's check that finds some ids stored cuts the batch down to the others and
/// the count with it; other values stay, and `extra` comes after them.
#[test]
fn the_values_bound_are_what_the_check_decided() {
    let batch = [
        ChatMessage::user("stored").with_new_id(),
        ChatMessage::user("new").with_new_id(),
    ];
    let write = Write::append("s", &batch).unwrap();
    let stored = [None, batch[0].id.as_ref().map(|id| id.as_str().to_owned())];
    let decided = match &write.check {
        Some(Check::Revision {
            dedup: Some(dedup), ..
        }) => dedup.decide(None, Some(&stored)),
        other => panic!("{other:?}"),
    };
    let kept = decided.kept.unwrap();
    let recent = Some(decided.recent.clone());
    let values = Write::decided_values(Cow::Borrowed(&write.values), &kept, recent, Vec::new());
    let Value::Text(json) = &values[BATCH_AT] else {
        panic!("{values:?}")
    };
    assert_eq!(*json, serde_json::to_string(&batch[1..]).unwrap());
    assert!(matches!(values[COUNT_AT], Value::Int(1)), "{values:?}");
    assert!(matches!(&values[0], Value::Text(id) if id == "s"));
    assert!(matches!(&values[RECENT_AT], Value::Blob(b) if *b == decided.recent));

    let all = Write::decided_values(Cow::Borrowed(&write.values), &Kept::All, None, Vec::new());
    assert!(
        matches!(all, Cow::Borrowed(_)),
        "nothing cut, nothing copied"
    );
    let extra = vec![Value::Null];
    let extra = Write::decided_values(Cow::Borrowed(&write.values), &Kept::All, None, extra);
    assert_eq!(extra.len(), write.values.len() + 1);
}

/// Replays how sqlx binds a script (see the module documentation): every parameter a
/// statement names must be bound, for each write with the number of values it binds.
#[test]
fn sqlx_binds_every_parameter_of_every_write() {
    let one = [ChatMessage::user("m")];
    let with_id = [ChatMessage::user("m").with_new_id()];
    let meta = SessionMeta::new();
    let writes = [
        (&APPEND, Write::append("s", &one).unwrap().values.len()),
        (&APPEND, Write::append("s", &with_id).unwrap().values.len()),
        (&SAVE, Write::save("s", &one).unwrap().values.len()),
        (
            &REWRITE,
            Write::conditional("s", Expect::Generation(0), Change::Rewrite(&one))
                .unwrap()
                .values
                .len(),
        ),
        (
            &CREATE,
            Write::create("s", &meta, &with_id, None)
                .unwrap()
                .values
                .len(),
        ),
        (&TRUNCATE, Write::truncate("s", 1).values.len()),
        (&REMOVE, Write::remove("s").values.len()),
        (
            &CREATE,
            Write::create("s", &meta, &one, None).unwrap().values.len(),
        ),
        // The id, then the seven values the check decides (`check.rs`).
        (&UPDATE_META, 8),
        // The id and now, bound from a plain append or save that found its session
        // expired.
        (&REMOVE_EXPIRED, 6),
        (&PURGE, Write::purge(10).values.len()),
    ];
    for (sql, values) in writes {
        let mut anonymous = 0;
        for statement in sql.statements {
            let named: Vec<usize> = statement
                .split('?')
                .skip(1)
                .map(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().unwrap()
                })
                .collect();
            let slots = named.iter().copied().max().unwrap_or(0);
            assert!(slots <= values, "{statement}: ?{slots} of {values} values");
            for slot in 1..=slots {
                if named.contains(&slot) {
                    continue;
                }
                anonymous += 1;
                let unbound_after = named.iter().any(|&n| n > slot);
                assert!(
                    anonymous <= values || !unbound_after,
                    "{statement}: sqlx would stop at ?{slot} and leave later ones NULL"
                );
            }
        }
    }
}

/// A history longer than the connection's longest string, each of its messages shorter,
/// fails the one-array reads of the pool's loads with `SQLITE_TOOBIG`, while the rows
/// read one by one (`LOAD_ROWS`): what lets `crate::pooled` fall back to them. Run at a
/// length limit of 1,000 bytes rather than 10^9, so it holds nothing.
#[test]
fn a_history_past_the_longest_string_fails_the_array_and_reads_row_by_row() {
    use rusqlite::limits::Limit;

    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, 1000);
    conn.execute_batch(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, generation INTEGER, \
             message_count INTEGER, expires_at INTEGER); \
         CREATE TABLE messages (session_id TEXT, seq INTEGER, message TEXT, \
             PRIMARY KEY (session_id, seq)); \
         INSERT INTO sessions VALUES ('s', 1, 2, NULL);",
    )
    .unwrap();
    let message = serde_json::to_string(&ChatMessage::user("x".repeat(560))).unwrap();
    for seq in 0..2 {
        conn.execute(
            "INSERT INTO messages VALUES ('s', ?1, ?2)",
            rusqlite::params![seq, message],
        )
        .unwrap();
    }
    for sql in [LOAD_ARRAY, LOAD_REVISION_ARRAY] {
        let err = conn
            .query_row(sql, rusqlite::params!["s", 0], |_| Ok(()))
            .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::TooBig),
            "{sql}: {err}"
        );
    }
    let mut rows = conn.prepare(LOAD_ROWS).unwrap();
    let rows: Vec<String> = rows
        .query_map(rusqlite::params!["s", 0], |row| row.get(1))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(rows, [message.clone(), message]);
}
