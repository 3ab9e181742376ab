//! The `rqlite` shell driven through its standard input against real nodes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{DataDir, Node};

const SHELL: &str = env!("CARGO_BIN_EXE_rqlite");

/// Runs the shell with `args`, feeding it `input`; its exit code, stdout and stderr.
pub(crate) fn shell(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(SHELL)
        .args(args)
        .env_remove("RQLITE_HOST")
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the shell");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn port(node: &Node) -> String {
    node.http.rsplit_once(':').unwrap().1.to_string()
}

/// What the shell prints on connecting to the node on port `p`, its prompt, and the prompt of
/// a statement's further lines (`...>`, aligned under the end of the prompt).
fn greeting(p: &str) -> (String, String, String) {
    let banner = format!(
        "Welcome to the rqlite CLI.\nEnter \".help\" for usage hints.\nConnected to http://127.0.0.1:{p} running version v10.3.0+rs.0.1.0\n"
    );
    let prompt = format!("127.0.0.1:{p}> ");
    let more = format!("{}...> ", " ".repeat(prompt.len() - 5));
    (banner, prompt, more)
}

#[tokio::test]
async fn a_script_through_stdin_prints_what_rqlites_shell_prints() {
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &[]).await;
    let p = port(&node);
    let script = "CREATE TABLE foo (
  id INTEGER NOT NULL PRIMARY KEY,
  name TEXT);
INSERT INTO foo(name) VALUES('fiona');
INSERT INTO foo(name) VALUES('declan'), ('日本');
.changes on
INSERT INTO foo(name) VALUES(NULL);
.changes off
SELECT * FROM foo;
.mode csv
SELECT * FROM foo WHERE id < 3;
.mode line
SELECT * FROM foo WHERE id = 1;
.mode json
SELECT id FROM foo WHERE id = 2;
.mode column
.tables
.consistency linearizable
.consistency
SELECT name
  FROM foo -- a comment; not the end
  WHERE id = 1;
SELECT * FROM no_such_table
.mode bogus
.timer maybe
.show
.exit
";
    let (code, out, err) = shell(&["-p", &p], script);
    let (banner, prompt, more) = greeting(&p);
    let expected = [
        banner,
        format!("{prompt}{more}{more}0 row affected\n"),
        format!("{prompt}1 row affected\n"),
        format!("{prompt}2 rows affected\n"),
        prompt.clone(),
        format!("{prompt}1 row affected\nlast insert ID: 4\n"),
        prompt.clone(),
        format!(
            "{prompt}+----+--------+\n| id | name   |\n+----+--------+\n| 1  | fiona  |\n+----+--------+\n| 2  | declan |\n+----+--------+\n| 3  | 日本     |\n+----+--------+\n| 4  | <nil>  |\n+----+--------+\n"
        ),
        prompt.clone(),
        format!("{prompt}id,name\n1,fiona\n2,declan\n"),
        prompt.clone(),
        format!("{prompt}  id = 1\nname = fiona\n"),
        prompt.clone(),
        format!("{prompt}[\n  {{\n    \"id\": 2\n  }}\n]\n"),
        prompt.clone(),
        format!("{prompt}+------+\n| name |\n+------+\n| foo  |\n+------+\n"),
        prompt.clone(),
        format!("{prompt}linearizable\n"),
        format!("{prompt}{more}{more}+-------+\n| name  |\n+-------+\n| fiona |\n+-------+\n"),
        // Without its `;` a statement runs when a dot-command follows it.
        format!("{prompt}{more}Error: no such table: no_such_table\n"),
        "ERR! invalid mode 'bogus'. Use 'column', 'csv', 'json', or 'line'\n".to_string(),
        format!("{prompt}ERR! invalid option 'maybe'. Use 'on' or 'off' (default)\n"),
        format!(
            "{prompt}  blobarray: off\n  changes: off\n  consistency: linearizable\n  forcewrites: off\n  mode: column\n  output: stdout\n  timer: off\n"
        ),
        prompt.clone(),
        "bye~\n".to_string(),
    ]
    .concat();
    assert_eq!(out, expected, "stderr: {err}");
    // Commands that failed (the bad mode and toggle) make the exit status 1; a statement's
    // own SQL error does not, as in rqlite.
    assert_eq!(code, 1);
    // Nor at the end of the input: there it runs as it is.
    let (code, out, _) = shell(&["-p", &p], ".ready\nSELECT * FROM no_such_table\n");
    assert_eq!(code, 0);
    assert!(
        out.ends_with("...> Error: no such table: no_such_table\nbye~\n"),
        "{out}"
    );
}

#[tokio::test]
async fn a_script_written_for_rqlites_shell_runs_a_line_at_a_time() {
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &[]).await;
    let p = port(&node);
    // rqlite's shell runs every line; such a script has no `;`.
    let script = "CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT)
INSERT INTO foo(name) VALUES(\"fiona\")
SELECT * FROM foo
.tables
UPDATE foo SET name = 'declan'
WHERE id = 1
";
    let (code, out, err) = shell(&["-p", &p], script);
    let (banner, prompt, more) = greeting(&p);
    let expected = [
        banner,
        format!("{prompt}{more}{more}{more}0 row affected\n1 row affected\n"),
        "+----+-------+\n| id | name  |\n+----+-------+\n| 1  | fiona |\n+----+-------+\n".to_string(),
        "+------+\n| name |\n+------+\n| foo  |\n+------+\n".to_string(),
        // Two lines that read as one statement together run as one.
        format!("{prompt}{more}{more}1 row affected\n"),
        "bye~\n".to_string(),
    ]
    .concat();
    assert_eq!(out, expected, "stderr: {err}");
    assert_eq!(code, 0);
    assert_eq!(
        node.query("", r#"["SELECT name FROM foo"]"#).await,
        r#"{"results":[{"columns":["name"],"types":["text"],"values":[["declan"]]}]}"#
    );
}

#[tokio::test]
async fn blobs_schema_writes_timings_and_output_files_print_as_rqlites_shell_prints() {
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &[]).await;
    let p = port(&node);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.txt");
    let script = format!(
        "CREATE TABLE b(id INTEGER PRIMARY KEY, d BLOB, r REAL);
CREATE INDEX bi ON b(r);
INSERT INTO b VALUES(1, x'00ff10', 1.5), (2, NULL, 1e20);
SELECT * FROM b;
.blobarray on
SELECT * FROM b;
.mode csv
SELECT * FROM b;
.mode line
SELECT * FROM b;
.mode column
.blobarray off
.indexes
.schema
.forcewrites on
INSERT INTO b(id) VALUES(3);
.forcewrites
.forcewrites off
.timer on
SELECT 1;
.timer off
.output {}
SELECT 2;
.output
.reap
.foo
.sysdump
.help
.quit
SELECT 'never run';
",
        output.display()
    );
    let (code, out, err) = shell(&["-p", &p], &script);
    assert_eq!(code, 1, "{out}\n{err}");
    // The one line that varies.
    let timed = out
        .lines()
        .find(|l| l.starts_with("Run Time: "))
        .unwrap_or_else(|| panic!("no timing in:\n{out}"));
    let secs = timed.trim_start_matches("Run Time: ").trim_end_matches(" seconds");
    assert!(secs.parse::<f64>().is_ok(), "{timed}");
    let out = out.replace(timed, "Run Time: T seconds");
    let prompt = format!("127.0.0.1:{p}> ");
    let table = "+----+-------+-----------------------+\n| id | d     | r                     |\n+----+-------+-----------------------+\n| 1  | AP8Q  | 1.5                   |\n+----+-------+-----------------------+\n| 2  | <nil> | 100000000000000000000 |\n+----+-------+-----------------------+\n";
    let help: String = out
        .lines()
        .filter(|l| l.starts_with('.') || l.starts_with(&format!("{prompt}.")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(help.lines().count(), 30, "{help}");
    let expected = [
        format!("{prompt}0 row affected\n"),
        format!("{prompt}0 row affected\n"),
        format!("{prompt}2 rows affected\n"),
        format!("{prompt}{table}"),
        // As in rqlite, `.blobarray` changes only the shell's own queries (`.tables` and the
        // like), not the statements typed.
        prompt.clone(),
        format!("{prompt}{table}"),
        prompt.clone(),
        format!("{prompt}id,d,r\n1,AP8Q,1.5\n2,NULL,100000000000000000000\n"),
        prompt.clone(),
        format!("{prompt}id = 1\n d = AP8Q\n r = 1.5\n\nid = 2\n d = NULL\n r = 100000000000000000000\n"),
        prompt.clone(),
        prompt.clone(),
        format!("{prompt}+-------------------------+\n| sql                     |\n+-------------------------+\n| CREATE INDEX bi ON b(r) |\n+-------------------------+\n"),
        format!("{prompt}+--------------------------------------------------------+\n| sql                                                    |\n+--------------------------------------------------------+\n| CREATE TABLE b(id INTEGER PRIMARY KEY, d BLOB, r REAL) |\n+--------------------------------------------------------+\n| CREATE INDEX bi ON b(r)                                |\n+--------------------------------------------------------+\n"),
        prompt.clone(),
        format!("{prompt}1 row affected\n"),
        format!("{prompt}on\n"),
        prompt.clone(),
        prompt.clone(),
        format!("{prompt}+---+\n| 1 |\n+---+\n| 1 |\n+---+\nRun Time: T seconds\n"),
        prompt.clone(),
        prompt.clone(),
        prompt.clone(),
        prompt.clone(),
        format!("{prompt}snapshots reaped: 0, WALs checkpointed: 1\n"),
        // An unknown command goes to the server as SQL, as in rqlite.
        format!("{prompt}Error: near \".\": syntax error\n"),
        format!("{prompt}ERR! please specify an output file for the sysdump\n"),
        format!("{prompt}{}", help.trim_start_matches(&prompt)),
        prompt.clone(),
        "bye~\n".to_string(),
    ]
    .concat();
    let session = out.split_once(" running version ").map(|(_, s)| s).unwrap_or_default();
    assert_eq!(session.split_once('\n').unwrap().1, expected, "stderr: {err}");
    assert!(help.contains(".timer [on|off]  ") && help.contains(".reap  "), "{help}");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "+---+\n| 2 |\n+---+\n| 2 |\n+---+\n"
    );
}

#[tokio::test]
async fn node_commands_and_whole_database_files() {
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &[]).await;
    let p = port(&node);
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup.db");
    let dump = dir.path().join("dump.sql");
    let migration = dir.path().join("migration.sql");
    std::fs::write(
        &migration,
        "-- a migration with statements over several lines
CREATE TABLE audit(
  n INTEGER -- how many; counted by the trigger
);
INSERT INTO audit VALUES (0);
CREATE TRIGGER counted AFTER INSERT ON small BEGIN
  UPDATE audit SET n = n + 1;
END;
INSERT INTO small VALUES ('a;b'),
  ('c');
SELECT n FROM audit
",
    )
    .unwrap();
    let rows: Vec<String> = (0..2000).map(|i| format!("({i}, '{}')", "x".repeat(100))).collect();
    let script = format!(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT);
INSERT INTO big VALUES {};
CREATE TABLE small(x);
.read {m}
.backup {b}
.dump {s} small
DROP TABLE big;
.restore {b}
SELECT COUNT(*) FROM big;
.boot {b}
.status store
.ready
.leader
.snapshot
.snapshot -1
.backup
.nodes all
",
        rows.join(","),
        b = backup.display(),
        s = dump.display(),
        m = migration.display()
    );
    let (code, out, err) = shell(&["-p", &p], &script);
    assert_eq!(code, 1, "{out}\n{err}");
    // The table was dropped before the restore, which brought it back with every row.
    for expected in [
        // `.read` ran the migration a statement at a time (a DDL statement reports the
        // last count, as SQLite does); the trigger counted both rows.
        "1 row affected\n1 row affected\n2 rows affected\n+---+\n| n |\n+---+\n| 2 |\n",
        "backup file written successfully\n",
        "SQL text file written successfully\n",
        "Database restored successfully.\n",
        "| 2000     |",
        "Node booted successfully.\n",
        "store:\n",
        "ready\n",
        "  leader: true\n",
        "ERR! invalid trailing logs value: -1\n",
        "ERR! please specify an output file for the backup\n",
        "  api_addr: http://",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
    let db = std::fs::read(&backup).unwrap();
    assert!(db.starts_with(b"SQLite format 3"));
    let sql = std::fs::read_to_string(&dump).unwrap();
    assert!(
        sql.contains("CREATE TABLE small(x);") && sql.contains("'a;b'") && !sql.contains("big"),
        "{sql}"
    );
    // A SQL dump restores too, in one transaction: a table it creates that exists already
    // stops it, and nothing of it stays.
    let (_, out, _) = shell(&["-p", &p], &format!(".restore {}\n", dump.display()));
    assert!(out.contains("> Error: table small already exists\n"), "{out}");
    let (_, out, _) = shell(
        &["-p", &p],
        &format!("DROP TABLE small;\n.restore {}\n.tables\n", dump.display()),
    );
    assert!(
        out.contains("last inserted ID: 2\nrows affected: 1\nDatabase restored successfully.\n")
            && out.contains("| small |"),
        "{out}"
    );
}

#[tokio::test]
async fn alternatives_take_over_when_the_first_host_is_down() {
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &[]).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, out, err) = shell(
        &["-p", &dead.to_string(), "-a", &format!(", {} ,", node.http)],
        "SELECT 1;\n",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("{}> +---+", node.http)), "{out}");
    assert!(
        err.contains(&format!(
            "host '127.0.0.1:{dead}' is unavailable, retrying with the next available host"
        )),
        "{err}"
    );
    // Nothing answers at all: rqlite's words, and a failed exit.
    let (code, out, _) = shell(&["-p", &dead.to_string()], ".ready\n");
    assert_eq!(code, 1);
    assert_eq!(out, "ERR! no host available to perform the request\n");
}

#[tokio::test]
async fn https_and_basic_auth() {
    let pki_dir = tempfile::tempdir().unwrap();
    let ca = rq_net::testing::Ca::new("shell CA");
    let ca_path = ca.write(pki_dir.path(), "ca.pem");
    let pair = ca.issue("node", &["127.0.0.1"]).write(pki_dir.path(), "node");
    let users = pki_dir.path().join("users.json");
    std::fs::write(
        &users,
        r#"[{"username": "bob", "password": "pw", "perms": ["all"]}, {"username": "*", "perms": ["ready"]}]"#,
    )
    .unwrap();
    let d = DataDir::new();
    let cert = pair.cert.display().to_string();
    let key = pair.key.display().to_string();
    let users = users.display().to_string();
    let node = Node::spawn_in(&d.path, &["-http-cert", &cert, "-http-key", &key, "-auth", &users]);
    let p = port(&node);
    let ca_arg = ca_path.display().to_string();
    let mut ready = false;
    for _ in 0..100 {
        let (_, out, _) = shell(&["-s", "https", "-c", &ca_arg, "-p", &p], ".ready\n");
        if out.contains("> ready") {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready);
    let (code, out, err) = shell(
        &["-s", "https", "-c", &ca_arg, "-p", &p, "-u", "bob:pw"],
        "CREATE TABLE t(x);\n.tables\n",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("Connected to https://127.0.0.1:") && out.contains("| t    |"),
        "{out}"
    );
    let (_, out, _) = shell(
        &["-s", "https", "-c", &ca_arg, "-p", &p, "-u", "bob:wrong"],
        ".status\n",
    );
    assert!(out.contains("ERR! unauthorized"), "{out}");
    // Without the CA the server's certificate is not trusted; -i skips the check.
    let (code, out, _) = shell(&["-s", "https", "-p", &p], ".ready\n");
    assert_eq!(
        (code, out.as_str()),
        (1, "ERR! no host available to perform the request\n")
    );
    let (_, out, _) = shell(&["-s", "https", "-i", "-p", &p], ".ready\n");
    assert!(out.contains("> ready"), "{out}");
}

#[test]
fn help_and_version() {
    let (code, out, _) = shell(&["-h"], "");
    assert_eq!(code, 0);
    assert!(
        out.starts_with("Options:\n\n  -h, --help\n      display help information\n\n"),
        "{out}"
    );
    assert!(
        out.ends_with("  -t, --http-timeout[=30s]\n      set timeout on HTTP requests\n"),
        "{out}"
    );
    let (_, out, _) = shell(&["-v"], "");
    assert_eq!(out, "Version v10.3.0+rs.0.1.0, commit unknown, built on unknown\n");
    let (code, _, err) = shell(&["--bogus"], "");
    assert_eq!((code, err.as_str()), (2, "ERR! undefined option --bogus\n"));
}

#[tokio::test]
async fn a_100_mb_database_goes_out_and_back_in() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("big.db");
    {
        let c = rusqlite::Connection::open(&source).unwrap();
        c.execute_batch("CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT); BEGIN")
            .unwrap();
        let mut insert = c.prepare("INSERT INTO big(v) VALUES(?1)").unwrap();
        let value = "x".repeat(1000);
        for _ in 0..100_000 {
            insert.execute([&value]).unwrap();
        }
        drop(insert);
        c.execute_batch("COMMIT").unwrap();
    }
    assert!(std::fs::metadata(&source).unwrap().len() > 100_000_000);
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &[]).await;
    let backup = dir.path().join("big.bak");
    let script = format!(
        ".boot {}\n.backup {}\nDELETE FROM big;\n.restore {}\nSELECT COUNT(*), SUM(LENGTH(v)) FROM big;\n",
        source.display(),
        backup.display(),
        backup.display()
    );
    let (code, out, err) = shell(&["-p", &port(&node)], &script);
    assert_eq!(code, 0, "{out}\n{err}");
    for expected in [
        "Node booted successfully.\n",
        "backup file written successfully\n",
        "Database restored successfully.\n",
        "| 100000   | 100000000      |",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
    assert!(std::fs::metadata(&backup).unwrap().len() > 100_000_000);
}

#[tokio::test]
async fn on_a_terminal_lines_are_edited_completed_and_remembered() {
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &[]).await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(SHELL);
    cmd.args(["-p", &port(&node)])
        .env_remove("RQLITE_HOST")
        .env("HOME", home.path())
        .env("TERM", "xterm");
    let prompt = format!("{}> ", node.http);
    let p = tokio::task::spawn_blocking(move || -> Result<String, rexpect::error::Error> {
        let mut s = rexpect::session::spawn_command(cmd, Some(10_000))?;
        s.exp_string("Welcome to the rqlite CLI.")?;
        s.exp_string(&prompt)?;
        s.send_line("CREATE TABLE fruit(")?;
        s.exp_string("...> ")?;
        s.send_line("  name TEXT);")?;
        s.exp_string("0 row affected")?;
        s.exp_string(&prompt)?;
        // Tab completes a dot-command, then a table name.
        s.send(".tab\t")?;
        s.send_line("")?;
        s.exp_string("| fruit |")?;
        s.exp_string(&prompt)?;
        s.send("SELECT COUNT(*) FROM fru\t")?;
        s.send_line(";")?;
        s.exp_string("| COUNT(*) |")?;
        s.exp_string(&prompt)?;
        // Ctrl-C drops the line being typed; the shell carries on.
        s.send("SELECT nonsense")?;
        s.send_control('c')?;
        s.exp_string(&prompt)?;
        // ... and any statement it was continuing.
        s.send_line("SELECT more")?;
        s.exp_string("...> ")?;
        s.send_control('c')?;
        s.exp_string(&prompt)?;
        s.send_line(".ready")?;
        s.exp_string("ready")?;
        s.exp_string(&prompt)?;
        // Ctrl-D leaves.
        s.send_control('d')?;
        s.exp_string("bye~")?;
        s.exp_eof()
    });
    p.await.unwrap().expect("terminal session");
    let history = std::fs::read_to_string(home.path().join(".rqlite_history")).unwrap();
    assert!(
        history.contains("CREATE TABLE fruit( name TEXT);") && history.contains(".ready"),
        "{history}"
    );
    assert!(!history.contains("nonsense") && !history.contains("more"), "{history}");
}

#[tokio::test]
async fn cluster_commands_on_three_nodes() {
    let (_dirs, nodes) = crate::harness::three_nodes(&[]).await;
    let first = port(&nodes[0]);
    nodes[0]
        .wait_for(Duration::from_secs(20), "three voters", || async {
            shell(&["-p", &first], ".nodes\n").1.matches("  voter: true").count() == 3
        })
        .await;
    let (_, out, _) = shell(&["-p", &first], ".leader\n");
    assert!(out.contains("n0:\n") && out.contains("  leader: true\n"), "{out}");

    // A read replica is listed by `.nodes all` only.
    let rd = DataDir::new();
    let replica = Node::start_in(
        &rd.path,
        &["-node-id", "r1", "-raft-non-voter", "-join", &nodes[0].raft],
    )
    .await;
    nodes[0]
        .wait_for(Duration::from_secs(20), "the replica", || async {
            shell(&["-p", &first], ".nodes all\n").1.contains("r1:\n")
        })
        .await;
    let (_, out, _) = shell(&["-p", &first], ".nodes all\n");
    assert!(
        out.contains("  voter: false\n") && out.matches("  voter: true").count() == 3,
        "{out}"
    );
    let (_, out, _) = shell(&["-p", &first], ".nodes\n");
    assert!(!out.contains("r1:") && !out.contains("voter: false"), "{out}");

    // Writes through a follower reach the leader.
    let (code, out, _) = shell(
        &["-p", &port(&nodes[2])],
        "CREATE TABLE t(x);\nINSERT INTO t VALUES(1);\n",
    );
    assert_eq!(code, 0);
    assert!(out.contains("1 row affected"), "{out}");

    // The leader steps down to n1 when asked, and n2 is taken out.
    let (code, out, err) = shell(&["-p", &first], ".stepdown n1\n");
    assert_eq!(code, 0, "{out}\n{err}");
    nodes[0]
        .wait_for(Duration::from_secs(20), "n1 to lead", || async {
            shell(&["-p", &first], ".leader\n").1.contains("n1:\n")
        })
        .await;
    let (code, out, _) = shell(&["-p", &first], ".remove n2\n.nodes all\n");
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("n2:\n") && out.matches("  voter: true").count() == 2 && out.contains("r1:\n"),
        "{out}"
    );
    drop(replica);
}
