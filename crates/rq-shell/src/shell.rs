//! The shell's commands: SQL lines and dot-commands, with rqlite's requests, outputs and error
//! texts.

use std::io::Write;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::client::{Answer, Client, Payload, RequestError};
use crate::gather::{Gather, Unit};
use crate::table::Table;

/// rqlite's `.help`, sorted as it sorts it.
const HELP: &[&str] = &[
    ".backup FILE                                  Write database backup to FILE",
    ".blobarray [on|off]                           Show setting, or set BLOB data display as byte arrays",
    ".boot FILE                                    Boot the node using a SQLite file read from FILE",
    ".changes [on|off]                             Show setting, or set display of last insert ID after writes",
    ".consistency [none|weak|linearizable|strong]  Show or set read consistency level",
    ".dump FILE [TABLE,TABLE...]                   Dump the database in SQL text to FILE, optionally limited to TABLEs",
    ".exit                                         Exit this program",
    ".expvar                                       Show expvar (Go runtime) information for connected node",
    ".extensions                                   Show loaded SQLite extensions",
    ".forcewrites [on|off]                         Show setting, or set all statements to be executed via /db/execute",
    ".help                                         Show this message",
    ".indexes                                      Show names of all indexes",
    ".leader                                       Show the current cluster leader",
    ".mode [column|csv|json|line]                  Show or set output mode for query results",
    ".nodes [all]                                  Show connection status of voting nodes. 'all' to show all nodes",
    ".output FILE                                  Send output to FILE, or stdout if FILE is omitted",
    ".quit                                         Exit this program",
    ".read FILE                                    Read and execute SQL statements from FILE",
    ".ready                                        Show ready status for connected node",
    ".reap                                         Request a snapshot reap on connected node",
    ".remove NODEID                                Remove node NODEID from the cluster",
    ".restore FILE                                 Load using SQLite file or SQL dump contained in FILE",
    ".schema                                       Show CREATE statements for all tables",
    ".show                                         Show the current values for various settings",
    ".snapshot [TRAILINGLOGS]                      Request a Raft snapshot and log truncation on connected node",
    ".status                                       Show status and diagnostic information for connected node",
    ".stepdown [NODEID]                            Instruct the leader to stepdown, optionally specifying new Leader node",
    ".sysdump FILE                                 Dump system diagnostics to FILE",
    ".tables                                       List names of tables",
    ".timer [on|off]                               Show setting, or set query timings on or off",
];

/// The dot-commands, for completion.
pub fn command_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = HELP.iter().filter_map(|l| l.split_whitespace().next()).collect();
    names.push(".exit");
    names.sort_unstable();
    names.dedup();
    names
}

/// What a command did besides printing.
pub enum Flow {
    Continue,
    Exit,
}

/// Settings and the connection.
pub struct Shell {
    pub client: Client,
    /// The prompt's host, which follows the client when it fails over.
    pub prompt_host: String,
    pub color: bool,
    blob_array: bool,
    timer: bool,
    force_writes: bool,
    changes: bool,
    consistency: String,
    mode: String,
    output: Option<(String, std::fs::File)>,
    /// Whether any command failed, for the exit status when reading a script.
    pub failed: bool,
}

/// A command's failure, printed as `ERR! message`.
type Res = Result<(), String>;

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Go's `json.Decoder` with `UseNumber`: numbers keep their text.
fn parse(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

impl Shell {
    pub fn new(client: Client, prompt_host: String, color: bool) -> Shell {
        Shell {
            client,
            prompt_host,
            color,
            blob_array: false,
            timer: false,
            force_writes: false,
            changes: false,
            consistency: "weak".into(),
            mode: "column".into(),
            output: None,
            failed: false,
        }
    }

    pub fn prompt(&self) -> String {
        format!("{}> ", self.prompt_host)
    }

    /// The prompt for the further lines of a statement: `...>` under the end of the first.
    pub fn continuation(&self) -> String {
        format!("{:>width$}> ", "...", width = self.prompt_host.chars().count())
    }

    /// Runs one gathered unit of input.
    pub async fn run_unit(&mut self, unit: Unit) -> Flow {
        match unit {
            Unit::Command(line) => self.run(&line).await,
            Unit::Sql(sql) => {
                if let Err(e) = self.request(&sql).await {
                    self.err(&e);
                }
                Flow::Continue
            }
        }
    }

    /// Where results go: stdout, or the `.output` file.
    fn out(&mut self) -> Box<dyn Write + '_> {
        match &mut self.output {
            Some((_, f)) => Box::new(f),
            None => Box::new(std::io::stdout().lock()),
        }
    }

    fn say(&self, text: &str) {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }

    fn err(&mut self, msg: &str) {
        self.failed = true;
        let tag = if self.color { "\x1b[31mERR!\x1b[0m" } else { "ERR!" };
        println!("{tag} {msg}");
    }

    /// A request through the fail-over client; a change of host moves the prompt.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        content_type: Option<&str>,
        unbounded: bool,
    ) -> Result<Answer, String> {
        let a = self
            .client
            .request(method, path, body, content_type, unbounded)
            .await
            .map_err(|e: RequestError| e.to_string())?;
        if let Some(h) = &a.new_host {
            self.prompt_host = h.clone();
        }
        Ok(a)
    }

    async fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.send(Method::GET, path, None, None, false).await
    }

    /// Table, view and column names, for completion; none if the node cannot say.
    pub async fn schema_names(&mut self) -> Vec<String> {
        let sql = "SELECT m.name, p.name FROM sqlite_master AS m LEFT JOIN pragma_table_info(m.name) AS p \
                   WHERE m.type IN ('table', 'view')";
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("q", sql);
        let path = format!("{}db/query?{}", self.client.prefix, q.finish());
        let Ok(a) = self.client.request(Method::GET, &path, None, None, false).await else {
            return Vec::new();
        };
        let Ok(v) = parse(&a.body) else {
            return Vec::new();
        };
        let mut names: Vec<String> = v["results"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Runs one dot-command line (anything else on it is sent as SQL, as rqlite does).
    pub async fn run(&mut self, input: &str) -> Flow {
        let input = input.trim();
        if input.is_empty() {
            return Flow::Continue;
        }
        let (cmd, arg) = match input.find(' ') {
            Some(i) => (&input[..i], Some(&input[i + 1..])),
            None => (input, None),
        };
        let arg = arg.filter(|a| !a.is_empty());
        let r = match cmd.to_ascii_uppercase().as_str() {
            ".CHANGES" => self.toggle(arg, |s| &mut s.changes),
            ".FORCEWRITES" => self.toggle(arg, |s| &mut s.force_writes),
            ".TIMER" => self.toggle(arg, |s| &mut s.timer),
            ".BLOBARRAY" => self.toggle(arg, |s| &mut s.blob_array),
            ".CONSISTENCY" => self.choose(
                arg,
                |s| &mut s.consistency,
                &["none", "weak", "linearizable", "strong"],
                "invalid consistency '{}'. Use 'none', 'weak', 'linearizable', or 'strong'",
            ),
            ".MODE" => self.choose(
                arg,
                |s| &mut s.mode,
                &["column", "csv", "json", "line"],
                "invalid mode '{}'. Use 'column', 'csv', 'json', or 'line'",
            ),
            ".TABLES" => {
                self.query(r#"SELECT name FROM sqlite_master WHERE type="table" ORDER BY name ASC"#)
                    .await
            }
            ".INDEXES" => self.query(r#"SELECT sql FROM sqlite_master WHERE type="index""#).await,
            ".SCHEMA" => {
                self.query("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid ASC")
                    .await
            }
            ".STATUS" => self.json_at("status", input).await,
            ".EXPVAR" => self.json_at("debug/vars", input).await,
            ".NODES" => {
                let path = if arg.is_some() { "nodes?nonvoters" } else { "nodes" };
                self.json_at(path, "").await
            }
            ".READY" => self.ready().await,
            ".LEADER" => self.leader().await,
            ".EXTENSIONS" => self.extensions().await,
            // With no argument rqlite sends the whole line as the id.
            ".REMOVE" => self.remove(arg.unwrap_or(input)).await,
            ".BACKUP" => match arg {
                None => Err("please specify an output file for the backup".into()),
                Some(f) => {
                    self.download("db/backup", f, "backup file written successfully\n")
                        .await
                }
            },
            ".DUMP" => match arg {
                None => Err("please specify an output file for the SQL text".into()),
                Some(a) => {
                    let (file, tables) = dump_args(a);
                    let mut q = url::form_urlencoded::Serializer::new(String::new());
                    q.append_pair("fmt", "sql");
                    if !tables.is_empty() {
                        q.append_pair("tables", &tables.join(","));
                    }
                    let path = format!("db/backup?{}", q.finish());
                    self.download(&path, &file, "SQL text file written successfully\n")
                        .await
                }
            },
            ".RESTORE" => match arg {
                None => Err("please specify an input file to restore from".into()),
                Some(f) => self.restore(f).await,
            },
            ".BOOT" => match arg {
                None => Err("please specify an input file to boot with".into()),
                Some(f) => self.boot(f).await,
            },
            ".SYSDUMP" => match arg {
                None => Err("please specify an output file for the sysdump".into()),
                Some(f) => self.sysdump(f).await,
            },
            ".READ" => match arg {
                None => Err("please specify an input file to read from".into()),
                Some(f) => self.read_file(f).await,
            },
            ".OUTPUT" => self.set_output(arg),
            ".SHOW" => {
                let name = self.output.as_ref().map_or("stdout".to_string(), |(n, _)| n.clone());
                let text = format!(
                    "  blobarray: {}\n  changes: {}\n  consistency: {}\n  forcewrites: {}\n  mode: {}\n  output: {}\n  timer: {}\n",
                    on_off(self.blob_array),
                    on_off(self.changes),
                    self.consistency,
                    on_off(self.force_writes),
                    self.mode,
                    name,
                    on_off(self.timer)
                );
                self.say(&text);
                Ok(())
            }
            ".SNAPSHOT" => self.snapshot(arg).await,
            ".REAP" => self.reap().await,
            ".STEPDOWN" => self.stepdown(arg.map(str::trim).unwrap_or_default()).await,
            ".HELP" => {
                self.say(&format!("{}\n", HELP.join("\n")));
                Ok(())
            }
            ".QUIT" | "QUIT" | "EXIT" | ".EXIT" => return Flow::Exit,
            _ => self.request(input).await,
        };
        if let Err(e) = r {
            self.err(&e);
        }
        Flow::Continue
    }

    /// Shows a setting, or sets it to one of `allowed`; `refusal` words a bad value, at `{}`.
    fn choose(
        &mut self,
        arg: Option<&str>,
        setting: fn(&mut Shell) -> &mut String,
        allowed: &[&str],
        refusal: &str,
    ) -> Res {
        match arg {
            None => {
                let v = setting(self).clone();
                self.say(&format!("{v}\n"));
                Ok(())
            }
            Some(v) if allowed.contains(&v) => {
                *setting(self) = v.to_string();
                Ok(())
            }
            Some(v) => Err(refusal.replace("{}", v)),
        }
    }

    fn toggle(&mut self, arg: Option<&str>, flag: fn(&mut Shell) -> &mut bool) -> Res {
        match arg {
            None => {
                let v = *flag(self);
                self.say(&format!("{}\n", on_off(v)));
                Ok(())
            }
            Some(op @ ("on" | "off")) => {
                *flag(self) = op == "on";
                Ok(())
            }
            Some(op) => Err(format!("invalid option '{op}'. Use 'on' or 'off' (default)")),
        }
    }

    fn set_output(&mut self, arg: Option<&str>) -> Res {
        match arg {
            None | Some("stdout") => {
                self.output = None;
                Ok(())
            }
            Some(name) => {
                let f = std::fs::File::create(name).map_err(|e| format!("open {name}: {}", io_text(&e)))?;
                self.output = Some((name.to_string(), f));
                Ok(())
            }
        }
    }

    /// A result of `/db/query` or `/db/request`, printed in the current mode.
    fn print_rows(&mut self, r: &Value) -> Res {
        let columns: Vec<String> = r["columns"]
            .as_array()
            .map(|c| c.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect())
            .unwrap_or_default();
        let empty = Vec::new();
        let values = r["values"].as_array().unwrap_or(&empty);
        let table = Table { columns, values };
        let mode = self.mode.clone();
        let timer = self.timer;
        let mut out = self.out();
        table.write(&mut *out, &mode).map_err(|e| e.to_string())?;
        if timer {
            let t = r["time"].as_f64().unwrap_or(0.0);
            writeln!(out, "Run Time: {t:.6} seconds").map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A shell query (`.tables` and the like) through `/db/query` at the shell's level.
    async fn query(&mut self, sql: &str) -> Res {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if self.blob_array {
            q.append_pair("blob_array", "");
        }
        q.append_pair("level", &self.consistency);
        q.append_pair("q", sql);
        if self.timer {
            q.append_pair("timings", "");
        }
        let path = format!("{}db/query?{}", self.client.prefix, sorted_query(&q.finish()));
        let a = self.get(&path).await?;
        let r = single_result(&a)?;
        if let Some(e) = r["error"].as_str().filter(|e| !e.is_empty()) {
            return Err(e.to_string());
        }
        self.print_rows(&r)
    }

    /// A line of SQL, through `/db/request` (or `/db/execute` with `.forcewrites on`).
    async fn request(&mut self, sql: &str) -> Res {
        let endpoint = if self.force_writes { "db/execute" } else { "db/request" };
        // Joined as Go's `url.JoinPath` joins, unlike the other paths.
        let mut path = format!("{}/{endpoint}", self.client.prefix.trim_end_matches('/'));
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if self.timer {
            path.push_str("?timings=");
        }
        let body = serde_json::to_vec(&[sql]).map_err(|e| e.to_string())?;
        let a = self.send(Method::POST, &path, Some(body.into()), None, false).await?;
        let r = &single_result(&a)?;
        if let Some(e) = r["error"].as_str().filter(|e| !e.is_empty()) {
            let mut out = self.out();
            return writeln!(out, "Error: {e}").map_err(|e| e.to_string());
        }
        let is_rows = !r["columns"].is_null() || !r["types"].is_null() || !r["values"].is_null();
        if is_rows {
            return self.print_rows(r);
        }
        let affected = r["rows_affected"].as_i64().unwrap_or(0);
        let rows = if affected > 1 { "rows" } else { "row" };
        let (timer, changes) = (self.timer, self.changes);
        let mut out = self.out();
        if timer {
            let t = r["time"].as_f64().unwrap_or(0.0);
            writeln!(out, "{affected} {rows} affected ({t:.6} sec)").map_err(|e| e.to_string())?;
        } else {
            writeln!(out, "{affected} {rows} affected").map_err(|e| e.to_string())?;
        }
        if changes {
            let id = r["last_insert_id"].as_i64().unwrap_or(0);
            writeln!(out, "last insert ID: {id}").map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// GETs JSON and prints it as rqlite's `pprintJSON` does: keys sorted, nested objects
    /// indented by two spaces, nulls left out. A second word in `line` picks one key.
    async fn json_at(&mut self, path: &str, line: &str) -> Res {
        let a = self.get(&format!("{}{path}", self.client.prefix)).await?;
        if a.status == StatusCode::UNAUTHORIZED {
            return Err("unauthorized".into());
        }
        let v = parse(&a.body)?;
        let Value::Object(mut map) = v else {
            return Err("json: cannot unmarshal into map[string]interface {}".into());
        };
        let parts: Vec<&str> = line.split(' ').collect();
        if parts.len() >= 2 {
            let key = parts[1];
            let picked = map.remove(key).unwrap_or(Value::Null);
            map = serde_json::Map::new();
            map.insert(key.to_string(), picked);
        }
        let mut text = String::new();
        pprint(&mut text, 0, &map);
        self.say(&text);
        Ok(())
    }

    async fn ready(&mut self) -> Res {
        let a = self.get(&format!("{}readyz", self.client.prefix)).await?;
        self.say(if a.status == StatusCode::OK {
            "ready\n"
        } else {
            "not ready\n"
        });
        Ok(())
    }

    async fn leader(&mut self) -> Res {
        let a = self.get(&format!("{}nodes", self.client.prefix)).await?;
        if a.status == StatusCode::UNAUTHORIZED {
            return Err("unauthorized".into());
        }
        if a.status != StatusCode::OK {
            return Err(refusal(&a));
        }
        let v = parse(&a.body)?;
        let Some((id, node)) = v
            .as_object()
            .and_then(|m| m.iter().find(|(_, n)| n["leader"].as_bool() == Some(true)))
        else {
            return Err("no leader found".into());
        };
        let mut map = serde_json::Map::new();
        map.insert(id.clone(), node.clone());
        let mut text = String::new();
        pprint(&mut text, 0, &map);
        self.say(&text);
        Ok(())
    }

    async fn extensions(&mut self) -> Res {
        let a = self
            .get(&format!("{}status?key=extensions", self.client.prefix))
            .await?;
        if a.status == StatusCode::UNAUTHORIZED {
            return Err("unauthorized".into());
        }
        if a.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let v = parse(&a.body)?;
        let mut text = String::new();
        for name in v["names"].as_array().into_iter().flatten() {
            text.push_str(name.as_str().unwrap_or_default());
            text.push('\n');
        }
        self.say(&text);
        Ok(())
    }

    async fn remove(&mut self, id: &str) -> Res {
        let body = serde_json::to_vec(&serde_json::json!({ "id": id })).map_err(|e| e.to_string())?;
        let path = format!("{}remove", self.client.prefix);
        let a = self.send(Method::DELETE, &path, Some(body.into()), None, false).await?;
        expect_ok(&a, "server responded with: ")
    }

    /// A progress bar for a long transfer, on a terminal only.
    fn progress(&self, total: Option<u64>, what: &str) -> Option<indicatif::ProgressBar> {
        if !self.color {
            return None;
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}"
        } else {
            "{msg} {bytes} {binary_bytes_per_sec}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Some(bar)
    }

    /// Streams a GET into `file`, with no request timeout; memory holds one chunk at a time.
    async fn download(&mut self, path: &str, file: &str, done: &str) -> Res {
        let mut f = std::fs::File::create(file).map_err(|e| format!("open {file}: {}", io_text(&e)))?;
        let path = format!("{}{path}", self.client.prefix);
        let (mut resp, new_host) = self
            .client
            .respond(Method::GET, &path, &Payload::None, None, true)
            .await
            .map_err(|e: RequestError| e.to_string())?;
        if let Some(h) = new_host {
            self.prompt_host = h;
        }
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err("unauthorized".into());
        }
        if resp.status() != StatusCode::OK {
            return Err(format!(
                "server responded with: {} {}",
                resp.status().as_u16(),
                resp.status().canonical_reason().unwrap_or_default()
            ));
        }
        let bar = self.progress(resp.content_length(), "receiving");
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            f.write_all(&chunk).map_err(|e| e.to_string())?;
            if let Some(b) = &bar {
                b.inc(chunk.len() as u64);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        self.say(done);
        Ok(())
    }

    /// Streams `file` (then `suffix`) in a POST, with no request timeout.
    async fn upload(
        &mut self,
        path: &str,
        file: &str,
        suffix: &'static [u8],
        content_type: Option<&str>,
    ) -> Result<Answer, String> {
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        let bar = self.progress(Some(size + suffix.len() as u64), "sending");
        let payload = Payload::File {
            path: file.into(),
            suffix,
            progress: bar.clone(),
        };
        let path = format!("{}{path}", self.client.prefix);
        let r = self
            .client
            .respond(Method::POST, &path, &payload, content_type, true)
            .await
            .map_err(|e: RequestError| e.to_string());
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let (resp, new_host) = r?;
        if let Some(h) = new_host {
            self.prompt_host = h;
        }
        Answer::read(resp, None).await
    }

    /// The node's `/status`, which restore and boot check first.
    async fn status_store(&mut self) -> Result<Value, String> {
        let a = self.get(&format!("{}status", self.client.prefix)).await?;
        if a.status == StatusCode::UNAUTHORIZED {
            return Err("unauthorized".into());
        }
        let v = parse(&a.body)?;
        if v["store"].is_null() {
            return Err("unexpected server response: store status not found".into());
        }
        Ok(v)
    }

    async fn restore(&mut self, file: &str) -> Res {
        let status = self.status_store().await?;
        let head = file_head(file).map_err(|e| format!("open {file}: {}", io_text(&e)))?;
        let sqlite = is_sqlite(&head);
        // A SQL dump ends by setting foreign keys as the node has them, as rqlite's shell does.
        let suffix: &'static [u8] = match (sqlite, status["store"]["sqlite3"]["fk_constraints"].as_str()) {
            (true, _) => b"",
            (false, Some("enabled")) => b"PRAGMA foreign_keys=ON;",
            (false, _) => b"PRAGMA foreign_keys=OFF;",
        };
        let content_type = if sqlite {
            "application/octet-stream"
        } else {
            "text/plain"
        };
        let a = self.upload("db/load", file, suffix, Some(content_type)).await?;
        if a.status == StatusCode::UNAUTHORIZED {
            return Err("unauthorized".into());
        }
        if a.status != StatusCode::OK {
            return Err(format!("server responded with: {}", a.status_line()));
        }
        let v = parse(&a.body)?;
        if !sqlite {
            let results = v["results"].as_array().cloned().unwrap_or_default();
            if results.is_empty() {
                return Err(format!("unexpected results length: {}", results.len()));
            }
            if let Some(e) = results[0]["error"].as_str().filter(|e| !e.is_empty()) {
                self.say(&format!("Error: {e}\n"));
                return Ok(());
            }
            self.say(&format!(
                "last inserted ID: {}\nrows affected: {}\n",
                results[0]["last_insert_id"].as_i64().unwrap_or(0),
                results[0]["rows_affected"].as_i64().unwrap_or(0)
            ));
        }
        self.say("Database restored successfully.\n");
        Ok(())
    }

    async fn boot(&mut self, file: &str) -> Res {
        self.status_store().await?;
        if !file_head(file).is_ok_and(|h| is_sqlite(&h)) {
            return Err(format!("{file} is not a valid SQLite file"));
        }
        let a = self.upload("boot", file, b"", None).await?;
        if a.status == StatusCode::UNAUTHORIZED {
            return Err("unauthorized".into());
        }
        if a.status != StatusCode::OK {
            let mut msg = format!("boot failed, status code: {}", a.status_line());
            if !a.body.is_empty() {
                msg.push_str(&format!(", {}", String::from_utf8_lossy(&a.body)));
            }
            return Err(msg);
        }
        self.say("Node booted successfully.\n");
        Ok(())
    }

    async fn snapshot(&mut self, arg: Option<&str>) -> Res {
        let mut trailing = 0i64;
        if let Some(a) = arg.map(str::trim).filter(|a| !a.is_empty()) {
            trailing = a
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("invalid trailing logs value: {a}"))?;
        }
        let path = format!("{}snapshot?trailing_logs={trailing}", self.client.prefix);
        let a = self.send(Method::POST, &path, None, None, false).await?;
        if a.status == StatusCode::UNAUTHORIZED {
            return Err("unauthorized".into());
        }
        if a.status != StatusCode::OK && a.status != StatusCode::NO_CONTENT {
            return Err(format!("server responded with {}", a.status_line()));
        }
        Ok(())
    }

    async fn reap(&mut self) -> Res {
        let path = format!("{}reap", self.client.prefix);
        let a = self.send(Method::POST, &path, None, None, false).await?;
        if a.status == StatusCode::UNAUTHORIZED {
            return Err("unauthorized".into());
        }
        if a.status != StatusCode::OK {
            return Err(format!("server responded with {}", a.status_line()));
        }
        let v: Value = serde_json::from_slice(&a.body).map_err(|e| format!("failed to decode response: {e}"))?;
        self.say(&format!(
            "snapshots reaped: {}, WALs checkpointed: {}\n",
            v["snapshots_reaped"].as_i64().unwrap_or(0),
            v["wals_checkpointed"].as_i64().unwrap_or(0)
        ));
        Ok(())
    }

    async fn stepdown(&mut self, id: &str) -> Res {
        let path = format!("{}leader?wait=true", self.client.prefix);
        let (body, ct) = if id.is_empty() {
            (None, None)
        } else {
            let b = serde_json::to_vec(&serde_json::json!({ "id": id })).map_err(|e| e.to_string())?;
            (Some(Bytes::from(b)), Some("application/json"))
        };
        let a = self.send(Method::POST, &path, body, ct, false).await?;
        expect_ok(&a, "server responded with ")
    }

    /// Every node's `/status?pretty`, `/nodes?pretty`, `/readyz` and `/debug/vars`, into a file.
    async fn sysdump(&mut self, file: &str) -> Res {
        let a = self.get(&format!("{}nodes", self.client.prefix)).await?;
        let nodes = parse(&a.body)?;
        let mut f = std::fs::File::create(file).map_err(|e| format!("open {file}: {}", io_text(&e)))?;
        for (_, n) in nodes.as_object().into_iter().flatten() {
            let Some(api) = n["api_addr"].as_str().filter(|a| !a.is_empty()) else {
                continue;
            };
            for u in [
                format!("{api}/status?pretty"),
                format!("{api}/nodes?pretty"),
                format!("{api}/readyz"),
                format!("{api}/debug/vars"),
            ] {
                let mut text = format!("\n=========================================\nURL: {u}\n");
                match self.client.get_direct(&u).await {
                    Err(e) => text.push_str(&format!("Status: {e}\n\n")),
                    Ok(a) => {
                        text.push_str(&format!("Status: {}\n\n", a.status_line()));
                        if a.status == StatusCode::OK {
                            text.push_str(&String::from_utf8_lossy(&a.body));
                        }
                    }
                }
                f.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Runs the statements of `file`, gathered as typed ones are (a statement may span lines
    /// and ends at its `;`); lines starting with `--` between statements are skipped, and a
    /// dot-command line is sent as SQL, as rqlite's `.read` sends every line. On a terminal a
    /// progress bar counts the bytes of the file done, and the file is read a line at a time.
    async fn read_file(&mut self, file: &str) -> Res {
        use std::io::BufRead;
        let f = std::fs::File::open(file).map_err(|e| format!("open {file}: {}", io_text(&e)))?;
        let size = f.metadata().map(|m| m.len()).ok();
        let bar = self.progress(size, "reading");
        let mut gather = Gather::default();
        let mut lines = std::io::BufReader::new(f).lines();
        loop {
            let (units, end) = match lines.next() {
                Some(line) => {
                    let line = line.map_err(|e| e.to_string())?;
                    if let Some(b) = &bar {
                        b.inc(line.len() as u64 + 1);
                    }
                    (gather.push(&line), false)
                }
                None => (gather.finish().into_iter().collect(), true),
            };
            for unit in units {
                let (Unit::Command(sql) | Unit::Sql(sql)) = unit;
                if let Err(e) = self.request(&sql).await {
                    self.err(&e);
                }
            }
            if end {
                break;
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(())
    }
}

/// rqlite's words for an answer that is not 200: its status line and body.
fn refusal(a: &Answer) -> String {
    format!(
        "server responded with {}: {}",
        a.status_line(),
        String::from_utf8_lossy(&a.body)
    )
}

/// The one result of a `/db/query` or `/db/request` answer, with rqlite's errors for anything
/// else.
fn single_result(a: &Answer) -> Result<Value, String> {
    if a.status != StatusCode::OK {
        return Err(refusal(a));
    }
    let v = parse(&a.body)?;
    if let Some(e) = v["error"].as_str().filter(|e| !e.is_empty()) {
        return Err(e.to_string());
    }
    match v["results"].as_array() {
        Some(results) if results.len() == 1 => Ok(results[0].clone()),
        other => Err(format!("unexpected results length: {}", other.map_or(0, Vec::len))),
    }
}

fn expect_ok(a: &Answer, prefix: &str) -> Res {
    if a.status == StatusCode::UNAUTHORIZED {
        return Err("unauthorized".into());
    }
    if a.status != StatusCode::OK {
        return Err(format!("{prefix}{}", a.status_line()));
    }
    Ok(())
}

/// An I/O error as Go words the common ones.
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The first 16 bytes of a file, or fewer if it is shorter.
fn file_head(file: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(file)?.take(16).read_to_end(&mut head)?;
    Ok(head)
}

fn is_sqlite(b: &[u8]) -> bool {
    b.len() > 13 && &b[..13] == b"SQLite format"
}

/// `.dump FILE [T1,T2 ...]`: the file, and the tables named after it.
fn dump_args(arg: &str) -> (String, Vec<String>) {
    let mut words = arg.split_whitespace();
    let Some(file) = words.next() else {
        return (arg.to_string(), Vec::new());
    };
    let rest: Vec<&str> = words.collect();
    let tables = rest
        .join(" ")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    (file.to_string(), tables)
}

/// Go's `url.Values.Encode`: keys sorted.
fn sorted_query(q: &str) -> String {
    let mut pairs: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_by_key(|p| p.split('=').next().unwrap_or_default().to_string());
    pairs.join("&")
}

/// rqlite's `pprintJSON`.
fn pprint(out: &mut String, indent: usize, m: &serde_json::Map<String, Value>) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for k in keys {
        let v = &m[k];
        if v.is_null() {
            continue;
        }
        out.push_str(&"  ".repeat(indent));
        match v {
            Value::Object(inner) => {
                out.push_str(&format!("{k}:\n"));
                pprint(out, indent + 1, inner);
            }
            other => out.push_str(&format!("{k}: {}\n", crate::table::go_value(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_arguments_as_rqlite_splits_them() {
        assert_eq!(dump_args("out.sql"), ("out.sql".into(), vec![]));
        assert_eq!(
            dump_args("out.sql a, b ,c"),
            ("out.sql".into(), vec!["a".to_string(), "b".into(), "c".into()])
        );
    }

    #[test]
    fn json_is_printed_as_rqlite_prints_it() {
        let v: Value = serde_json::from_str(r#"{"b": {"y": 2, "x": [1, "a"]}, "a": "s", "n": null}"#).unwrap();
        let mut out = String::new();
        pprint(&mut out, 0, v.as_object().unwrap());
        assert_eq!(out, "a: s\nb:\n  x: [1 a]\n  y: 2\n");
    }
}
