//! Query-string parameters, parsed as rqlite does: first value of each key wins, flags are
//! present or absent (`?pretty=false` still means pretty), durations are Go durations.

use std::time::Duration;

use axum::http::Uri;
use rq_proto::Level;
use rq_proto::gofmt::parse_duration as parse_go_duration;

/// A request's query parameters: a handful at most, so a list, searched in order, costs less
/// than hashing each key.
#[derive(Debug, Default)]
pub struct Params {
    values: Vec<(String, String)>,
    /// The request's URI, for its path and raw query (a clone shares the request's bytes).
    uri: Uri,
    /// The request's Basic credentials, passed on with whatever is forwarded to the leader.
    credentials: Option<rq_proto::auth::Credentials>,
}

/// A parameter that failed validation; the message is rqlite's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl Params {
    /// Parses and validates a request's query string.
    pub fn parse(uri: &Uri) -> Result<Params, ParamError> {
        // In order, repeats included: a lookup takes the first, as rqlite does.
        let values: Vec<(String, String)> = uri
            .query()
            .map(|raw| url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let p = Params {
            values,
            uri: uri.clone(),
            credentials: None,
        };
        if p.has("freshness_strict") && !p.has("freshness") {
            return Err(ParamError("freshness_strict requires freshness".into()));
        }
        for key in ["timeout", "freshness", "db_timeout", "linearizable_timeout"] {
            if let Some(v) = p.get(key)
                && parse_go_duration(v).is_none()
            {
                return Err(ParamError(format!("{key} is not a valid duration")));
            }
        }
        for key in ["retries", "trailing_logs"] {
            if let Some(v) = p.get(key)
                && v.parse::<i64>().is_err()
            {
                return Err(ParamError(format!("{key} is not a valid integer")));
            }
        }
        if p.get("q").is_some_and(|q| q.is_empty()) {
            return Err(ParamError("query parameter not set".into()));
        }
        Ok(p)
    }

    /// Records the request's Basic credentials.
    pub fn with_credentials(mut self, credentials: Option<rq_proto::auth::Credentials>) -> Params {
        self.credentials = credentials;
        self
    }

    /// The request's Basic credentials, if it carried any.
    pub fn credentials(&self) -> Option<&rq_proto::auth::Credentials> {
        self.credentials.as_ref()
    }

    /// The request path these parameters came with.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query string as sent.
    pub fn raw_query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// Whether a flag is present, whatever its value.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn duration(&self, key: &str) -> Option<Duration> {
        self.get(key).and_then(parse_go_duration)
    }

    /// `timeout`, 30 s by default.
    pub fn timeout(&self) -> Duration {
        self.duration("timeout").unwrap_or(Duration::from_secs(30))
    }

    pub fn db_timeout(&self) -> Duration {
        self.duration("db_timeout").unwrap_or_default()
    }

    pub fn freshness(&self) -> Duration {
        self.duration("freshness").unwrap_or_default()
    }

    /// `linearizable_timeout`, 10 s by default from the HTTP layer.
    pub fn linearizable_timeout(&self) -> Duration {
        self.duration("linearizable_timeout").unwrap_or(Duration::from_secs(10))
    }

    pub fn level(&self) -> Level {
        self.get("level").map(Level::parse).unwrap_or_default()
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(|v| v.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_presence_based_and_first_value_wins() {
        let p = Params::parse(&Uri::from_static("/?pretty=false&level=none&level=strong&timeout=2s")).unwrap();
        assert!(p.has("pretty"));
        assert_eq!(p.level(), Level::None);
        assert_eq!(p.timeout(), Duration::from_secs(2));
        assert_eq!(
            Params::parse(&Uri::from_static("/?timeout=x")).unwrap_err().0,
            "timeout is not a valid duration"
        );
        assert_eq!(
            Params::parse(&Uri::from_static("/?freshness_strict")).unwrap_err().0,
            "freshness_strict requires freshness"
        );
        assert_eq!(
            Params::parse(&Uri::from_static("/?q=")).unwrap_err().0,
            "query parameter not set"
        );
        assert_eq!(
            Params::parse(&Uri::from_static("/?retries=a")).unwrap_err().0,
            "retries is not a valid integer"
        );
    }
}
