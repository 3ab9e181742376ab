//! Checks and rewrites applied to SQL text before it is executed or logged.
//!
//! Rewriting makes statement-based replication deterministic: `RANDOM()`, `RANDOMBLOB(N)` and
//! date/time functions of `'now'` are replaced by literals on the node that receives the
//! request, so every replica (and every replay after a restart) applies the same values.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::conn::RESERVED_PRAGMAS;
use crate::lex::{self, Kind, Token};

/// Largest `RANDOMBLOB(N)` that is rewritten into a literal; larger ones are refused, since
/// leaving them would let replicas diverge.
pub const MAX_RANDOMBLOB_REWRITE: i64 = 1024 * 1024;

/// What to rewrite.
#[derive(Debug, Clone, Copy)]
pub struct RewriteOptions {
    pub random: bool,
    pub time: bool,
}

/// A statement that cannot be rewritten safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("RANDOMBLOB({0}) is too large to rewrite (at most {MAX_RANDOMBLOB_REWRITE} bytes)")]
    BlobTooLarge(i64),
}

/// Whether any statement in `sql` changes a pragma the node reserves for itself
/// (journal mode, synchronous, query_only, WAL checkpointing, heap limits), however it is
/// spelled.
pub fn is_disallowed_pragma(sql: &str) -> bool {
    // Cheap test first: this runs for every statement.
    if !contains_ignore_case(sql, "pragma") {
        return false;
    }
    let tokens = lex::tokenize(sql);
    lex::statements(&tokens).into_iter().any(|st| {
        if !st[0].is_word(sql, "pragma") {
            return false;
        }
        let (name, rest) = match st.get(2).map(|t| t.kind) {
            Some(Kind::Dot) => (st.get(3), st.get(4..).unwrap_or(&[])),
            _ => (st.get(1), st.get(2..).unwrap_or(&[])),
        };
        let Some(name) = name else { return false };
        let name = name.unquoted(sql).to_ascii_lowercase();
        if !RESERVED_PRAGMAS.contains(&name.as_str()) {
            return false;
        }
        name == "wal_checkpoint" || rest.first().is_some_and(|t| matches!(t.kind, Kind::Eq | Kind::LParen))
    })
}

/// Whether any statement in `sql` is an ATTACH or DETACH, which only the node itself may run.
pub fn attaches(sql: &str) -> bool {
    if !(contains_ignore_case(sql, "attach") || contains_ignore_case(sql, "detach")) {
        return false;
    }
    let tokens = lex::tokenize(sql);
    lex::statements(&tokens)
        .into_iter()
        .any(|st| st[0].is_word(sql, "attach") || st[0].is_word(sql, "detach"))
}

/// Whether the statement has a `RETURNING` clause, so it must run as a query.
pub fn has_returning(sql: &str) -> bool {
    // Cheap pre-filter first: most statements never contain the word.
    contains_ignore_case(sql, "returning") && lex::tokenize(sql).iter().any(|t| t.is_word(sql, "returning"))
}

/// Whether the statement starts with `EXPLAIN`.
pub fn is_explain(sql: &str) -> bool {
    lex::tokenize(sql).first().is_some_and(|t| t.is_word(sql, "explain"))
}

/// Whether `hay` contains `needle`, ignoring ASCII case. Runs for every statement, several
/// times: `memchr` finds the places where the first byte matches, in either case, and only
/// those windows are compared.
pub(crate) fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last_start) = hay.len().checked_sub(needle.len()) else {
        return false;
    };
    memchr::memchr2_iter(
        first.to_ascii_lowercase(),
        first.to_ascii_uppercase(),
        &hay[..=last_start],
    )
    .any(|i| hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest))
}

/// rqlite's pre-filter: a statement is looked at only if it mentions one of these calls,
/// written with the parenthesis right after the name.
fn may_need_rewrite(sql: &str) -> bool {
    const NAMES: [&[u8]; 7] = [
        b"time",
        b"date",
        b"julianday",
        b"unixepoch",
        b"timediff",
        b"random",
        b"randomblob",
    ];
    let sql = sql.as_bytes();
    memchr::memchr_iter(b'(', sql).any(|paren| {
        let before = &sql[..paren];
        NAMES
            .iter()
            .any(|n| before.len() >= n.len() && before[before.len() - n.len()..].eq_ignore_ascii_case(n))
    })
}

/// The current time as a Julian day number, formatted as rqlite logs it (six decimals).
pub fn julian_day_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0);
    format!("{:.6}", ms / 86_400_000.0 + 2_440_587.5)
}

/// Rewrites non-deterministic calls in `sql`; `Ok(None)` when nothing changed.
pub fn rewrite(sql: &str, opts: RewriteOptions) -> Result<Option<String>, RewriteError> {
    if !(opts.random || opts.time) || !may_need_rewrite(sql) {
        return Ok(None);
    }
    let tokens = lex::tokenize(sql);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut now: Option<String> = None;
    let mut rng = rand::rng();
    // One flag per open parenthesis level: is this level inside an ORDER BY?
    let mut order_by = vec![false];
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        match t.kind {
            Kind::LParen => order_by.push(false),
            Kind::RParen if order_by.len() > 1 => {
                order_by.pop();
            }
            Kind::Semicolon => {
                order_by.clear();
                order_by.push(false);
            }
            Kind::Word => {
                let in_order_by = *order_by.last().unwrap_or(&false);
                let next_is_paren = tokens.get(i + 1).is_some_and(|n| n.kind == Kind::LParen);
                if t.is_word(sql, "order") && tokens.get(i + 1).is_some_and(|n| n.is_word(sql, "by")) {
                    if let Some(top) = order_by.last_mut() {
                        *top = true;
                    }
                } else if ["limit", "union", "intersect", "except", "window", "returning"]
                    .iter()
                    .any(|w| t.is_word(sql, w))
                {
                    if let Some(top) = order_by.last_mut() {
                        *top = false;
                    }
                } else if next_is_paren && !in_order_by {
                    let name = t.text(sql).to_ascii_lowercase();
                    if let Some((text, close)) = rewrite_call(sql, &tokens, i, &name, opts, &mut rng, &mut now)? {
                        // Resume after the call: the whole call was replaced.
                        edits.push((t.start, tokens[close].end, text));
                        i = close + 1;
                        continue;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    if edits.is_empty() {
        return Ok(None);
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut pos = 0;
    for (s, e, text) in edits {
        out.push_str(&sql[pos..s]);
        out.push_str(&text);
        pos = e;
    }
    out.push_str(&sql[pos..]);
    Ok(Some(out))
}

/// Index of the `)` closing the `(` at `open`.
fn closing_paren(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        match t.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// Top-level argument token ranges of the call whose `(` is at `open` and `)` at `close`.
fn arguments(tokens: &[Token], open: usize, close: usize) -> Vec<(usize, usize)> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = open + 1;
    for (j, t) in tokens.iter().enumerate().take(close).skip(open + 1) {
        match t.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => depth = depth.saturating_sub(1),
            Kind::Comma if depth == 0 => {
                args.push((start, j));
                start = j + 1;
            }
            _ => {}
        }
    }
    if start < close {
        args.push((start, close));
    }
    args
}

fn is_now(sql: &str, tokens: &[Token], (s, e): (usize, usize)) -> bool {
    e == s + 1
        && match tokens[s].kind {
            Kind::String => tokens[s].unquoted(sql).eq_ignore_ascii_case("now"),
            Kind::Word => tokens[s].is_word(sql, "now"),
            _ => false,
        }
}

/// Replacement text for the whole call whose name is at `at`, and the index of its `)`.
fn rewrite_call(
    sql: &str,
    tokens: &[Token],
    at: usize,
    name: &str,
    opts: RewriteOptions,
    rng: &mut impl Rng,
    now: &mut Option<String>,
) -> Result<Option<(String, usize)>, RewriteError> {
    let open = at + 1;
    let Some(close) = closing_paren(tokens, open) else {
        return Ok(None);
    };
    let args = arguments(tokens, open, close);
    match name {
        "random" if opts.random && args.is_empty() => {
            // Non-negative, as rqlite's rewriter produces.
            let v: i64 = rng.random::<i64>() & i64::MAX;
            Ok(Some((v.to_string(), close)))
        }
        "randomblob" if opts.random && args.len() == 1 && args[0].1 == args[0].0 + 1 => {
            let tok = tokens[args[0].0];
            if tok.kind != Kind::Number {
                return Ok(None);
            }
            let Ok(n) = tok.text(sql).parse::<i64>() else {
                return Ok(None);
            };
            if n > MAX_RANDOMBLOB_REWRITE {
                return Err(RewriteError::BlobTooLarge(n));
            }
            let mut bytes = vec![0u8; n.max(1) as usize];
            rng.fill(bytes.as_mut_slice());
            let mut text = String::with_capacity(bytes.len() * 2 + 3);
            text.push_str("x'");
            for b in bytes {
                text.push_str(&format!("{b:02X}"));
            }
            text.push('\'');
            Ok(Some((text, close)))
        }
        "date" | "time" | "datetime" | "julianday" | "unixepoch" | "strftime" | "timediff" if opts.time => {
            let positions: &[usize] = match name {
                "strftime" => &[1],
                "timediff" => &[0, 1],
                _ => &[0],
            };
            let targets: Vec<(usize, usize)> = positions
                .iter()
                .filter_map(|&p| args.get(p).copied())
                .filter(|&a| is_now(sql, tokens, a))
                .collect();
            if targets.is_empty() {
                return Ok(None);
            }
            let jd = now.get_or_insert_with(julian_day_now).clone();
            let mut text = String::new();
            let mut pos = tokens[at].start;
            for (s, _) in targets {
                text.push_str(&sql[pos..tokens[s].start]);
                text.push_str(&jd);
                pos = tokens[s].end;
            }
            text.push_str(&sql[pos..tokens[close].end]);
            Ok(Some((text, close)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: RewriteOptions = RewriteOptions {
        random: true,
        time: true,
    };

    #[test]
    fn finds_words_in_any_case_anywhere() {
        for (hay, needle, found) in [
            ("INSERT INTO t RETURNING id", "returning", true),
            ("x RETURNIN", "returning", false),
            ("PrAgMa foo", "pragma", true),
            ("a pragm", "pragma", false),
            ("ppragma", "pragma", true),
            ("", "pragma", false),
            ("abc", "", true),
            ("é random(1)", "random(", true),
            ("sélect", "lect", true),
        ] {
            assert_eq!(contains_ignore_case(hay, needle), found, "{hay:?} {needle:?}");
            let by_windows = hay
                .as_bytes()
                .windows(needle.len().max(1))
                .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
            assert_eq!(found, by_windows || needle.is_empty(), "{hay:?} {needle:?}");
        }
    }

    #[test]
    fn the_pre_filter_looks_for_each_call_name_right_before_a_parenthesis() {
        for (sql, wanted) in [
            ("SELECT RANDOM()", true),
            ("SELECT randomblob(4)", true),
            ("SELECT x_random(1)", true),
            ("SELECT DateTime('now')", true),
            ("SELECT random ()", false),
            ("SELECT random", false),
            ("(", false),
            ("INSERT INTO t(name, v) VALUES('a', 1)", false),
            ("VALUES(unixepoch(), julianday())", true),
            ("SELECT timediff(a, b)", true),
            ("SELECT é(1), date(x)", true),
        ] {
            assert_eq!(may_need_rewrite(sql), wanted, "{sql:?}");
        }
    }

    #[test]
    fn reserved_pragmas_in_every_spelling() {
        for sql in [
            "PRAGMA synchronous=0",
            "pragma SYNCHRONOUS = OFF",
            "PRAGMA synchronous(0)",
            "PRAGMA/**/synchronous=0",
            "PRAGMA main . synchronous = 0",
            "PRAGMA \"main\".\"journal_mode\"=DELETE",
            "PRAGMA wal_checkpoint",
            "PRAGMA wal_checkpoint(TRUNCATE)",
            "PRAGMA query_only=1",
            "PRAGMA wal_autocheckpoint=10",
            "SELECT 1; PRAGMA journal_mode=delete",
            "  \n PRAGMA journal_mode = WAL",
            "PRAGMA soft_heap_limit=1000000",
            "PRAGMA Hard_Heap_Limit(1000000)",
        ] {
            assert!(is_disallowed_pragma(sql), "{sql}");
        }
        for sql in [
            "PRAGMA journal_mode",
            "PRAGMA synchronous",
            "PRAGMA soft_heap_limit",
            "PRAGMA foreign_keys=ON",
            "PRAGMA table_info(foo)",
            "SELECT 'PRAGMA synchronous=0'",
            "PRAGMA",
        ] {
            assert!(!is_disallowed_pragma(sql), "{sql}");
        }
    }

    #[test]
    fn random_is_rewritten_except_in_order_by() {
        let out = rewrite("INSERT INTO t VALUES(random(), RANDOMBLOB(4))", ALL)
            .unwrap()
            .unwrap();
        assert!(!out.to_lowercase().contains("random"), "{out}");
        assert!(out.contains("x'"), "{out}");
        assert_eq!(rewrite("SELECT * FROM t ORDER BY random()", ALL).unwrap(), None);
        let out = rewrite("SELECT random() FROM t ORDER BY random() LIMIT 1", ALL)
            .unwrap()
            .unwrap();
        assert!(out.ends_with("ORDER BY random() LIMIT 1"), "{out}");
        let out = rewrite("SELECT (SELECT random() ORDER BY 1), random()", ALL)
            .unwrap()
            .unwrap();
        assert!(!out.to_lowercase().contains("random"), "{out}");
    }

    #[test]
    fn random_off_and_strings_untouched() {
        let opts = RewriteOptions {
            random: false,
            time: true,
        };
        assert_eq!(rewrite("SELECT random()", opts).unwrap(), None);
        assert_eq!(rewrite("SELECT 'random()'", ALL).unwrap(), None);
        assert_eq!(rewrite("SELECT randomblob(?)", ALL).unwrap(), None);
    }

    #[test]
    fn now_becomes_a_julian_day() {
        let out = rewrite("INSERT INTO t VALUES(datetime('now'), date('2020-01-01'))", ALL)
            .unwrap()
            .unwrap();
        assert!(out.starts_with("INSERT INTO t VALUES(datetime(24"), "{out}");
        assert!(out.ends_with("date('2020-01-01'))"), "{out}");
        let out = rewrite("SELECT strftime('%s', 'now', '+1 day')", ALL).unwrap().unwrap();
        assert!(out.starts_with("SELECT strftime('%s', 24"), "{out}");
        assert!(out.ends_with(", '+1 day')"), "{out}");
        assert_eq!(rewrite("SELECT datetime(CURRENT_TIMESTAMP)", ALL).unwrap(), None);
    }

    #[test]
    fn huge_randomblob_is_refused() {
        assert!(rewrite("SELECT randomblob(1000000000)", ALL).is_err());
    }

    #[test]
    fn returning_and_explain() {
        assert!(has_returning("INSERT INTO t(x) VALUES(1) RETURNING *"));
        assert!(!has_returning("INSERT INTO t(x) VALUES('returning ')"));
        assert!(is_explain("  explain query plan SELECT 1"));
        assert!(!is_explain("SELECT 'explain'"));
    }
}
