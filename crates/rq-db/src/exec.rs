//! Running a request's statements and shaping their results exactly as rqlite does.
//!
//! The rules come from rqlite's Go driver stack and are kept on purpose, quirks included:
//! a write is stepped once and reports the connection's `last_insert_rowid()` and `changes()`
//! (which carry over from earlier statements); a query's `types` are the lower-cased declared
//! types, filled from the first row where undeclared; `boolean`, `date`, `datetime` and
//! `timestamp` columns convert their values; BLOBs in text-like columns come back as text.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use rq_proto::{ExecuteResult, Param, QueryRows, Request, StmtResult, Value};
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Statement, ToSql};

use crate::conn::{Conn, Prepared};
use crate::{Error, gotime, lex, literals};

/// How a request's statements run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every statement is a write (RETURNING ones return rows).
    Execute,
    /// Every statement is a read; writes are refused.
    Query,
    /// Each statement runs as a read or a write, by what it does.
    Request,
}

/// How a request run inside the state machine's batch transaction ended.
#[derive(Debug)]
pub enum Outcome {
    Done(Vec<StmtResult>),
    /// Statement `statement` ended the enclosing transaction (SQLite rolled it back). Its error
    /// is `error`; everything since the transaction began is gone.
    Aborted {
        statement: usize,
        error: String,
    },
}

const READ_ONLY_ERROR: &str = "attempt to change database via query operation";
/// A node serves one database file; attaching others is refused.
const ATTACH_ERROR: &str = "ATTACH and DETACH are not allowed";
/// Name of the savepoint standing in for a request's transaction inside the batch.
const REQUEST_TX: &str = "rqlite_request_tx";
/// Name of the savepoint standing in for a user's own BEGIN inside the batch.
const USER_TX: &str = "rqlite_user_tx";

/// What a failed step means for the caller.
enum Failure {
    /// A SQL error: report it for this statement.
    Sql(String),
    /// The database cannot be written; stop.
    Storage(String),
}

fn classify(e: &rusqlite::Error, timeout_msg: &str) -> Failure {
    use rusqlite::ErrorCode::*;
    if let rusqlite::Error::SqliteFailure(f, _) = e {
        match f.code {
            OperationInterrupted => return Failure::Sql(timeout_msg.into()),
            DiskFull | SystemIoFailure | DatabaseCorrupt | NotADatabase | CannotOpen | OutOfMemory => {
                return Failure::Storage(message(e));
            }
            _ => {}
        }
    }
    Failure::Sql(message(e))
}

/// SQLite's own message for an error, as rqlite reports it.
pub fn message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(m)) => m.clone(),
        rusqlite::Error::SqliteFailure(f, None) => f.to_string(),
        // Only SQLite's message, not the statement text rusqlite adds to it.
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

/// The lower-cased declared types that rqlite's driver treats as text when they hold a BLOB.
fn is_text_type(t: &str) -> bool {
    matches!(t, "text" | "json" | "")
        || [
            "varchar",
            "varying character",
            "nchar",
            "native character",
            "nvarchar",
            "clob",
        ]
        .iter()
        .any(|p| t.starts_with(p))
}

/// What a column's declared type (lowercased) means for its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decl {
    /// `date`, `datetime` or `timestamp`: values are shown as Go's time format.
    Time,
    /// `boolean`: integers are shown as `true` or `false`.
    Boolean,
    Other,
}

impl Decl {
    fn of(lowercase: &str) -> Decl {
        match lowercase {
            "date" | "datetime" | "timestamp" => Decl::Time,
            "boolean" => Decl::Boolean,
            _ => Decl::Other,
        }
    }
}

/// Converts one column value of a row by its declared type, as the driver and rqlite do.
fn convert(v: ValueRef<'_>, decl: Decl, shown_type: &str) -> Result<Value, String> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => match decl {
            Decl::Time => Value::Text(gotime::from_integer(i)?),
            Decl::Boolean => Value::Bool(i > 0),
            Decl::Other => Value::Integer(i),
        },
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            match decl {
                Decl::Time => Value::Text(gotime::from_text(&s)?),
                _ => Value::Text(s.into_owned()),
            }
        }
        ValueRef::Blob(b) => {
            if is_text_type(shown_type) {
                Value::Text(String::from_utf8_lossy(b).into_owned())
            } else {
                Value::Blob(b.to_vec())
            }
        }
    })
}

/// Declared types common enough to be shown without a copy.
const COMMON_TYPES: [&str; 16] = [
    "",
    "integer",
    "int",
    "text",
    "real",
    "blob",
    "numeric",
    "boolean",
    "date",
    "datetime",
    "timestamp",
    "bigint",
    "float",
    "double",
    "varchar",
    "varchar(255)",
];

/// A result's columns: their names, their declared types as shown, and how their values are
/// shown.
struct Shape {
    columns: Vec<String>,
    types: Vec<Cow<'static, str>>,
    decls: Vec<Decl>,
}

impl Shape {
    /// The columns `stmt` answers with now; with `qualify`, each name is prefixed with its
    /// table's.
    fn of(stmt: &Statement<'_>, qualify: bool) -> Shape {
        let ncol = stmt.column_count();
        let mut columns: Vec<String> = Vec::with_capacity(ncol);
        // The declared types, as shown: a column declared with none takes its first value's.
        let mut types: Vec<Cow<'static, str>> = Vec::with_capacity(ncol);
        let mut decls: Vec<Decl> = Vec::with_capacity(ncol);
        for c in stmt.columns() {
            let t = shown_type(c.decl_type().unwrap_or(""));
            columns.push(c.name().to_string());
            decls.push(Decl::of(&t));
            types.push(t);
        }
        if qualify {
            for (i, c) in stmt.columns_with_metadata().enumerate() {
                if let Some(t) = c.table_name()
                    && !t.is_empty()
                {
                    columns[i] = format!("{t}.{}", columns[i]);
                }
            }
        }
        Shape { columns, types, decls }
    }
}

/// A declared type as rqlite shows it: lowercased.
fn shown_type(decl: &str) -> Cow<'static, str> {
    match COMMON_TYPES.iter().find(|t| t.eq_ignore_ascii_case(decl)) {
        Some(t) => Cow::Borrowed(t),
        None if decl.is_ascii() => Cow::Owned(decl.to_ascii_lowercase()),
        None => Cow::Owned(decl.to_lowercase()),
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "integer",
        Value::Float(_) => "real",
        Value::Bool(_) => "boolean",
        Value::Blob(_) => "blob",
        Value::Text(_) => "text",
        Value::Null => "",
    }
}

struct Bind<'a>(&'a Value);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as V};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => V::Null,
            Value::Integer(i) => V::Integer(*i),
            Value::Float(f) => V::Real(*f),
            Value::Bool(b) => V::Integer(*b as i64),
            Value::Text(s) => V::Text(s.as_bytes()),
            Value::Blob(b) => V::Blob(b),
        }))
    }
}

/// Go's `%q` of a string, for the driver's named-parameter message.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks named parameters as Go's database/sql does: a name must start with a letter.
fn check_names(params: &[Param]) -> Result<(), String> {
    for p in params {
        if let Some(n) = &p.name
            && !n.chars().next().is_some_and(char::is_alphabetic)
        {
            return Err(format!("name {} does not begin with a letter", go_quote(n)));
        }
    }
    Ok(())
}

/// Binds the parameters of one prepared statement the way the Go driver does: the statement
/// takes the next `parameter_count()` arguments, plus every named argument outside them;
/// unnamed ones bind by their position in that list, named ones to `:n`, `@n` and `$n`.
fn bind(stmt: &mut Statement<'_>, params: &[Param], start: usize, got_for_error: usize) -> Result<usize, String> {
    let na = stmt.parameter_count();
    if params.len().saturating_sub(start) < na {
        return Err(format!(
            "not enough args to execute query: want {na} got {got_for_error}"
        ));
    }
    let own = &params[start..start + na];
    let others = params
        .iter()
        .enumerate()
        .filter(|(i, p)| (*i < start || *i >= start + na) && p.name.is_some())
        .map(|(_, p)| p);
    for (i, p) in own.iter().chain(others).enumerate() {
        match &p.name {
            None => {
                if i < na {
                    stmt.raw_bind_parameter(i + 1, Bind(&p.value))
                        .map_err(|e| message(&e))?;
                }
            }
            Some(name) => {
                for prefix in [":", "@", "$"] {
                    let key = format!("{prefix}{name}");
                    if let Some(idx) = stmt.parameter_index(&key).map_err(|e| message(&e))? {
                        stmt.raw_bind_parameter(idx, Bind(&p.value)).map_err(|e| message(&e))?;
                    }
                }
            }
        }
    }
    Ok(na)
}

/// Per-run settings.
#[derive(Clone, Copy)]
struct Run<'a> {
    conn: &'a Conn,
    timings: bool,
    qualify: bool,
    /// Inside the state machine's batch transaction (emulate user BEGIN/COMMIT).
    in_batch: bool,
}

/// Steps a write once and reports the connection's insert id and change count, for every
/// statement in `sql`; the last statement's figures are the result.
fn exec_write(run: Run<'_>, sql: &str, params: &[Param], user_tx: &mut UserTx) -> Result<StmtResult, Failure> {
    let conn = &run.conn.conn;
    let started = Instant::now();
    if let Err(e) = check_names(params) {
        return Ok(StmtResult::Error(e));
    }
    let finish = |started: Instant| ExecuteResult {
        last_insert_id: conn.last_insert_rowid(),
        rows_affected: conn.changes() as i64,
        time: if run.timings {
            started.elapsed().as_secs_f64()
        } else {
            0.0
        },
    };
    match prepare_one(run.conn, sql, false) {
        Ok(mut stmt) => {
            if let Some(r) = user_tx.intercept(run, sql)? {
                return Ok(r);
            }
            if let Err(e) = bind(&mut stmt, params, 0, params.len()) {
                return Ok(StmtResult::Error(e));
            }
            let mut rows = stmt.raw_query();
            if let Err(e) = rows.next() {
                return Err(classify(&e, "execute timeout"));
            }
            drop(rows);
            Ok(StmtResult::Execute(finish(started)))
        }
        Err(rusqlite::Error::MultipleStatement) => {
            let mut batch = Batch::new(conn, sql);
            let mut start = 0;
            loop {
                let mut stmt = match fallible_next(&mut batch) {
                    Ok(Some(s)) => s,
                    Ok(None) => break,
                    Err(e) => return Err(classify(&e, "execute timeout")),
                };
                let text = stmt.expanded_sql().unwrap_or_default();
                if let Some(r) = user_tx.intercept(run, &text)? {
                    if let StmtResult::Error(_) = r {
                        return Ok(r);
                    }
                    continue;
                }
                match bind(&mut stmt, params, start, params.len()) {
                    Ok(n) => start += n,
                    Err(e) => return Ok(StmtResult::Error(e)),
                }
                let mut rows = stmt.raw_query();
                if let Err(e) = rows.next() {
                    return Err(classify(&e, "execute timeout"));
                }
            }
            Ok(StmtResult::Execute(finish(started)))
        }
        // Only whitespace or comments: nothing runs, and the result is empty.
        Err(rusqlite::Error::Empty) => Ok(StmtResult::Execute(ExecuteResult::default())),
        Err(rusqlite::Error::SqlInputError { msg, .. }) => Ok(StmtResult::Error(msg)),
        Err(e) => match classify(&e, "execute timeout") {
            Failure::Sql(m) => Ok(StmtResult::Error(m)),
            f => Err(f),
        },
    }
}

/// Prepares `sql` with `Conn::prepare` when it holds one statement; text that may hold several
/// is reported as `MultipleStatement` without preparing past the first, because a later
/// statement can depend on an earlier one having run (`CREATE TABLE t ...; INSERT INTO t ...`).
fn prepare_one<'c>(conn: &'c Conn, sql: &str, inspect: bool) -> rusqlite::Result<Prepared<'c>> {
    let body = sql.trim_end_matches(|c: char| c.is_whitespace() || c == ';');
    if body.contains(';') {
        return Err(rusqlite::Error::MultipleStatement);
    }
    conn.prepare(sql, inspect)
}

/// `sql` prepared in its lifted form (`literals`), with the lifted literals bound, when it has
/// one (it takes no parameters of its own) and that form prepares and binds. `None` sends the
/// caller to the text as written, which also reports any error in SQLite's own words. A text
/// that comes again and again as it is, such as a client's one fixed query, is run as written,
/// and kept, from its third use (`Conn::runs_as_written`): its statement then needs neither
/// lifting nor binding.
fn prepare_lifted<'c>(conn: &'c Conn, sql: &str, params: &[Param], inspect: bool) -> Option<Prepared<'c>> {
    if !params.is_empty() || !literals::may_lift(sql) || conn.runs_as_written(sql, inspect) {
        return None;
    }
    let lifted = literals::lift(sql)?;
    let mut stmt = prepare_one(conn, &lifted.sql, inspect).ok()?;
    lifted.bind(&mut stmt).ok()?;
    Some(stmt)
}

fn fallible_next<'c>(b: &mut Batch<'c, '_>) -> rusqlite::Result<Option<Statement<'c>>> {
    use fallible_iterator::FallibleIterator;
    b.next()
}

/// Runs a statement that returns rows. `sql` may hold several statements; as with the Go
/// driver, only the last one is stepped and answers.
fn exec_query(
    run: Run<'_>,
    sql: &str,
    params: &[Param],
    readonly_check: bool,
    timeout_msg: &str,
) -> Result<StmtResult, Failure> {
    let conn = &run.conn.conn;
    let started = Instant::now();
    if let Err(e) = check_names(params) {
        return Ok(StmtResult::Error(e));
    }
    let mut cached;
    let mut owned;
    let lifted = prepare_lifted(run.conn, sql, params, false);
    let is_lifted = lifted.is_some();
    let stmt: &mut Statement<'_> = match lifted.map_or_else(|| prepare_one(run.conn, sql, false), Ok) {
        Ok(s) => {
            cached = s;
            if !is_lifted && let Err(e) = bind(&mut cached, params, 0, params.len()) {
                return Ok(StmtResult::Error(e));
            }
            &mut cached
        }
        Err(rusqlite::Error::MultipleStatement) => {
            let mut batch = Batch::new(conn, sql);
            let mut start = 0;
            let mut last = None;
            loop {
                match fallible_next(&mut batch) {
                    Ok(Some(mut s)) => match bind(&mut s, params, start, params.len() - start) {
                        Ok(n) => {
                            start += n;
                            last = Some(s);
                        }
                        Err(e) => return Ok(StmtResult::Error(e)),
                    },
                    Ok(None) => break,
                    Err(e) => return Err(classify(&e, timeout_msg)),
                }
            }
            match last {
                Some(s) => {
                    owned = s;
                    &mut owned
                }
                None => return Ok(StmtResult::Query(QueryRows::default())),
            }
        }
        Err(rusqlite::Error::Empty) => return Ok(StmtResult::Query(QueryRows::default())),
        Err(rusqlite::Error::SqlInputError { msg, .. }) => return Ok(StmtResult::Error(msg)),
        Err(e) => {
            return match classify(&e, timeout_msg) {
                Failure::Sql(m) => Ok(StmtResult::Error(m)),
                f => Err(f),
            };
        }
    };
    if readonly_check && !stmt.readonly() {
        return Ok(StmtResult::Error(READ_ONLY_ERROR.into()));
    }
    // The columns are read once the statement has stepped: a cached statement whose tables
    // changed since it was prepared is prepared again by its first step, and `SELECT *` may
    // then have other columns than before it.
    let mut shape: Option<Shape> = None;
    let mut values: Vec<Vec<Value>> = Vec::new();
    let mut rows = stmt.raw_query();
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                return match classify(&e, timeout_msg) {
                    Failure::Sql(m) => Ok(StmtResult::Error(readonly_message(&e, m))),
                    f => Err(f),
                };
            }
        };
        let first = shape.is_none();
        let shape = shape.get_or_insert_with(|| Shape::of(row.as_ref(), run.qualify));
        let ncol = shape.columns.len();
        if ncol == 0 {
            break;
        }
        let mut vals = Vec::with_capacity(ncol);
        for i in 0..ncol {
            let v = row.get_ref(i).map_err(|e| Failure::Sql(message(&e)))?;
            match convert(v, shape.decls[i], &shape.types[i]) {
                Ok(v) => vals.push(v),
                Err(m) => return Ok(StmtResult::Error(m)),
            }
        }
        if first {
            for (t, v) in shape.types.iter_mut().zip(&vals) {
                if t.is_empty() {
                    *t = Cow::Borrowed(type_of(v));
                }
            }
        }
        values.push(vals);
    }
    drop(rows);
    let Shape { columns, types, .. } = shape.unwrap_or_else(|| Shape::of(stmt, run.qualify));
    Ok(StmtResult::Query(QueryRows {
        columns,
        types,
        values,
        error: None,
        time: if run.timings {
            started.elapsed().as_secs_f64()
        } else {
            0.0
        },
    }))
}

/// Writes refused by a read-only connection get rqlite's message.
fn readonly_message(e: &rusqlite::Error, m: String) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ReadOnly => READ_ONLY_ERROR.into(),
        _ => m,
    }
}

/// A user's BEGIN/COMMIT/ROLLBACK inside the batch transaction, played with a savepoint.
#[derive(Default)]
struct UserTx {
    open: bool,
    /// Where the captured changes stood when the user's transaction began.
    mark: Option<crate::capture::Mark>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxControl {
    Begin,
    Commit,
    Rollback,
}

fn tx_control(sql: &str) -> Option<TxControl> {
    // Cheap test first: this runs for every write.
    let head = sql.trim_start();
    let maybe = head.starts_with(['-', '/'])
        || ["begin", "commit", "end", "rollback"]
            .iter()
            .any(|w| head.len() >= w.len() && head.as_bytes()[..w.len()].eq_ignore_ascii_case(w.as_bytes()));
    if !maybe {
        return None;
    }
    let toks = lex::tokenize(sql);
    let first = toks.first()?;
    if first.is_word(sql, "begin") {
        Some(TxControl::Begin)
    } else if first.is_word(sql, "commit") || first.is_word(sql, "end") {
        Some(TxControl::Commit)
    } else if first.is_word(sql, "rollback") && !toks.iter().any(|t| t.is_word(sql, "to")) {
        Some(TxControl::Rollback)
    } else {
        None
    }
}

impl UserTx {
    /// Plays `sql` if it is transaction control inside the batch; `None` when it is not.
    fn intercept(&mut self, run: Run<'_>, sql: &str) -> Result<Option<StmtResult>, Failure> {
        if !run.in_batch {
            return Ok(None);
        }
        let Some(ctl) = tx_control(sql) else { return Ok(None) };
        let conn = &run.conn.conn;
        let (script, next, err) = match (ctl, self.open) {
            (TxControl::Begin, false) => (format!("SAVEPOINT {USER_TX}"), true, None),
            (TxControl::Begin, true) => (
                String::new(),
                true,
                Some("cannot start a transaction within a transaction"),
            ),
            (TxControl::Commit, true) => (format!("RELEASE {USER_TX}"), false, None),
            (TxControl::Commit, false) => (String::new(), false, Some("cannot commit - no transaction is active")),
            (TxControl::Rollback, true) => (format!("ROLLBACK TO {USER_TX}; RELEASE {USER_TX}"), false, None),
            (TxControl::Rollback, false) => (String::new(), false, Some("cannot rollback - no transaction is active")),
        };
        if let Some(e) = err {
            return Ok(Some(StmtResult::Error(e.into())));
        }
        run.conn
            .trusted(|c| c.execute_batch(&script))
            .map_err(|e| classify(&e, "execute timeout"))?;
        if let Some(cap) = &run.conn.capture {
            match ctl {
                TxControl::Begin => self.mark = Some(cap.mark()),
                TxControl::Rollback => {
                    if let Some(m) = self.mark.take() {
                        cap.undo(m);
                    }
                }
                TxControl::Commit => self.mark = None,
            }
        }
        self.open = next;
        Ok(Some(StmtResult::Execute(ExecuteResult {
            last_insert_id: conn.last_insert_rowid(),
            rows_affected: conn.changes() as i64,
            time: 0.0,
        })))
    }

    /// A user transaction left open at the end of a request is committed.
    fn close(&mut self, run: Run<'_>) -> Result<(), Failure> {
        if self.open {
            run.conn
                .trusted(|c| c.execute_batch(&format!("RELEASE {USER_TX}")))
                .map_err(|e| classify(&e, "execute timeout"))?;
            self.open = false;
        }
        Ok(())
    }
}

/// Whether a statement must run outside any transaction: VACUUM (but not VACUUM INTO, which
/// the authorizer refuses anyway) and setting `foreign_keys`, which SQLite ignores inside one.
fn needs_autocommit(sql: &str) -> bool {
    // Cheap test first: this runs for every write.
    if !(crate::sql::contains_ignore_case(sql, "vacuum") || crate::sql::contains_ignore_case(sql, "foreign_keys")) {
        return false;
    }
    let toks = lex::tokenize(sql);
    lex::statements(&toks).into_iter().any(|st| {
        if st[0].is_word(sql, "vacuum") {
            return true;
        }
        if st[0].is_word(sql, "pragma") {
            let name = match st.get(2).map(|t| t.kind) {
                Some(lex::Kind::Dot) => st.get(3),
                _ => st.get(1),
            };
            let has_value = st.iter().any(|t| matches!(t.kind, lex::Kind::Eq | lex::Kind::LParen));
            return name.is_some_and(|n| n.unquoted(sql).eq_ignore_ascii_case("foreign_keys")) && has_value;
        }
        false
    })
}

/// Whether the statement only reads, by SQLite's verdict; statements that fail to prepare
/// count as writes (they then report their error through the log, as rqlite does).
fn statement_is_read(conn: &Conn, sql: &str, params: &[Param]) -> bool {
    if let Some(s) = prepare_lifted(conn, sql, params, true) {
        return s.readonly() || s.is_explain() > 0;
    }
    match prepare_one(conn, sql, true) {
        Ok(s) => s.readonly() || s.is_explain() > 0,
        Err(rusqlite::Error::MultipleStatement) => {
            let mut batch = Batch::new(&conn.conn, sql);
            loop {
                match fallible_next(&mut batch) {
                    Ok(Some(s)) if s.readonly() || s.is_explain() > 0 => {}
                    Ok(None) => return true,
                    _ => return false,
                }
            }
        }
        Err(_) => false,
    }
}

/// Whether every statement of a request only reads.
pub fn is_read_only(conn: &Conn, req: &Request) -> bool {
    req.statements
        .iter()
        .filter(|s| !s.sql.is_empty())
        .all(|s| statement_is_read(conn, &s.sql, &s.params))
}

/// The core loop shared by every way of running a request.
fn run_statements(
    run: Run<'_>,
    req: &Request,
    mode: Mode,
    skip: &dyn Fn(usize) -> Option<String>,
) -> Result<Outcome, Error> {
    let timeout = Duration::from_nanos(req.db_timeout_ns);
    let stop_on_error = req.transaction || req.rollback_on_error;
    // Inside the batch transaction a request that rolls back on error gets a savepoint of its
    // own. Outside it (a request that must run in autocommit mode, such as a SQL dump, which
    // sets `foreign_keys`), rollback-on-error is rqlite's: the statements run as they are,
    // their own BEGIN and COMMIT included, and an error rolls back whatever transaction they
    // left open.
    let savepoint = req.transaction || (req.rollback_on_error && run.in_batch);
    let rollback_open_tx = req.rollback_on_error && !req.transaction && !run.in_batch;
    let conn = run.conn;
    if savepoint {
        if run.in_batch {
            conn.trusted(|c| c.execute_batch(&format!("SAVEPOINT {REQUEST_TX}")))?;
        } else {
            conn.trusted(|c| c.execute_batch("BEGIN"))?;
        }
    }
    let mut user_tx = UserTx::default();
    let capture = conn.capture.as_deref();
    let request_mark = capture.map(|c| c.mark());
    let mut marks = CaptureMarks::default();
    let mut results = Vec::with_capacity(req.statements.len());
    if mode == Mode::Query {
        conn.deadline.arm(timeout);
    }
    let mut failed = false;
    for (i, st) in req.statements.iter().enumerate() {
        if st.sql.is_empty() {
            continue;
        }
        if let Some(e) = skip(i) {
            results.push(StmtResult::Error(e));
            if stop_on_error {
                failed = true;
                break;
            }
            continue;
        }
        if mode != Mode::Query {
            conn.deadline.arm(timeout);
        }
        let statement_mark = capture.map(|c| c.mark());
        let outcome = if crate::sql::attaches(&st.sql) {
            Ok(StmtResult::Error(ATTACH_ERROR.into()))
        } else {
            match mode {
                Mode::Execute if st.returning => exec_query(run, &st.sql, &st.params, false, "query timeout"),
                Mode::Execute => exec_write(run, &st.sql, &st.params, &mut user_tx),
                Mode::Query => exec_query(run, &st.sql, &st.params, run.in_batch, "query timeout"),
                Mode::Request => {
                    if st.returning || statement_is_read(conn, &st.sql, &st.params) {
                        exec_query(run, &st.sql, &st.params, false, "query timeout")
                    } else {
                        exec_write(run, &st.sql, &st.params, &mut user_tx)
                    }
                }
            }
        };
        if mode != Mode::Query {
            conn.deadline.disarm();
        }
        let result = match outcome {
            Ok(r) => r,
            Err(Failure::Storage(m)) => {
                conn.deadline.disarm();
                return Err(Error::Storage(m));
            }
            Err(Failure::Sql(m)) => StmtResult::Error(m),
        };
        if run.in_batch && conn.conn.is_autocommit() {
            // The statement ended the batch transaction: SQLite rolled everything back.
            conn.deadline.disarm();
            let error = result.error().unwrap_or("transaction rolled back").to_string();
            return Ok(Outcome::Aborted { statement: i, error });
        }
        let is_error = result.error().is_some();
        if let (Some(c), Some(m)) = (capture, statement_mark) {
            if is_error {
                // SQLite undid the failed statement's changes.
                c.undo(m);
            } else {
                c.name_columns(&conn.conn, m);
                marks.after(c, &st.sql, m, run.in_batch);
            }
        }
        results.push(result);
        if is_error && stop_on_error && mode != Mode::Query {
            failed = true;
            break;
        }
    }
    conn.deadline.disarm();
    if let Err(f) = user_tx.close(run) {
        return match f {
            Failure::Storage(m) => Err(Error::Storage(m)),
            Failure::Sql(m) => Ok(Outcome::Aborted {
                statement: req.statements.len(),
                error: m,
            }),
        };
    }
    if rollback_open_tx && !conn.conn.is_autocommit() {
        let script = if failed { "ROLLBACK" } else { "COMMIT" };
        if let (Some(c), Some(m), true) = (capture, marks.open_tx, failed) {
            c.undo(m);
        }
        if let Err(e) = conn.trusted(|c| c.execute_batch(script)) {
            let _ = conn.trusted(|c| c.execute_batch("ROLLBACK"));
            return Ok(Outcome::Done(vec![StmtResult::Error(message(&e))]));
        }
    }
    if let (true, Some(c), Some(m)) = (savepoint && failed, capture, request_mark) {
        c.undo(m);
    }
    if savepoint {
        let script = match (run.in_batch, failed) {
            (true, true) => format!("ROLLBACK TO {REQUEST_TX}; RELEASE {REQUEST_TX}"),
            (true, false) => format!("RELEASE {REQUEST_TX}"),
            (false, true) => "ROLLBACK".to_string(),
            (false, false) => "COMMIT".to_string(),
        };
        if let Err(e) = conn.trusted(|c| c.execute_batch(&script)) {
            if run.in_batch {
                return Err(e.into());
            }
            let _ = conn.trusted(|c| c.execute_batch("ROLLBACK"));
            return Ok(Outcome::Done(vec![StmtResult::Error(message(&e))]));
        }
    }
    Ok(Outcome::Done(results))
}

/// Marks of the capture buffer at the points a statement can roll back to: the user's own
/// savepoints (`SAVEPOINT name`, undone by `ROLLBACK TO name`) and, outside the batch
/// transaction, the user's `BEGIN`.
#[derive(Default)]
struct CaptureMarks {
    savepoints: Vec<(String, crate::capture::Mark)>,
    open_tx: Option<crate::capture::Mark>,
}

impl CaptureMarks {
    /// Notes what the statement `sql`, which succeeded and began at `mark`, did to them.
    fn after(&mut self, capture: &crate::capture::Capture, sql: &str, mark: crate::capture::Mark, in_batch: bool) {
        let toks = lex::tokenize(sql);
        let Some(first) = toks.first() else { return };
        let word = |t: &lex::Token| t.unquoted(sql).to_ascii_lowercase();
        if first.is_word(sql, "savepoint") {
            if let Some(name) = toks.get(1) {
                self.savepoints.push((word(name), mark));
            }
        } else if first.is_word(sql, "release") {
            let name = toks.iter().skip(1).find(|t| !t.is_word(sql, "savepoint")).map(word);
            if let Some(at) = name.and_then(|n| self.savepoints.iter().rposition(|(s, _)| *s == n)) {
                self.savepoints.truncate(at);
            }
        } else if first.is_word(sql, "rollback") && toks.iter().any(|t| t.is_word(sql, "to")) {
            let name = toks
                .iter()
                .skip_while(|t| !t.is_word(sql, "to"))
                .skip(1)
                .find(|t| !t.is_word(sql, "savepoint"))
                .map(word);
            if let Some(at) = name.and_then(|n| self.savepoints.iter().rposition(|(s, _)| *s == n)) {
                capture.undo(self.savepoints[at].1);
                self.savepoints.truncate(at + 1);
            }
        } else if !in_batch {
            match tx_control(sql) {
                Some(TxControl::Begin) => self.open_tx = Some(mark),
                Some(TxControl::Rollback) => {
                    if let Some(m) = self.open_tx.take() {
                        capture.undo(m);
                    }
                    self.savepoints.clear();
                }
                Some(TxControl::Commit) => {
                    self.open_tx = None;
                    self.savepoints.clear();
                }
                None => {}
            }
        }
    }
}

/// Whether a request holds a statement that cannot run inside a transaction.
pub fn needs_autocommit_request(req: &Request, mode: Mode) -> bool {
    mode != Mode::Query && req.statements.iter().any(|s| needs_autocommit(&s.sql))
}

/// Runs a committed request inside the state machine's open batch transaction. A statement
/// that cannot run inside a transaction gets SQLite's own error here; `Database::apply` runs a
/// request holding one outside the transaction when it is alone in its log entry.
pub fn run_in_batch(
    conn: &Conn,
    req: &Request,
    mode: Mode,
    skip: &dyn Fn(usize) -> Option<String>,
) -> Result<Outcome, Error> {
    let run = Run {
        conn,
        timings: req.timings,
        qualify: req.qualify_columns,
        in_batch: true,
    };
    run_statements(run, req, mode, skip)
}

/// Runs a committed request with no enclosing transaction (see `needs_autocommit_request`).
pub fn run_autocommit(conn: &Conn, req: &Request, mode: Mode) -> Result<Vec<StmtResult>, Error> {
    let run = Run {
        conn,
        timings: req.timings,
        qualify: req.qualify_columns,
        in_batch: false,
    };
    match run_statements(run, req, mode, &|_| None)? {
        Outcome::Done(r) => Ok(r),
        Outcome::Aborted { .. } => Err(Error::Storage("unexpected outcome outside a batch".into())),
    }
}

/// Runs a read-only request on a read connection within `budget`, for a caller on a thread
/// that must not be held for long; `None` if the budget ran out first, the work then undone
/// (it only read) and to be run again with `run_read` where waiting is fine.
pub fn run_read_within(conn: &Conn, req: &Request, mode: Mode, budget: Duration) -> Option<Vec<StmtResult>> {
    conn.deadline.start_budget(budget);
    let results = run_read(conn, req, mode);
    if conn.deadline.end_budget() {
        if !conn.conn.is_autocommit() {
            let _ = conn.trusted(|c| c.execute_batch("ROLLBACK"));
        }
        return None;
    }
    Some(results)
}

/// The readiness probe (rqlite's `SELECT 1` for `/readyz`): the connection answers a query,
/// and the answer is 1. Its statement stays prepared on the connection (`probe.rs`).
pub fn probe(conn: &Conn) -> Result<(), String> {
    let stmt = match conn.probe.get() {
        Some(stmt) => stmt,
        None => {
            let stmt = crate::probe::ProbeStmt::prepare(&conn.conn)?;
            conn.probe.get_or_init(|| stmt)
        }
    };
    stmt.run(&conn.conn)
}

/// Runs a read-only request on a read connection.
pub fn run_read(conn: &Conn, req: &Request, mode: Mode) -> Vec<StmtResult> {
    let run = Run {
        conn,
        timings: req.timings,
        qualify: req.qualify_columns,
        in_batch: false,
    };
    let mode = if mode == Mode::Request { Mode::Query } else { mode };
    match run_statements(run, req, mode, &|_| None) {
        Ok(Outcome::Done(r)) => r,
        Ok(_) => Vec::new(),
        Err(e) => vec![StmtResult::Error(e.to_string())],
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rq_proto::{Request, Statement, StmtResult, Value};

    use super::*;
    use crate::conn::ConnConfig;

    #[test]
    fn declared_types_are_shown_lowercased_and_common_ones_are_not_copied() {
        for (decl, shown, copied) in [
            ("INTEGER", "integer", false),
            ("Text", "text", false),
            ("", "", false),
            ("VARCHAR(255)", "varchar(255)", false),
            ("VARCHAR(64)", "varchar(64)", true),
            ("MyType", "mytype", true),
            ("ÉTAT", "état", true),
        ] {
            let t = shown_type(decl);
            assert_eq!((t.as_ref(), matches!(t, Cow::Owned(_))), (shown, copied), "{decl}");
        }
    }

    fn request(sql: &str) -> Request {
        Request {
            statements: vec![Statement::new(sql)],
            ..Default::default()
        }
    }

    /// The single value of a one-row, one-column result.
    fn value(r: &[StmtResult]) -> Value {
        match r {
            [StmtResult::Query(q)] => q.values[0][0].clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_statement_is_kept_prepared_from_its_second_use() {
        let conn = Conn::open_memory(ConnConfig::default()).unwrap();
        let kept = |sql: &str, inspect: bool| matches!(prepare_one(&conn, sql, inspect).unwrap(), Prepared::Kept(_));
        // Looking at a text before running it, as `/db/request` does, is not a use.
        assert!(!kept("SELECT 1", true));
        assert!(!kept("SELECT 1", false));
        assert!(kept("SELECT 1", true));
        assert!(kept("SELECT 1", false));
        assert!(kept("SELECT 1", false));
        // Text used once is never kept.
        for i in 0..1000 {
            assert!(!kept(&format!("SELECT {i} + 1"), false));
        }
        assert!(!kept("SELECT 2", false));
        assert!(kept("SELECT 2", false));
        // Either way a statement gives the same answer.
        let once = run_read(&conn, &request("SELECT 40 + 2"), Mode::Query);
        let again = run_read(&conn, &request("SELECT 40 + 2"), Mode::Query);
        let kept_too = run_read(&conn, &request("SELECT 40 + 2"), Mode::Query);
        assert_eq!(value(&once), Value::Integer(42));
        assert_eq!(value(&again), Value::Integer(42));
        assert_eq!(value(&kept_too), Value::Integer(42));
    }

    #[test]
    fn reads_that_differ_in_their_literals_share_one_kept_statement() {
        let conn = Conn::open_memory(ConnConfig::default()).unwrap();
        conn.connection()
            .execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES(1, 'a'), (2, 'b')")
            .unwrap();
        let lifted = |sql: &str| prepare_lifted(&conn, sql, &[], false).map(|p| matches!(p, Prepared::Kept(_)));
        // The lifted text, `... WHERE id = ?`, is kept from its second use, whatever the id.
        assert_eq!(lifted("SELECT v FROM t WHERE id = 1"), Some(false));
        assert_eq!(lifted("SELECT v FROM t WHERE id = 2"), Some(true));
        assert_eq!(lifted("SELECT v FROM t WHERE id = 3"), Some(true));
        // A text that comes again and again runs as written, and is kept, from its third use;
        // one with parameters is never lifted.
        assert_eq!(lifted("SELECT v FROM t WHERE id = 1"), Some(true));
        for _ in 0..2 {
            assert_eq!(lifted("SELECT v FROM t WHERE id = 1"), None);
            let p = prepare_one(&conn, "SELECT v FROM t WHERE id = 1", false).unwrap();
            assert!(matches!(p, Prepared::Kept(_)));
        }
        let with_param = [Param {
            name: None,
            value: Value::Integer(1),
        }];
        assert!(prepare_lifted(&conn, "SELECT v FROM t WHERE id = 4", &with_param, false).is_none());
        // Every way gives the row the literal names.
        for (id, v) in [(2, "b"), (1, "a"), (1, "a"), (2, "b"), (5, "")] {
            let r = run_read(
                &conn,
                &request(&format!("SELECT v FROM t WHERE id = {id}")),
                Mode::Query,
            );
            match &r[..] {
                [StmtResult::Query(q)] if v.is_empty() => assert!(q.values.is_empty()),
                _ => assert_eq!(value(&r), Value::Text(v.into())),
            }
        }
    }

    #[test]
    fn a_kept_statement_answers_with_the_columns_its_table_has_now() {
        let conn = Conn::open_memory(ConnConfig::default()).unwrap();
        let db = conn.connection();
        db.execute_batch("CREATE TABLE z(a INTEGER, b TEXT, c REAL); INSERT INTO z VALUES(1, 'x', 2.5)")
            .unwrap();
        let shape = |sql: &str| match &run_read(&conn, &request(sql), Mode::Query)[..] {
            [StmtResult::Query(q)] => (q.columns.clone(), q.types.clone(), q.values.clone()),
            other => panic!("{other:?}"),
        };
        // Used three times, `SELECT * FROM z` is kept prepared with three columns.
        for _ in 0..3 {
            assert_eq!(shape("SELECT * FROM z").0, ["a", "b", "c"]);
        }
        // The table is made again with one column: the kept statement is prepared again
        // when it steps, and answers with that column, with rows and without.
        db.execute_batch("DROP TABLE z; CREATE TABLE z(d BOOLEAN); INSERT INTO z VALUES(1)")
            .unwrap();
        assert_eq!(
            shape("SELECT * FROM z"),
            (
                vec!["d".to_string()],
                vec![Cow::Borrowed("boolean")],
                vec![vec![Value::Bool(true)]]
            )
        );
        db.execute_batch("DROP TABLE z; CREATE TABLE z(e TEXT, f INTEGER)")
            .unwrap();
        assert_eq!(
            shape("SELECT * FROM z"),
            (
                vec!["e".to_string(), "f".to_string()],
                vec![Cow::Borrowed("text"), Cow::Borrowed("integer")],
                vec![]
            )
        );
    }

    #[test]
    fn a_read_past_its_budget_stops_and_leaves_the_connection_clean() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("db.sqlite");
        let (mut db, _) = crate::Database::open(&path, ConnConfig::default()).unwrap();
        db.checkpoint(&[]).unwrap();
        let conn = Conn::open_reader(&path, ConnConfig::default()).unwrap();
        let long = request(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) FROM c",
        );

        // Phase 1: the long read does not fit a tight budget; it is stopped and reports nothing.
        assert!(run_read_within(&conn, &long, Mode::Query, Duration::from_micros(200)).is_none());
        assert!(conn.conn.is_autocommit());

        // Phase 2: a short read fits, and the connection reads as before.
        let short = run_read_within(
            &conn,
            &request("SELECT 41 + 1"),
            Mode::Query,
            Duration::from_millis(500),
        );
        assert_eq!(value(&short.unwrap()), Value::Integer(42));

        // Phase 3: run with no budget, the long read completes; the budget left nothing behind.
        assert_eq!(value(&run_read(&conn, &long, Mode::Query)), Value::Integer(3_000_000));
    }
}
