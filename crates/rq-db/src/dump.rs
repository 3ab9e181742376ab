//! The SQL text dump (`/db/backup?fmt=sql`), laid out exactly as rqlite writes it.
//!
//! The row text is made by SQLite itself (`quote()` per column), as rqlite does, so values
//! come out byte for byte the same.

use std::io::Write;

use rusqlite::Connection;

use crate::Error;

fn quote_ident(name: &str) -> String {
    name.replace('"', "\"\"")
}

/// Writes a dump of the database behind `conn` to `w`, all of it read in one transaction.
/// With `tables`, only those tables' schema and rows (indexes, triggers and views are always
/// all written, as rqlite does).
pub fn dump(conn: &Connection, tables: &[String], w: &mut impl Write) -> Result<(), Error> {
    conn.execute_batch("BEGIN")?;
    let r = dump_in_tx(conn, tables, w);
    let _ = conn.execute_batch("COMMIT");
    r
}

fn dump_in_tx(conn: &Connection, tables: &[String], w: &mut impl Write) -> Result<(), Error> {
    w.write_all(b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n")?;
    let mut sql =
        String::from(r#"SELECT "name", "type", "sql" FROM sqlite_master WHERE "sql" NOT NULL AND type='table'"#);
    if !tables.is_empty() {
        sql.push_str(" AND name IN (");
        sql.push_str(&vec!["?"; tables.len()].join(", "));
        sql.push(')');
    }
    sql.push_str(" ORDER BY name");
    let schema: Vec<(String, String)> = {
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(tables.iter()), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(2)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (table, create) in schema {
        // rqlite writes each of these with a `;` appended, so the two special statements,
        // which already end in one, come out with two.
        let stmt = if table == "sqlite_sequence" {
            r#"DELETE FROM "sqlite_sequence";"#
        } else if table == "sqlite_stat1" {
            r#"ANALYZE "sqlite_master";"#
        } else if table.starts_with("sqlite_") {
            continue;
        } else {
            create.as_str()
        };
        w.write_all(stmt.as_bytes())?;
        w.write_all(b";\n")?;
        let ident = quote_ident(&table);
        let columns: Vec<String> = {
            let mut info = conn.prepare(&format!(r#"PRAGMA table_info("{ident}")"#))?;
            let rows = info.query_map([], |r| r.get::<_, String>(1))?;
            rows.collect::<Result<_, _>>()?
        };
        let values: Vec<String> = columns.iter().map(|c| format!(r#"'||quote("{c}")||'"#)).collect();
        let select = format!(
            r#"SELECT 'INSERT INTO "{ident}" VALUES({})' FROM "{ident}";"#,
            values.join(",")
        );
        let mut stmt = conn.prepare(&select)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let line: String = row.get(0)?;
            w.write_all(line.as_bytes())?;
            w.write_all(b";\n")?;
        }
    }
    let mut stmt = conn.prepare(
        r#"SELECT "name", "type", "sql" FROM "sqlite_master" WHERE "sql" NOT NULL AND "type" IN ('index', 'trigger', 'view')"#,
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let sql: String = row.get(2)?;
        w.write_all(sql.as_bytes())?;
        w.write_all(b";\n")?;
    }
    w.write_all(b"COMMIT;\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rqlite_dump_layout() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT);
             INSERT INTO foo VALUES(1, 'fiona');
             INSERT INTO foo VALUES(2, NULL);
             CREATE INDEX foo_name ON foo(name);
             CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, r REAL, b BLOB);
             INSERT INTO seq(r, b) VALUES(1.5, x'00ff');",
        )
        .unwrap();
        let mut out = Vec::new();
        dump(&c, &[], &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n\
             CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT);\n\
             INSERT INTO \"foo\" VALUES(1,'fiona');\n\
             INSERT INTO \"foo\" VALUES(2,NULL);\n\
             CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, r REAL, b BLOB);\n\
             INSERT INTO \"seq\" VALUES(1,1.5,X'00FF');\n\
             DELETE FROM \"sqlite_sequence\";;\n\
             INSERT INTO \"sqlite_sequence\" VALUES('seq',1);\n\
             CREATE INDEX foo_name ON foo(name);\n\
             COMMIT;\n"
        );
        let mut out = Vec::new();
        dump(&c, &["foo".to_string()], &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("INSERT INTO \"foo\"") && !s.contains("seq"), "{s}");
    }
}
