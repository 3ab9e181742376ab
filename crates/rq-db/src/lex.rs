//! A SQLite tokenizer, just deep enough to find statements, keywords and function calls.
//!
//! It never fails: text it does not understand becomes `Other` tokens, so callers can always
//! copy the original text through unchanged.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A bare word: keyword or identifier.
    Word,
    /// `"x"`, `` `x` `` or `[x]`.
    QuotedIdent,
    /// `'text'`.
    String,
    /// `x'00ff'`.
    Blob,
    Number,
    /// `?`, `?1`, `:name`, `@name`, `$name`.
    Variable,
    LParen,
    RParen,
    Comma,
    Semicolon,
    Dot,
    /// `=` or `==`.
    Eq,
    Minus,
    /// Any other operator or character.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        &sql[self.start..self.end]
    }

    pub fn is_word(&self, sql: &str, word: &str) -> bool {
        self.kind == Kind::Word
            && self.end - self.start == word.len()
            && sql.as_bytes()[self.start..self.end].eq_ignore_ascii_case(word.as_bytes())
    }

    /// The unquoted text of a string literal or quoted identifier; a bare word as it is. An
    /// unterminated one (the text ran out first) loses its opening quote only.
    pub fn unquoted(&self, sql: &str) -> String {
        let t = self.text(sql);
        let (open, close, doubled) = match (self.kind, t.as_bytes().first()) {
            (Kind::String, Some(b'\'')) => ('\'', '\'', Some("''")),
            (Kind::QuotedIdent, Some(b'"')) => ('"', '"', Some("\"\"")),
            (Kind::QuotedIdent, Some(b'`')) => ('`', '`', Some("``")),
            (Kind::QuotedIdent, Some(b'[')) => ('[', ']', None),
            _ => return t.to_string(),
        };
        let inner = &t[open.len_utf8()..];
        let inner = match inner.strip_suffix(close) {
            Some(i) if !inner.is_empty() => i,
            _ => inner,
        };
        match doubled {
            Some(d) => inner.replace(d, &d[..1]),
            None => inner.to_string(),
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

/// Index just past the identifier characters from `i` on: ASCII letters, digits, `_` and `$`,
/// and any character outside ASCII (every byte of which is outside ASCII too, so the scan goes
/// byte by byte and still stops on a character boundary).
fn skip_ident(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || !b[i].is_ascii()) {
        i += 1;
    }
    i
}

/// Splits `sql` into tokens, dropping whitespace and comments.
pub(crate) fn tokenize(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::with_capacity(16);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(b.len());
                continue;
            }
            b'\'' => {
                i = skip_quoted(b, i, b'\'');
                Kind::String
            }
            b'"' | b'`' => {
                i = skip_quoted(b, i, c);
                Kind::QuotedIdent
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(b.len());
                Kind::QuotedIdent
            }
            b'x' | b'X' if b.get(i + 1) == Some(&b'\'') => {
                i = skip_quoted(b, i + 1, b'\'');
                Kind::Blob
            }
            b'0'..=b'9' => {
                i = skip_number(b, i);
                Kind::Number
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = skip_number(b, i);
                Kind::Number
            }
            b'?' | b':' | b'@' | b'$' => {
                i = skip_ident(b, i + 1);
                if i == start + 1 && c != b'?' {
                    Kind::Other
                } else {
                    Kind::Variable
                }
            }
            b'(' => {
                i += 1;
                Kind::LParen
            }
            b')' => {
                i += 1;
                Kind::RParen
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b';' => {
                i += 1;
                Kind::Semicolon
            }
            b'.' => {
                i += 1;
                Kind::Dot
            }
            b'=' => {
                i += if b.get(i + 1) == Some(&b'=') { 2 } else { 1 };
                Kind::Eq
            }
            b'-' => {
                i += 1;
                Kind::Minus
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                if is_ident_start(ch) {
                    i = skip_ident(b, i + ch.len_utf8());
                    Kind::Word
                } else {
                    i += ch.len_utf8();
                    Kind::Other
                }
            }
        };
        out.push(Token { kind, start, end: i });
    }
    out
}

/// Index just past a quoted run starting at `i` (which holds the quote), honouring doubled
/// quotes; an unterminated run ends at the end of the text.
fn skip_quoted(b: &[u8], mut i: usize, q: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn skip_number(b: &[u8], mut i: usize) -> usize {
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < b.len() && (b[i].is_ascii_hexdigit() || b[i] == b'_') {
            i += 1;
        }
        return i;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

/// Splits tokens into statements at top-level semicolons; empty statements are dropped.
pub(crate) fn statements(tokens: &[Token]) -> Vec<&[Token]> {
    tokens
        .split(|t| t.kind == Kind::Semicolon)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, String)> {
        tokenize(sql)
            .into_iter()
            .map(|t| (t.kind, t.text(sql).to_string()))
            .collect()
    }

    #[test]
    fn skips_comments_and_keeps_literals_whole() {
        let sql = "SELECT 'a;b' /* c; */ , x'00', \"q\"\"x\" -- tail\n; 1.5e3";
        assert_eq!(
            kinds(sql),
            vec![
                (Kind::Word, "SELECT".into()),
                (Kind::String, "'a;b'".into()),
                (Kind::Comma, ",".into()),
                (Kind::Blob, "x'00'".into()),
                (Kind::Comma, ",".into()),
                (Kind::QuotedIdent, "\"q\"\"x\"".into()),
                (Kind::Semicolon, ";".into()),
                (Kind::Number, "1.5e3".into()),
            ]
        );
        let toks = tokenize(sql);
        assert_eq!(statements(&toks).len(), 2);
        assert_eq!(toks[5].unquoted(sql), "q\"x");
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "'", "\"", "[", "/*", "--", "x'", "?", ":", "é", "1e", "0x", "$", "\u{2028}",
        ] {
            tokenize(s);
        }
    }
}
