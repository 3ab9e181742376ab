//! Literal values lifted out of a read's WHERE clause, so that reads that differ only in the
//! values they compare with share one prepared statement.
//!
//! `SELECT * FROM t WHERE id=5000` becomes `SELECT * FROM t WHERE id=?` with 5000 bound.
//! Preparing a statement (SQLite's parser and code generator) is most of the work of a point
//! query whose values are written into its text, as clients that substitute parameters
//! themselves send them; the lifted text is the same for every such query, so it is prepared
//! once and kept (see `Conn::prepare`).
//!
//! The answer is the same either way. A literal and a `?` are both whole primary expressions,
//! so putting one for the other in an expression changes no other part of the parse tree; an
//! integer or text literal and the same value bound to the parameter are the same value, with
//! no affinity and no collation of their own; SQLite re-plans a statement when the value bound
//! to a parameter could change its plan (a LIKE prefix, a partial index). Only places where a
//! literal's text means more than its value differ: a result column's name, `ORDER BY 2`, an
//! alias. So only literals that compare with something in the WHERE clause of a plain SELECT
//! are lifted: after `=`, `==`, `!=`, `<>`, `<`, `<=`, `>` or `>=`, and ending the comparison.
//! A statement with a subquery, a compound, parameters of its own, or more than one statement
//! is left as it is.

use std::borrow::Cow;

use rusqlite::Statement;

use crate::lex::{self, Kind, Token};

/// At most this many literals are lifted from one statement; any later ones stay in the text.
const MAX_LIFTED: usize = 16;

/// A literal taken out of the text, bound in its place.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal<'a> {
    Integer(i64),
    Text(Cow<'a, str>),
}

/// A statement's text with its lifted literals replaced by `?`, and the literals in order.
#[derive(Debug)]
pub(crate) struct Lifted<'a> {
    pub sql: String,
    pub values: Vec<Literal<'a>>,
}

impl Lifted<'_> {
    /// Binds the lifted literals to the statement prepared from `self.sql`.
    pub fn bind(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<()> {
        for (i, v) in self.values.iter().enumerate() {
            match v {
                Literal::Integer(n) => stmt.raw_bind_parameter(i + 1, n)?,
                Literal::Text(s) => stmt.raw_bind_parameter(i + 1, s.as_ref())?,
            }
        }
        Ok(())
    }
}

/// Whether `sql` may have literals to lift: it starts with SELECT and mentions WHERE. A cheap
/// look, before `lift` tokenizes.
pub(crate) fn may_lift(sql: &str) -> bool {
    let head = sql.trim_start_matches([' ', '\t', '\n', '\r', '\x0c']);
    head.get(..6).is_some_and(|h| h.eq_ignore_ascii_case("select")) && crate::sql::contains_ignore_case(sql, "where")
}

/// `sql`, a text `may_lift` has passed, with the literals of its WHERE clause's comparisons
/// lifted out, or `None` when it is not a plain SELECT with at least one such literal.
pub(crate) fn lift(sql: &str) -> Option<Lifted<'_>> {
    let tokens = lex::tokenize(sql);
    let clause = where_clause(sql, &tokens)?;
    let mut out = String::new();
    let mut copied = 0;
    let mut values = Vec::new();
    let mut depth = 0usize;
    for j in clause {
        let t = tokens[j];
        match t.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => depth = depth.saturating_sub(1),
            Kind::Word if depth == 0 && ENDS_WHERE.iter().any(|w| t.is_word(sql, w)) => break,
            Kind::Number | Kind::String if values.len() < MAX_LIFTED => {
                let compared = is_comparison(sql, &tokens[j - 1]);
                if let (true, true, Some(v)) = (compared, ends_comparison(sql, t, tokens.get(j + 1)), literal(sql, t)) {
                    if out.is_empty() {
                        out.reserve(sql.len());
                    }
                    out.push_str(&sql[copied..t.start]);
                    out.push('?');
                    copied = t.end;
                    values.push(v);
                }
            }
            _ => {}
        }
    }
    if values.is_empty() {
        return None;
    }
    out.push_str(&sql[copied..]);
    Some(Lifted { sql: out, values })
}

/// Words that end a SELECT's WHERE clause at its own nesting level.
const ENDS_WHERE: [&str; 5] = ["GROUP", "HAVING", "WINDOW", "ORDER", "LIMIT"];

/// The tokens after the WHERE of a single plain SELECT, if `tokens` are one.
fn where_clause(sql: &str, tokens: &[Token]) -> Option<std::ops::Range<usize>> {
    let mut depth = 0usize;
    let mut at = None;
    for (i, t) in tokens.iter().enumerate() {
        match t.kind {
            Kind::Variable => return None,
            Kind::Semicolon if tokens[i..].iter().any(|t| t.kind != Kind::Semicolon) => return None,
            Kind::LParen => depth += 1,
            Kind::RParen => depth = depth.checked_sub(1)?,
            Kind::Word if i > 0 && (t.is_word(sql, "SELECT") || t.is_word(sql, "VALUES")) => return None,
            Kind::Word if depth == 0 && at.is_none() && t.is_word(sql, "WHERE") => at = Some(i + 1),
            _ => {}
        }
    }
    Some(at?..tokens.len())
}

/// Whether `t` is `=`, `==`, `<`, `>`, or the last character of `!=`, `<>`, `<=` and `>=`.
fn is_comparison(sql: &str, t: &Token) -> bool {
    t.kind == Kind::Eq || (t.kind == Kind::Other && matches!(t.text(sql), "<" | ">"))
}

/// Whether the literal `t` ends its comparison: `next` closes it, or there is none.
fn ends_comparison(sql: &str, t: Token, next: Option<&Token>) -> bool {
    let Some(n) = next else { return true };
    match n.kind {
        Kind::RParen | Kind::Semicolon => true,
        Kind::Word => {
            n.start > t.end
                && (n.is_word(sql, "AND") || n.is_word(sql, "OR") || ENDS_WHERE.iter().any(|w| n.is_word(sql, w)))
        }
        _ => false,
    }
}

/// The value of an integer literal written in decimal digits that fits 64 bits, or of a
/// whole text literal; `None` for any other.
fn literal(sql: &str, t: Token) -> Option<Literal<'_>> {
    let text = t.text(sql);
    match t.kind {
        Kind::Number if text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok().map(Literal::Integer),
        Kind::String => {
            let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
            if inner.contains('\0') {
                return None;
            }
            // Inside, quotes come only in pairs; a lone one means the literal never closed.
            let mut rest = inner;
            while let Some(q) = rest.find('\'') {
                rest = rest[q..].strip_prefix("''")?;
            }
            Some(Literal::Text(if inner.contains('\'') {
                Cow::Owned(inner.replace("''", "'"))
            } else {
                Cow::Borrowed(inner)
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a read's text is run as: lifted when it passes `may_lift` and `lift`.
    fn lifted(sql: &str) -> Option<(String, Vec<Literal<'_>>)> {
        may_lift(sql).then(|| lift(sql)).flatten().map(|l| (l.sql, l.values))
    }

    fn text(s: &str) -> Literal<'_> {
        Literal::Text(Cow::Borrowed(s))
    }

    #[test]
    fn lifts_the_literals_a_where_clause_compares_with() {
        assert_eq!(
            lifted("SELECT * FROM t WHERE id=5000"),
            Some(("SELECT * FROM t WHERE id=?".into(), vec![Literal::Integer(5000)]))
        );
        assert_eq!(
            lifted("select a, b from t where a = 'x''y' and (b >= 7 or b <> 'z') order by 1 limit 5;"),
            Some((
                "select a, b from t where a = ? and (b >= ? or b <> ?) order by 1 limit 5;".into(),
                vec![Literal::Text(Cow::Owned("x'y".into())), Literal::Integer(7), text("z")]
            ))
        );
        assert_eq!(
            lifted("SELECT count(*) FROM t JOIN u ON u.id = 3 WHERE t.v != 4 GROUP BY v HAVING v = 9"),
            Some((
                "SELECT count(*) FROM t JOIN u ON u.id = 3 WHERE t.v != ? GROUP BY v HAVING v = 9".into(),
                vec![Literal::Integer(4)]
            ))
        );
    }

    #[test]
    fn leaves_everything_else_as_written() {
        for sql in [
            // Not a plain SELECT, or nothing to lift.
            "INSERT INTO t VALUES(1)",
            "UPDATE t SET a = 1 WHERE id = 2",
            "EXPLAIN SELECT * FROM t WHERE id = 1",
            "WITH c AS (SELECT 1) SELECT * FROM c WHERE x = 1",
            "/* note */ SELECT * FROM t WHERE id = 1",
            "SELECT 1 = 1",
            "SELECT * FROM t WHERE id",
            // Subqueries, compounds, several statements, parameters.
            "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE v = 1)",
            "SELECT * FROM t WHERE a = 1 UNION SELECT * FROM t WHERE a = 2",
            "SELECT * FROM t WHERE a = 1 UNION VALUES(1)",
            "SELECT * FROM t WHERE a = 1; SELECT 2",
            "SELECT * FROM t WHERE a = ? AND b = 1",
            "SELECT * FROM t WHERE a = :a AND b = 1",
            // Literals that are not a whole comparison's operand, or not a plain value.
            "SELECT * FROM t WHERE a = 1 + b",
            "SELECT * FROM t WHERE a = -1",
            "SELECT * FROM t WHERE a = 1.5",
            "SELECT * FROM t WHERE a = 1e3",
            "SELECT * FROM t WHERE a = 0x10",
            "SELECT * FROM t WHERE a = 1_000",
            "SELECT * FROM t WHERE a = 99999999999999999999",
            "SELECT * FROM t WHERE a = x'00'",
            "SELECT * FROM t WHERE a = 'x' COLLATE nocase",
            "SELECT * FROM t WHERE a IN (1, 2)",
            "SELECT * FROM t WHERE a BETWEEN 1 AND 2",
            "SELECT * FROM t WHERE a LIKE 'x%'",
            "SELECT * FROM t WHERE a = 1AND b",
            // Unterminated literals stay errors.
            "SELECT * FROM t WHERE a = 'x''",
            "SELECT * FROM t WHERE a = 'x",
            "SELECT * FROM t WHERE a = 'x\0'",
        ] {
            assert!(lifted(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn lifts_at_most_a_bounded_number() {
        let sql = format!(
            "SELECT * FROM t WHERE {}",
            (0..20).map(|i| format!("a = {i}")).collect::<Vec<_>>().join(" OR ")
        );
        let l = lift(&sql).unwrap();
        assert_eq!(l.values.len(), MAX_LIFTED);
        assert_eq!(l.sql.matches('?').count(), MAX_LIFTED);
        assert!(l.sql.ends_with("a = 16 OR a = 17 OR a = 18 OR a = 19"));
    }
}
