//! Gathers lines of input into whole statements.
//!
//! SQL runs once it ends with a `;` that SQLite's own `sqlite3_complete` accepts, so a statement
//! may span several lines and a `;` inside a string, a comment or a trigger body does not end it.
//! Dot-commands (and `exit`/`quit`) are a line each and are only recognised at the start of a
//! statement. Text left over when the input ends, or when a dot-command follows it, runs as it
//! is, as rqlite's shell runs every line. Gathered text of several lines that SQLite cannot read
//! as one statement but can read one line at a time (a script written for rqlite's shell, with
//! no `;`) runs a line at a time, as rqlite's shell runs it.

use std::ffi::CString;

/// One thing to run.
#[derive(Debug, PartialEq, Eq)]
pub enum Unit {
    /// A dot-command line (or `exit`/`quit`).
    Command(String),
    /// One or more SQL statements, sent in one request.
    Sql(String),
}

/// Lines in, units out.
#[derive(Default)]
pub struct Gather {
    buf: String,
}

impl Gather {
    /// Whether a statement has been started and not yet ended.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Drops the statement gathered so far.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Takes one line; returns what is now ready to run, in order.
    pub fn push(&mut self, line: &str) -> Vec<Unit> {
        let trimmed = line.trim();
        let mut out = Vec::new();
        if is_command(trimmed) {
            if self.buf.is_empty() {
                out.push(Unit::Command(trimmed.to_string()));
                return out;
            }
            // A line that cannot continue the statement (it is not inside a string, a comment
            // or a trigger body) runs what came before it as it is, then itself.
            if complete(&format!("{};", self.buf)) {
                out.extend(self.finish());
                out.push(Unit::Command(trimmed.to_string()));
                return out;
            }
        }
        if self.buf.is_empty() && (trimmed.is_empty() || trimmed.starts_with("--")) {
            return out;
        }
        if !self.buf.is_empty() {
            self.buf.push('\n');
        }
        self.buf.push_str(line.trim_end());
        if complete(&self.buf) {
            out.extend(self.finish());
        }
        out
    }

    /// What is left unfinished, to run now: as one statement, or a line at a time where only
    /// that reads (see the module's comment).
    pub fn finish(&mut self) -> Vec<Unit> {
        let buf = std::mem::take(&mut self.buf);
        let sql = buf.trim();
        if sql.is_empty() {
            return Vec::new();
        }
        match statements_by_line(sql) {
            Some(lines) => lines.into_iter().map(|l| Unit::Sql(l.to_string())).collect(),
            None => vec![Unit::Sql(sql.to_string())],
        }
    }
}

/// How SQLite's parser reads a text.
#[derive(Debug, PartialEq, Eq)]
enum Reading {
    /// One whole statement (whether its tables exist or not).
    Whole,
    /// The start of a statement that goes on.
    Unfinished,
    /// Not SQL that parses.
    Wrong,
}

/// Reads `sql` with SQLite's parser, on `conn`, an empty in-memory database: an error that is
/// not about the syntax (a table that does not exist there, say) means the text parsed.
fn reading(conn: &rusqlite::Connection, sql: &str) -> Reading {
    match conn.prepare(sql) {
        Ok(_) => Reading::Whole,
        Err(rusqlite::Error::SqlInputError { msg, .. } | rusqlite::Error::SqliteFailure(_, Some(msg))) => {
            if msg == "incomplete input" {
                Reading::Unfinished
            } else if msg.contains("syntax error") || msg.starts_with("unrecognized token") {
                Reading::Wrong
            } else {
                Reading::Whole
            }
        }
        Err(_) => Reading::Wrong,
    }
}

/// The lines of `sql`, without blank and comment lines, when `sql` is several lines that do not
/// read as one statement and each of which reads as one.
fn statements_by_line(sql: &str) -> Option<Vec<&str>> {
    let lines: Vec<&str> = sql
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .collect();
    if lines.len() < 2 {
        return None;
    }
    let conn = rusqlite::Connection::open_in_memory().ok()?;
    if reading(&conn, sql) != Reading::Wrong {
        return None;
    }
    lines
        .iter()
        .all(|l| reading(&conn, l) == Reading::Whole)
        .then_some(lines)
}

fn is_command(line: &str) -> bool {
    line.starts_with('.') || line.eq_ignore_ascii_case("exit") || line.eq_ignore_ascii_case("quit")
}

/// SQLite's verdict on whether `sql` ends a statement. Text with a NUL byte cannot reach SQLite
/// as one string; it counts as ended so that the server gives its error for it.
fn complete(sql: &str) -> bool {
    let Ok(c) = CString::new(sql) else {
        return true;
    };
    // SAFETY: `sqlite3_complete` only reads the NUL-terminated string it is given, which `c`
    // owns for the length of the call.
    #[allow(unsafe_code)]
    let r = unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) };
    r != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str]) -> Vec<Unit> {
        let mut g = Gather::default();
        let mut out: Vec<Unit> = lines.iter().flat_map(|l| g.push(l)).collect();
        out.extend(g.finish());
        out
    }

    fn sql(s: &str) -> Unit {
        Unit::Sql(s.into())
    }

    fn cmd(s: &str) -> Unit {
        Unit::Command(s.into())
    }

    #[test]
    fn a_statement_runs_at_its_semicolon() {
        let mut g = Gather::default();
        assert!(g.push("CREATE TABLE foo (").is_empty());
        assert!(g.push("  id INTEGER PRIMARY KEY,").is_empty());
        assert!(g.pending());
        assert_eq!(
            g.push("  name TEXT);"),
            vec![sql("CREATE TABLE foo (\n  id INTEGER PRIMARY KEY,\n  name TEXT);")]
        );
        assert!(!g.pending());
        assert_eq!(g.push("SELECT 1; SELECT 2;"), vec![sql("SELECT 1; SELECT 2;")]);
    }

    #[test]
    fn semicolons_in_strings_comments_and_trigger_bodies_do_not_end_it() {
        assert_eq!(
            run(&["INSERT INTO t VALUES ('a;", "b');"]),
            vec![sql("INSERT INTO t VALUES ('a;\nb');")]
        );
        assert_eq!(run(&["SELECT 1 /* ;", "*/;"]), vec![sql("SELECT 1 /* ;\n*/;")]);
        let trigger = [
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN",
            "  UPDATE t SET n = n + 1;",
            "END;",
        ];
        assert_eq!(run(&trigger), vec![sql(&trigger.join("\n"))]);
    }

    #[test]
    fn commands_run_at_the_start_of_a_statement_only() {
        assert_eq!(
            run(&[".tables", "  .mode csv  "]),
            vec![cmd(".tables"), cmd(".mode csv")]
        );
        assert_eq!(run(&["exit"]), vec![cmd("exit")]);
        // A dot line cannot continue an unfinished statement: that runs as it is first.
        assert_eq!(run(&["SELECT 1", ".tables"]), vec![sql("SELECT 1"), cmd(".tables")]);
        // Inside a string it is text.
        assert_eq!(
            run(&["INSERT INTO t VALUES ('", ".tables');"]),
            vec![sql("INSERT INTO t VALUES ('\n.tables');")]
        );
    }

    #[test]
    fn leftovers_run_at_the_end_and_blank_or_comment_lines_alone_are_skipped() {
        assert_eq!(
            run(&["", "-- note", "SELECT COUNT(*) FROM foo"]),
            vec![sql("SELECT COUNT(*) FROM foo")]
        );
        assert_eq!(run(&["SELECT", "-- why", "", "1;"]), vec![sql("SELECT\n-- why\n\n1;")]);
        assert!(run(&["   "]).is_empty());
        assert_eq!(run(&["SELECT '\0';"]), vec![sql("SELECT '\0';")]);
    }

    #[test]
    fn a_script_without_semicolons_runs_a_line_at_a_time_where_only_that_reads() {
        // Written for rqlite's shell, which runs every line.
        assert_eq!(
            run(&[
                "CREATE TABLE a (x)",
                "-- a note",
                "INSERT INTO a VALUES (1)",
                "SELECT * FROM a"
            ]),
            vec![
                sql("CREATE TABLE a (x)"),
                sql("INSERT INTO a VALUES (1)"),
                sql("SELECT * FROM a")
            ]
        );
        assert_eq!(
            run(&["SELECT 1", "SELECT 2", ".tables"]),
            vec![sql("SELECT 1"), sql("SELECT 2"), cmd(".tables")]
        );
        // Also where the last line brings the `;` that ends the gathered text.
        assert_eq!(run(&["SELECT 1", "SELECT 2;"]), vec![sql("SELECT 1"), sql("SELECT 2;")]);
        // Lines that read as one statement together run as one, even where the first reads
        // as a statement of its own.
        assert_eq!(
            run(&["UPDATE t SET a = 1", "WHERE id = 2"]),
            vec![sql("UPDATE t SET a = 1\nWHERE id = 2")]
        );
        assert_eq!(
            run(&["SELECT *", "FROM t", "WHERE id = 2"]),
            vec![sql("SELECT *\nFROM t\nWHERE id = 2")]
        );
        // A line that does not read on its own: the text runs as it is, for the server's error.
        assert_eq!(run(&["SELECT 1", "SELEKT 2"]), vec![sql("SELECT 1\nSELEKT 2")]);
        assert_eq!(run(&["SELECT 1", "FROM"]), vec![sql("SELECT 1\nFROM")]);
    }

    #[test]
    fn clearing_drops_the_unfinished_statement() {
        let mut g = Gather::default();
        g.push("SELECT");
        g.clear();
        assert!(!g.pending());
        assert!(g.finish().is_empty());
    }
}
