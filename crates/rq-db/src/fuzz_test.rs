//! Property tests over arbitrary and SQL-shaped text for the tokenizer, the statement
//! rewriter and the checks built on them: they never panic, and tokens always lie on character
//! boundaries, in order, within the text. `PROPTEST_CASES` sets the number of cases
//! (proptest's 256 by default).

use proptest::prelude::*;

use crate::lex;
use crate::sql::{self, RewriteOptions};

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
}
