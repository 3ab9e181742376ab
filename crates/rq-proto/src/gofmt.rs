//! Go's text forms of durations and times, which rqlite's API uses for parameters and reports.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a Go duration string (`300ms`, `1.5h`, `2h45m`, `0`), as `time.ParseDuration` does.
/// Negative durations parse as zero: no rqlite setting means anything by them.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * nanos_per;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    if neg {
        return Some(Duration::ZERO);
    }
    Some(Duration::from_nanos(total as u64))
}

/// Formats a duration as Go's `Duration.String()` does (`1m0s`, `50ms`, `1.5µs`, `0s`).
pub fn duration_string(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    fn frac(v: u128, unit: u128) -> String {
        let whole = v / unit;
        let rem = v % unit;
        if rem == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let f = format!("{rem:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let h = ns / 3_600_000_000_000;
    let m = ns / 60_000_000_000 % 60;
    let s = ns % 60_000_000_000;
    let secs = format!("{}s", frac(s, 1_000_000_000));
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

/// Go's `time.Time` JSON form in UTC: RFC 3339 with nanoseconds, trailing zeros trimmed.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if d.subsec_nanos() != 0 {
        let f = format!("{:09}", d.subsec_nanos());
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// `rfc3339` of a Unix time in milliseconds; 0 is Go's zero time.
pub fn rfc3339_ms(ms: u64) -> String {
    if ms == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

/// Go's `os.ExpandEnv`: `$NAME` and `${NAME}` become the variable's value (empty when unset);
/// `$` before anything that cannot start a name stays as it is, and a malformed `${...` is
/// dropped, as Go drops it.
pub fn expand_env(s: &str) -> String {
    expand_with(s, |name| std::env::var(name).unwrap_or_default())
}

fn expand_with(s: &str, lookup: impl Fn(&str) -> String) -> String {
    let special = |c: u8| matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit();
    let name_char = |c: u8| c == b'_' || c.is_ascii_alphanumeric();
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut done = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' || i + 1 >= b.len() {
            i += 1;
            continue;
        }
        out.push_str(&s[done..i]);
        let rest = &b[i + 1..];
        // The variable's name and how many bytes after the `$` it took.
        let (name, width): (&str, usize) = if rest[0] == b'{' {
            if rest.len() > 2 && special(rest[1]) && rest[2] == b'}' {
                (&s[i + 2..i + 3], 3)
            } else {
                match rest.iter().position(|&c| c == b'}') {
                    Some(1) => ("", 2),
                    Some(end) => (&s[i + 2..i + 1 + end], end + 1),
                    None => ("", 1),
                }
            }
        } else if special(rest[0]) {
            (&s[i + 1..i + 2], 1)
        } else {
            let n = rest.iter().take_while(|&&c| name_char(c)).count();
            (&s[i + 1..i + 1 + n], n)
        };
        if name.is_empty() && width == 0 {
            out.push('$');
        } else if !name.is_empty() {
            out.push_str(&lookup(name));
        }
        i += 1 + width;
        done = i;
    }
    out.push_str(&s[done..]);
    out
}

/// Bytes in SI units as rqlite's humanizer writes them (`4.1 kB`, `33 kB`).
pub fn friendly_bytes(n: u64) -> String {
    if n < 10 {
        return format!("{n} B");
    }
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let e = (((n as f64).ln() / 1000f64.ln()).floor() as usize).min(UNITS.len() - 1);
    let val = ((n as f64) / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("2µs"), Some(Duration::from_micros(2)));
        for bad in ["", "5", "s", "1x", "1..2s", "abc", "1s2"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_go_durations() {
        assert_eq!(duration_string(Duration::ZERO), "0s");
        assert_eq!(duration_string(Duration::from_millis(50)), "50ms");
        assert_eq!(duration_string(Duration::from_secs(10)), "10s");
        assert_eq!(duration_string(Duration::from_secs(60)), "1m0s");
        assert_eq!(duration_string(Duration::from_secs(86400)), "24h0m0s");
        assert_eq!(duration_string(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(
            duration_string(Duration::from_nanos(255_864_197_532)),
            "4m15.864197532s"
        );
    }

    #[test]
    fn times_and_sizes() {
        assert_eq!(rfc3339_ms(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(friendly_bytes(0), "0 B");
        assert_eq!(friendly_bytes(512), "512 B");
        assert_eq!(friendly_bytes(4096), "4.1 kB");
        assert_eq!(friendly_bytes(32768), "33 kB");
        assert_eq!(friendly_bytes(4194304), "4.2 MB");
    }

    #[test]
    fn environment_variables_expand_as_go_expands_them() {
        let env = |name: &str| match name {
            "HOST" => "db1".to_string(),
            "1" => "one".to_string(),
            _ => String::new(),
        };
        for (input, want) in [
            ("http://$HOST:2379", "http://db1:2379"),
            ("${HOST}x", "db1x"),
            ("$UNSET.", "."),
            ("a$", "a$"),
            ("$ $", "$ $"),
            ("${1}$1", "oneone"),
            ("${}end", "end"),
            ("${HOST", "HOST"),
            ("100%", "100%"),
            ("é$HOSTé", "édb1é"),
        ] {
            assert_eq!(expand_with(input, env), want, "{input}");
        }
    }
}
