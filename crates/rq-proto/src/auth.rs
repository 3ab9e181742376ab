//! Users and permissions (`-auth FILE`), checked as rqlite checks them, and HTTP Basic
//! credentials, which travel with requests from one node to another.
//!
//! The file is a JSON array of `{"username": ..., "password": ..., "perms": [...]}`; field
//! names match in any case, as Go's decoder matches them. The user `*` stands for everyone,
//! anonymous requests included. A request is allowed when `*` has the permission (or `all`);
//! otherwise it needs a username, that user's password, and the permission (or `all`).
//! Passwords are compared in constant time.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use serde_json::Value;
use subtle::ConstantTimeEq;

/// Permission names.
pub mod perm {
    pub const ALL: &str = "all";
    pub const EXECUTE: &str = "execute";
    pub const QUERY: &str = "query";
    pub const BACKUP: &str = "backup";
    pub const LOAD: &str = "load";
    pub const SNAPSHOT: &str = "snapshot";
    pub const REMOVE: &str = "remove";
    pub const STATUS: &str = "status";
    pub const READY: &str = "ready";
    pub const LEADER_OPS: &str = "leader-ops";
    pub const JOIN: &str = "join";
    pub const JOIN_READ_ONLY: &str = "join-read-only";
    pub const JOIN_READ_REPLICA: &str = "join-read-replica";
    pub const UI: &str = "ui";
}

/// The user that stands for every user, anonymous ones included.
const EVERYONE: &str = "*";

#[derive(Debug, Clone, Default)]
struct User {
    password: String,
    perms: HashSet<String>,
}

/// The users of an `-auth` file.
#[derive(Debug, Clone, Default)]
pub struct CredentialStore {
    users: HashMap<String, User>,
}

/// A username and password, from a Basic `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// Reads a Basic `Authorization` header value as Go's `Request.BasicAuth` does: the scheme
    /// in any case, standard base64, the username up to the first colon.
    pub fn from_header(value: &[u8]) -> Option<Credentials> {
        const PREFIX: &[u8] = b"basic ";
        if value.len() < PREFIX.len() || !value[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&value[PREFIX.len()..])
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (username, password) = text.split_once(':')?;
        Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })
    }

    /// The `Authorization` header value that carries these credentials.
    pub fn header_value(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// Looks a field up by name in any case, as Go's JSON decoder does.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name)
        .or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn string_field(obj: &serde_json::Map<String, Value>, name: &str, at: usize) -> Result<String, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("entry {at}: {name} must be a string, not {other}")),
    }
}

impl CredentialStore {
    /// Parses the contents of an `-auth` file. A later entry for the same username replaces
    /// an earlier one.
    pub fn parse(json: &[u8]) -> Result<CredentialStore, String> {
        let entries: Vec<Value> =
            serde_json::from_slice(json).map_err(|e| format!("not a JSON array of credentials: {e}"))?;
        let mut users = HashMap::new();
        for (at, entry) in entries.iter().enumerate() {
            let Value::Object(obj) = entry else {
                return Err(format!("entry {at} is not an object"));
            };
            let username = string_field(obj, "username", at)?;
            let password = string_field(obj, "password", at)?;
            let perms = match field(obj, "perms") {
                None | Some(Value::Null) => HashSet::new(),
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|p| match p {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(format!("entry {at}: a permission must be a string, not {other}")),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(format!("entry {at}: perms must be an array, not {other}")),
            };
            users.insert(username, User { password, perms });
        }
        Ok(CredentialStore { users })
    }

    fn has(&self, username: &str, perm: &str) -> bool {
        let granted = |name: &str| {
            self.users
                .get(name)
                .is_some_and(|u| u.perms.contains(perm) || u.perms.contains(perm::ALL))
        };
        granted(username) || granted(EVERYONE)
    }

    /// Whether `username` exists and `password` is theirs.
    fn authenticates(&self, username: &str, password: &str) -> bool {
        self.users
            .get(username)
            .is_some_and(|u| bool::from(u.password.as_bytes().ct_eq(password.as_bytes())))
    }

    /// rqlite's check: allowed if everyone has `perm`; else only a user who gives their
    /// password and has `perm` (or `all`).
    pub fn allows(&self, creds: Option<&Credentials>, perm: &str) -> bool {
        if self.has(EVERYONE, perm) {
            return true;
        }
        let Some(c) = creds.filter(|c| !c.username.is_empty()) else {
            return false;
        };
        self.authenticates(&c.username, &c.password) && self.has(&c.username, perm)
    }

    /// The password of `username`, for `-join-as`.
    pub fn password(&self, username: &str) -> Option<&str> {
        self.users.get(username).map(|u| u.password.as_str())
    }

    /// The credentials `-join-as USER` joins, notifies and removes with: none if the user is
    /// not in the file, as in rqlite (the request then counts as anonymous).
    pub fn credentials_for(&self, username: &str) -> Option<Credentials> {
        self.password(username).map(|p| Credentials {
            username: username.to_string(),
            password: p.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"[
        {"username": "bob", "password": "secret1", "perms": ["all"]},
        {"username": "mary", "password": "secret2", "perms": ["query", "backup", "join"]},
        {"Username": "ro", "PASSWORD": "pw", "Perms": ["join-read-only"]},
        {"username": "*", "perms": ["status", "ready"]}
    ]"#;

    fn creds(u: &str, p: &str) -> Option<Credentials> {
        Some(Credentials {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn rqlites_check_order() {
        let s = CredentialStore::parse(FILE.as_bytes()).unwrap();
        // Everyone has status: no credentials needed, wrong ones do not matter.
        assert!(s.allows(None, perm::STATUS));
        assert!(s.allows(creds("mary", "wrong").as_ref(), perm::READY));
        // Otherwise a user, their password, and the permission.
        assert!(!s.allows(None, perm::QUERY));
        assert!(!s.allows(creds("", "").as_ref(), perm::QUERY));
        assert!(s.allows(creds("mary", "secret2").as_ref(), perm::QUERY));
        assert!(!s.allows(creds("mary", "secret1").as_ref(), perm::QUERY));
        assert!(!s.allows(creds("mary", "secret2").as_ref(), perm::EXECUTE));
        assert!(!s.allows(creds("nobody", "").as_ref(), perm::QUERY));
        // `all` grants everything.
        assert!(s.allows(creds("bob", "secret1").as_ref(), perm::LEADER_OPS));
        assert!(s.allows(creds("bob", "secret1").as_ref(), "anything"));
        // Field names in any case.
        assert!(s.allows(creds("ro", "pw").as_ref(), perm::JOIN_READ_ONLY));
        assert_eq!(s.password("ro"), Some("pw"));
        assert_eq!(s.credentials_for("nobody"), None);
    }

    #[test]
    fn everyone_with_all_opens_everything() {
        let s = CredentialStore::parse(br#"[{"username": "*", "perms": ["all"]}]"#).unwrap();
        assert!(s.allows(None, perm::EXECUTE));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for (bad, why) in [
            ("{}", "not a JSON array"),
            ("[1]", "not an object"),
            (r#"[{"username": 1}]"#, "username must be a string"),
            (r#"[{"username": "a", "perms": "all"}]"#, "perms must be an array"),
            (r#"[{"username": "a", "perms": [1]}]"#, "permission must be a string"),
            ("[", "not a JSON array"),
        ] {
            let e = CredentialStore::parse(bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn basic_headers_as_go_reads_them() {
        let c = creds("bob", "pa:ss").unwrap();
        let v = c.header_value();
        assert_eq!(Credentials::from_header(v.as_bytes()), Some(c));
        assert_eq!(
            Credentials::from_header(b"bAsIc Ym9iOnNlY3JldA=="),
            creds("bob", "secret")
        );
        for bad in [&b"Bearer x"[..], b"Basic", b"Basic !!!", b"Basic Ym9i", b""] {
            assert_eq!(Credentials::from_header(bad), None, "{bad:?}");
        }
    }
}
