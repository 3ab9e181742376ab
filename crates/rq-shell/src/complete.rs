//! Tab completion: dot-commands at the start of a line, and table and column names elsewhere
//! (read from the node after each statement, so new tables are offered at once).

use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

/// Names to offer, shared with the shell, which refreshes them.
#[derive(Clone, Default)]
pub struct Names(Arc<Mutex<Vec<String>>>);

impl Names {
    pub fn set(&self, names: Vec<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = names;
    }

    fn matching(&self, prefix: &str) -> Vec<String> {
        let lower = prefix.to_ascii_lowercase();
        let mut out: Vec<String> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|n| n.to_ascii_lowercase().starts_with(&lower))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

pub struct Completion {
    pub names: Names,
    pub commands: Vec<&'static str>,
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        let candidates: Vec<String> = if start == 0 && word.starts_with('.') {
            let lower = word.to_ascii_lowercase();
            self.commands
                .iter()
                .filter(|c| c.starts_with(&lower))
                .map(|c| c.to_string())
                .collect()
        } else if word.is_empty() {
            Vec::new()
        } else {
            self.names.matching(word)
        };
        let pairs = candidates
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Completion {
    type Hint = String;
}

impl Highlighter for Completion {}

impl Validator for Completion {}

impl Helper for Completion {}

#[cfg(test)]
mod tests {
    use rustyline::history::DefaultHistory;

    use super::*;

    fn complete(c: &Completion, line: &str) -> (usize, Vec<String>) {
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, pairs) = c.complete(line, line.len(), &ctx).unwrap();
        (start, pairs.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn dot_commands_then_tables_and_columns() {
        let names = Names::default();
        names.set(vec!["foo".into(), "food".into(), "name".into()]);
        let c = Completion {
            names,
            commands: vec![".tables", ".timer", ".help"],
        };
        assert_eq!(complete(&c, ".t"), (0, vec![".tables".to_string(), ".timer".into()]));
        assert_eq!(complete(&c, ".TA"), (0, vec![".tables".to_string()]));
        assert_eq!(complete(&c, "SELECT na"), (7, vec!["name".to_string()]));
        assert_eq!(
            complete(&c, "SELECT * FROM fo"),
            (14, vec!["foo".to_string(), "food".into()])
        );
        assert_eq!(complete(&c, "SELECT "), (7, Vec::<String>::new()));
    }
}
