//! Date and time values as rqlite returns them for `date`, `datetime` and `timestamp` columns.
//!
//! rqlite's SQLite driver turns such values into Go `time.Time` and encodes them with
//! `Time.MarshalText`: integers are Unix seconds (milliseconds beyond ±1e12) in UTC, text is
//! parsed with a fixed list of layouts, and text that matches none becomes the zero time.

/// A wall-clock time with its offset from UTC in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WallTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset: i32,
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn from_unix(secs: i64, nanos: u32) -> WallTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    WallTime {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        nanos,
        offset: 0,
    }
}

/// `Time.MarshalText`: RFC 3339 with the fraction trimmed of trailing zeros.
fn format(t: WallTime) -> Result<String, String> {
    if !(0..=9999).contains(&t.year) {
        return Err("Time.MarshalText: year outside of range [0,9999]".into());
    }
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    if t.nanos != 0 {
        let frac = format!("{:09}", t.nanos);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if t.offset == 0 {
        s.push('Z');
    } else {
        let abs = t.offset.unsigned_abs();
        if abs / 3600 >= 24 {
            return Err("Time.MarshalText: timezone hour outside of range [0,23]".into());
        }
        s.push(if t.offset < 0 { '-' } else { '+' });
        s.push_str(&format!("{:02}:{:02}", abs / 3600, abs / 60 % 60));
    }
    Ok(s)
}

/// An INTEGER stored in a date column.
pub fn from_integer(v: i64) -> Result<String, String> {
    let t = if !(-1_000_000_000_000..=1_000_000_000_000).contains(&v) {
        // Milliseconds; Go multiplies to nanoseconds with wrapping int64 arithmetic.
        let ns = v.wrapping_mul(1_000_000);
        from_unix(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
    } else {
        from_unix(v, 0)
    };
    format(t)
}

/// TEXT stored in a date column: one trailing `Z` dropped, then the driver's layouts in order.
pub fn from_text(s: &str) -> Result<String, String> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    match LAYOUTS.iter().find_map(|l| parse_layout(s, l)) {
        Some(t) => format(t),
        None => Ok(ZERO_TIME.to_string()),
    }
}

/// The driver's layouts. A fraction after the seconds is accepted by every layout with
/// seconds (Go's parser does so even when the layout has none), so it needs no flag here.
struct Layout {
    sep: u8,
    time: bool,
    seconds: bool,
    offset: bool,
}

const LAYOUTS: [Layout; 9] = [
    Layout {
        sep: b' ',
        time: true,
        seconds: true,
        offset: true,
    },
    Layout {
        sep: b'T',
        time: true,
        seconds: true,
        offset: true,
    },
    Layout {
        sep: b' ',
        time: true,
        seconds: true,
        offset: false,
    },
    Layout {
        sep: b'T',
        time: true,
        seconds: true,
        offset: false,
    },
    Layout {
        sep: b' ',
        time: true,
        seconds: true,
        offset: false,
    },
    Layout {
        sep: b'T',
        time: true,
        seconds: true,
        offset: false,
    },
    Layout {
        sep: b' ',
        time: true,
        seconds: false,
        offset: false,
    },
    Layout {
        sep: b'T',
        time: true,
        seconds: false,
        offset: false,
    },
    Layout {
        sep: b' ',
        time: false,
        seconds: false,
        offset: false,
    },
];

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn fixed(&mut self, n: usize) -> Option<u32> {
        let part = self.b.get(self.i..self.i + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(part.iter().fold(0, |a, d| a * 10 + (d - b'0') as u32))
    }

    /// One or two digits (Go's `15` hour element).
    fn one_or_two(&mut self) -> Option<u32> {
        let first = *self.b.get(self.i)?;
        if !first.is_ascii_digit() {
            return None;
        }
        self.i += 1;
        let mut v = (first - b'0') as u32;
        if let Some(&d) = self.b.get(self.i)
            && d.is_ascii_digit()
        {
            self.i += 1;
            v = v * 10 + (d - b'0') as u32;
        }
        Some(v)
    }

    fn lit(&mut self, c: u8) -> Option<()> {
        if c == b' ' {
            // A space in a Go layout matches one or more spaces.
            let start = self.i;
            while self.b.get(self.i) == Some(&b' ') {
                self.i += 1;
            }
            return (self.i > start).then_some(());
        }
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// An optional `.123` or `,123` fraction; digits past nine are dropped.
    fn fraction(&mut self) -> u32 {
        let b = self.b;
        if matches!(b.get(self.i), Some(b'.' | b',')) && b.get(self.i + 1).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
            let mut ns = 0u32;
            let mut n = 0;
            while let Some(&d) = b.get(self.i) {
                if !d.is_ascii_digit() {
                    break;
                }
                if n < 9 {
                    ns = ns * 10 + (d - b'0') as u32;
                    n += 1;
                }
                self.i += 1;
            }
            ns * 10u32.pow(9 - n)
        } else {
            0
        }
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn parse_layout(s: &str, l: &Layout) -> Option<WallTime> {
    let mut c = Cursor { b: s.as_bytes(), i: 0 };
    let year = c.fixed(4)? as i64;
    c.lit(b'-')?;
    let month = c.fixed(2)?;
    c.lit(b'-')?;
    let day = c.fixed(2)?;
    let (mut hour, mut minute, mut second, mut nanos, mut offset) = (0, 0, 0, 0, 0);
    if l.time {
        c.lit(l.sep)?;
        hour = c.one_or_two()?;
        c.lit(b':')?;
        minute = c.fixed(2)?;
        if l.seconds {
            c.lit(b':')?;
            second = c.fixed(2)?;
            // Go accepts a fraction after the seconds even when the layout has none.
            nanos = c.fraction();
        }
        if l.offset {
            let sign = match c.b.get(c.i) {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            c.i += 1;
            let hh = c.fixed(2)?;
            c.lit(b':')?;
            let mm = c.fixed(2)?;
            if hh > 24 || mm > 60 {
                return None;
            }
            offset = sign * (hh * 3600 + mm * 60) as i32;
        }
    }
    if c.i != c.b.len() {
        return None;
    }
    if !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(WallTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = m as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[test]
    fn integers_are_seconds_or_milliseconds() {
        assert_eq!(from_integer(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(from_integer(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(from_integer(1_700_000_000_123).unwrap(), "2023-11-14T22:13:20.123Z");
        assert_eq!(from_integer(-86_400).unwrap(), "1969-12-31T00:00:00Z");
        assert!(from_integer(999_999_999_999).is_err());
        assert_eq!(days_from_civil(2023, 11, 14) * 86_400, 1_699_920_000);
    }

    #[test]
    fn text_layouts_like_the_driver() {
        assert_eq!(from_text("2004-02-14").unwrap(), "2004-02-14T00:00:00Z");
        assert_eq!(from_text("2004-02-14 07:15:00").unwrap(), "2004-02-14T07:15:00Z");
        assert_eq!(
            from_text("2021-10-22 19:39:32.016087").unwrap(),
            "2021-10-22T19:39:32.016087Z"
        );
        assert_eq!(from_text("2021-10-22T19:39:32Z").unwrap(), "2021-10-22T19:39:32Z");
        assert_eq!(
            from_text("2021-01-01 10:00:00+05:30").unwrap(),
            "2021-01-01T10:00:00+05:30"
        );
        assert_eq!(from_text("2021-01-01 10:00:00-00:00").unwrap(), "2021-01-01T10:00:00Z");
        assert_eq!(from_text("2021-01-01  9:05").unwrap(), "2021-01-01T09:05:00Z");
        assert_eq!(from_text("2021-02-30").unwrap(), ZERO_TIME);
        assert_eq!(from_text("hello").unwrap(), ZERO_TIME);
        assert_eq!(from_text(" 2021-01-01").unwrap(), ZERO_TIME);
        assert_eq!(from_text("").unwrap(), ZERO_TIME);
        assert_eq!(from_text("2021-01-01 24:00").unwrap(), ZERO_TIME);
    }
}
