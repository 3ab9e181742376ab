//! `rqlite`: the interactive shell (see `rq-shell`).

fn main() -> std::process::ExitCode {
    rq_shell::main()
}
