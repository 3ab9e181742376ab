//! Property tests over arbitrary and SQL-shaped text for the tokenizer, the statement
//! rewriter and the checks built on them: they never panic, and tokens always lie on character
//! boundaries, in order, within the text. And over generated SELECTs: with their literals
//! lifted out and bound, SQLite gives the same answer as to the text as written.
//! `PROPTEST_CASES` sets the number of cases (proptest's 256 by default).

use proptest::prelude::*;

use crate::sql::{self, RewriteOptions};
use crate::{lex, literals};

/// Fragments SQL is made of, including the awkward ones: unterminated quotes and comments,
/// the functions that are rewritten, and the words the checks look for.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("SELECT".to_string()),
        Just("PRAGMA".to_string()),
        Just("ATTACH".to_string()),
        Just("RETURNING".to_string()),
        Just("ORDER BY".to_string()),
        Just("random()".to_string()),
        Just("RANDOMBLOB(16)".to_string()),
        Just("randomblob(-1)".to_string()),
        Just("datetime('now')".to_string()),
        Just("julianday('now', 'localtime')".to_string()),
        Just("CURRENT_TIMESTAMP".to_string()),
        Just("journal_mode".to_string()),
        Just("wal_checkpoint".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("`".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("/*".to_string()),
        Just("*/".to_string()),
        Just("--".to_string()),
        Just("\n".to_string()),
        Just("x'".to_string()),
        Just("x'0f'".to_string()),
        Just("?".to_string()),
        Just("?12".to_string()),
        Just(":name".to_string()),
        Just("$x".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just(";".to_string()),
        Just(".".to_string()),
        Just("=".to_string()),
        Just("==".to_string()),
        Just("-".to_string()),
        Just("1.5e10".to_string()),
        Just("0x".to_string()),
        Just("é".to_string()),
        Just("日本".to_string()),
        Just("\u{0}".to_string()),
        "[a-z_]{1,8}",
        "[0-9]{1,5}",
        any::<char>().prop_map(|c| c.to_string()),
    ]
}

fn sql_like() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..40).prop_map(|parts| parts.join(" "))
}

fn check(sql: &str) {
    let tokens = lex::tokenize(sql);
    let mut last_end = 0;
    for t in &tokens {
        assert!(
            t.start >= last_end && t.start < t.end && t.end <= sql.len(),
            "{t:?} in {sql:?}"
        );
        assert!(
            sql.is_char_boundary(t.start) && sql.is_char_boundary(t.end),
            "{t:?} in {sql:?}"
        );
        let _ = t.unquoted(sql);
        last_end = t.end;
    }
    let statements = lex::statements(&tokens);
    assert!(statements.iter().all(|s| !s.is_empty()));
    let _ = sql::is_disallowed_pragma(sql);
    let _ = sql::attaches(sql);
    let _ = sql::has_returning(sql);
    let _ = sql::is_explain(sql);
    if let Some(l) = literals::lift(sql) {
        let _ = lex::tokenize(&l.sql);
    }
    let all = RewriteOptions {
        random: true,
        time: true,
    };
    if let Ok(Some(rewritten)) = sql::rewrite(sql, all) {
        // What the rewriter makes is text the tokenizer handles too.
        let _ = lex::tokenize(&rewritten);
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_breaks_the_tokenizer_or_the_rewriter(sql in any::<String>()) {
        check(&sql);
    }

    #[test]
    fn sql_shaped_text_never_breaks_the_tokenizer_or_the_rewriter(sql in sql_like()) {
        check(&sql);
    }

    #[test]
    fn a_select_with_its_literals_lifted_answers_as_written(sql in select_with_literals()) {
        same_answer(&sql);
    }
}

/// A table whose columns have every affinity and a collation, holding values of every type
/// (and text that looks like numbers), with a partial index and an index on an expression,
/// which SQLite uses only when the values compared with allow it.
const TABLE: &str = "
    CREATE TABLE t(a INTEGER, b TEXT, c REAL, d BLOB, e, f TEXT COLLATE NOCASE);
    CREATE INDEX t_a ON t(a) WHERE a > 3;
    CREATE INDEX t_b ON t(b);
    CREATE INDEX t_f ON t(f, a + 1);
    INSERT INTO t VALUES
        (1, '1', 1.0, x'01', 1, 'x'),
        (5, '5', 5.5, '5', '5', 'X'),
        (-7, 'abc', -0.5, NULL, 'abc', 'Abc'),
        (NULL, '', NULL, x'', 2.5, ''),
        (9223372036854775807, ' 5', 1e300, 5, x'35', 'it''s'),
        (4, '05', 4.0, 'x', NULL, NULL),
        ('text', 'ABC', 'text', 4.5, 4, 'abc');
";

fn column() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "rowid", "a + 1", "length(b)", "t.f"])
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "4",
            "5",
            "05",
            "9223372036854775807",
            "'5'",
            "'5.0'",
            "' 5'",
            "'05'",
            "''",
            "'abc'",
            "'ABC'",
            "'x'",
            "'it''s'",
            "'1e3'",
            "'0x10'",
            "'text'",
            "5.5",
            "NULL",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn comparison() -> impl Strategy<Value = String> {
    (
        column(),
        prop::sample::select(vec!["=", "==", "!=", "<>", "<", "<=", ">", ">="]),
        literal(),
        any::<bool>(),
    )
        .prop_map(|(c, op, l, flip)| {
            if flip {
                format!("{l} {op} {c}")
            } else {
                format!("{c} {op} {l}")
            }
        })
}

/// Conditions whose literals are not lifted, beside which lifted ones must still answer alike.
fn other_condition() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "b LIKE '5%'",
        "f LIKE 'A%'",
        "a IN (1, 5, 'text')",
        "a NOT IN (4)",
        "a BETWEEN 1 AND 5",
        "f IS 'x'",
        "e IS NOT NULL",
        "a = -7",
        "c = 5.5",
        "d = x'01'",
        "b = 5 COLLATE NOCASE",
        "CASE WHEN a = 1 THEN 'x' ELSE f END = 'x'",
        "a = 4 + 1",
        "coalesce(a, 0) = 0",
        "typeof(a) = 'integer'",
    ])
    .prop_map(str::to_string)
}

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![3 => comparison(), 1 => other_condition()].prop_recursive(3, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), prop::sample::select(vec!["AND", "OR"]), inner.clone())
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|c| format!("({c})")),
            inner.prop_map(|c| format!("NOT ({c})")),
        ]
    })
}

fn select_with_literals() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["*", "a, b", "count(*)", "a = 1, b", "rowid, f"]),
        condition(),
        prop::sample::select(vec![
            "",
            " ORDER BY 1",
            " ORDER BY b LIMIT 2",
            " GROUP BY a HAVING a = 1",
            ";",
        ]),
    )
        .prop_map(|(cols, cond, tail)| format!("SELECT {cols} FROM t WHERE {cond}{tail}"))
}

/// Column names, declared types and rows of `sql` as SQLite answers it, or its error.
fn answer(conn: &rusqlite::Connection, sql: &str, bound: Option<&literals::Lifted<'_>>) -> Result<String, String> {
    let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
    if let Some(l) = bound {
        l.bind(&mut stmt).map_err(|e| e.to_string())?;
    }
    let head: Vec<String> = stmt
        .columns()
        .map(|c| format!("{}:{:?}", c.name(), c.decl_type()))
        .collect();
    let n = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = format!("{head:?}");
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        let vals: Vec<rusqlite::types::Value> = (0..n).map(|i| r.get(i).unwrap()).collect();
        out.push_str(&format!("\n{vals:?}"));
    }
    Ok(out)
}

fn same_answer(sql: &str) {
    thread_local! {
        static DB: rusqlite::Connection = {
            let c = rusqlite::Connection::open_in_memory().unwrap();
            c.execute_batch(TABLE).unwrap();
            c
        };
    }
    let Some(lifted) = literals::lift(sql) else { return };
    DB.with(|c| {
        let written = answer(c, sql, None);
        let lifted_answer = answer(c, &lifted.sql, Some(&lifted));
        assert_eq!(written, lifted_answer, "{sql} lifted as {}", lifted.sql);
    });
}

#[test]
fn selects_that_compare_as_sqlite_does_answer_the_same_lifted() {
    for sql in [
        "SELECT * FROM t WHERE a = 5",
        "SELECT * FROM t WHERE a = '5'",
        "SELECT * FROM t WHERE b = 5",
        "SELECT * FROM t WHERE c = 5",
        "SELECT * FROM t WHERE e = '5'",
        "SELECT * FROM t WHERE f = 'abc' ORDER BY rowid",
        "SELECT * FROM t WHERE a > 3 AND a < 9223372036854775807",
        "SELECT * FROM t WHERE a + 1 = 6 AND f = 'x'",
        "SELECT rowid FROM t WHERE rowid = '2'",
        "SELECT a = 1, b FROM t WHERE a = 1",
        "SELECT * FROM t WHERE b = 'it''s' OR f = 'IT''S'",
    ] {
        assert!(literals::lift(sql).is_some(), "{sql}");
        same_answer(sql);
    }
}
