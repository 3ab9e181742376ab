//! Query results printed as rqlite's shell prints them, in each `.mode`.
//!
//! Values are the JSON values of the answer, printed as Go's `%v` prints what its decoder made
//! of them (numbers exactly as they came, strings bare, `null` as `<nil>` in a table and `NULL`
//! in csv and line modes, arrays as `[1 2 3]`).

use std::io::Write;

use rq_proto::json as rq_proto_json;
use serde_json::Value;

/// Columns and rows of one result.
pub struct Table<'a> {
    pub columns: Vec<String>,
    pub values: &'a [Value],
}

/// Go's `fmt.Sprintf("%v", v)` of a value decoded with `UseNumber`.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_value).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_value(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// A cell as csv and line modes print it: `NULL` for a null.
fn or_null(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "NULL".into(),
        Some(v) => go_value(v),
    }
}

impl Table<'_> {
    fn row(&self, i: usize) -> &[Value] {
        self.values[i].as_array().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The cell at row `i` (0 is the header) and column `j`, as the column mode shows it.
    fn cell(&self, i: usize, j: usize) -> String {
        if i == 0 {
            return self.columns.get(j).cloned().unwrap_or_default();
        }
        match self.row(i - 1).get(j) {
            Some(v) => go_value(v),
            None => "NULL".into(),
        }
    }

    pub fn write(&self, out: &mut dyn Write, mode: &str) -> std::io::Result<()> {
        match mode {
            "csv" => self.write_csv(out),
            "json" => self.write_json(out),
            "line" => self.write_line(out),
            _ => self.write_columns(out),
        }
    }

    /// A bordered table as rqlite's (`textutil.WriteTable`): cells left-aligned, a column as
    /// wide as its longest cell in bytes, each cell padded to that width plus one in
    /// characters, a border line between all rows. No columns, no output.
    fn write_columns(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let rows = self.values.len() + 1;
        let cols = self.columns.len();
        if cols == 0 {
            return Ok(());
        }
        let cells: Vec<Vec<String>> = (0..rows)
            .map(|i| (0..cols).map(|j| self.cell(i, j)).collect())
            .collect();
        let widths: Vec<usize> = (0..cols)
            .map(|j| cells.iter().map(|r| r[j].len()).max().unwrap_or(0))
            .collect();
        let mut border = String::from("+");
        for w in &widths {
            border.push_str(&"-".repeat(w + 2));
            border.push('+');
        }
        let mut text = border.clone();
        for row in &cells {
            text.push_str("\n|");
            for (j, cell) in row.iter().enumerate() {
                let pad = (widths[j] + 1).saturating_sub(cell.chars().count());
                text.push(' ');
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
                text.push('|');
            }
            text.push('\n');
            text.push_str(&border);
        }
        text.push('\n');
        out.write_all(text.as_bytes())
    }

    /// Go's `encoding/csv`: a field is quoted when it is empty-but-meaningful never, and when
    /// it holds a comma, a quote, a CR or LF, or starts with a space.
    fn write_csv(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let field = |s: &str| -> String {
            let needs = s == r"\." || s.contains([',', '"', '\r', '\n']) || s.starts_with(|c: char| c.is_whitespace());
            if needs {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let header: Vec<String> = self.columns.iter().map(|c| field(c)).collect();
        writeln!(out, "{}", header.join(","))?;
        for i in 0..self.values.len() {
            let row = self.row(i);
            let record: Vec<String> = (0..self.columns.len()).map(|j| field(&or_null(row.get(j)))).collect();
            writeln!(out, "{}", record.join(","))?;
        }
        Ok(())
    }

    /// An array of objects keyed by column (keys sorted, as Go sorts map keys), indented by
    /// two spaces, with Go's HTML escaping.
    fn write_json(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut compact = Vec::new();
        compact.push(b'[');
        for i in 0..self.values.len() {
            if i > 0 {
                compact.push(b',');
            }
            let row = self.row(i);
            let mut keys: Vec<(usize, &String)> = self.columns.iter().enumerate().collect();
            keys.sort_by(|a, b| a.1.cmp(b.1));
            keys.dedup_by(|a, b| a.1 == b.1);
            compact.push(b'{');
            for (n, (j, k)) in keys.iter().enumerate() {
                if n > 0 {
                    compact.push(b',');
                }
                rq_proto_json::write_str(&mut compact, k, true);
                compact.push(b':');
                write_go_json(&mut compact, row.get(*j).unwrap_or(&Value::Null));
            }
            compact.push(b'}');
        }
        compact.push(b']');
        out.write_all(&rq_proto_json::indent_with(&compact, "  "))?;
        writeln!(out)
    }

    /// One `column = value` line per cell, names right-aligned to the longest, rows apart.
    fn write_line(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let width = self.columns.iter().map(String::len).max().unwrap_or(0);
        for i in 0..self.values.len() {
            if i > 0 {
                writeln!(out)?;
            }
            let row = self.row(i);
            for (j, col) in self.columns.iter().enumerate() {
                writeln!(out, "{col:>width$} = {}", or_null(row.get(j)))?;
            }
        }
        Ok(())
    }
}

/// A decoded value encoded again as Go's `json.Marshal` does: numbers as they came.
fn write_go_json(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_go_json(out, x);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            out.push(b'{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                rq_proto_json::write_str(out, k, true);
                out.push(b':');
                write_go_json(out, x);
            }
            out.push(b'}');
        }
        other => rq_proto_json::write_value(out, other, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: &[&str], values: &str) -> (Vec<String>, Vec<Value>) {
        let v: Value = serde_json::from_str(values).unwrap();
        (
            columns.iter().map(|c| c.to_string()).collect(),
            v.as_array().cloned().unwrap_or_default(),
        )
    }

    fn render(columns: &[&str], values: &str, mode: &str) -> String {
        let (columns, values) = table(columns, values);
        let mut out = Vec::new();
        Table {
            columns,
            values: &values,
        }
        .write(&mut out, mode)
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn column_mode_as_rqlite_draws_it() {
        assert_eq!(
            render(&["id", "name"], r#"[[1, "fiona"], [2, null]]"#, "column"),
            "+----+-------+\n| id | name  |\n+----+-------+\n| 1  | fiona |\n+----+-------+\n| 2  | <nil> |\n+----+-------+\n"
        );
        assert_eq!(
            render(&["id", "name"], "[]", "column"),
            "+----+------+\n| id | name |\n+----+------+\n"
        );
        assert_eq!(render(&[], "[]", "column"), "");
        // Widths are bytes and padding is characters, as rqlite's table writer counts them.
        assert_eq!(
            render(&["n"], r#"[["é"]]"#, "column"),
            "+----+\n| n  |\n+----+\n| é  |\n+----+\n"
        );
        // A short row shows NULL; numbers as they came; arrays as Go prints them.
        assert_eq!(
            render(&["a", "b"], r#"[[1.5e+21], [[1, 2]]]"#, "column"),
            "+---------+------+\n| a       | b    |\n+---------+------+\n| 1.5e+21 | NULL |\n+---------+------+\n| [1 2]   | NULL |\n+---------+------+\n"
        );
    }

    #[test]
    fn csv_json_and_line_modes() {
        let values = r#"[[1, "a,b"], [2, null]]"#;
        assert_eq!(render(&["id", "v"], values, "csv"), "id,v\n1,\"a,b\"\n2,NULL\n");
        assert_eq!(
            render(&["id", "v"], values, "json"),
            "[\n  {\n    \"id\": 1,\n    \"v\": \"a,b\"\n  },\n  {\n    \"id\": 2,\n    \"v\": null\n  }\n]\n"
        );
        assert_eq!(render(&["id", "v"], "[]", "json"), "[]\n");
        assert_eq!(
            render(&["id", "name"], values, "line"),
            "  id = 1\nname = a,b\n\n  id = 2\nname = NULL\n"
        );
    }
}
