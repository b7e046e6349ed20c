//! Lenient parsing of `Deprecation` and `Sunset`, for clients and tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::ParseError;

/// A `Deprecation` header value as read by [`parse_deprecation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedDeprecation {
    time: Option<SystemTime>,
    conformant: bool,
}

impl ParsedDeprecation {
    /// When the resource is (or will be) deprecated; `None` for the legacy `true` value,
    /// which says only that it is.
    pub fn time(&self) -> Option<SystemTime> {
        self.time
    }

    /// Whether the value was an RFC 9745 Date (`@<seconds>`). Anything else was accepted
    /// leniently: tell the API's owner.
    pub fn is_conformant(&self) -> bool {
        self.conformant
    }
}

/// A `Sunset` header value as read by [`parse_sunset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedSunset {
    time: SystemTime,
    conformant: bool,
}

impl ParsedSunset {
    /// When the resource is expected to become unresponsive.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// Whether the value was an IMF-fixdate, the only form RFC 9110 lets senders write.
    pub fn is_conformant(&self) -> bool {
        self.conformant
    }
}

/// Reads a `Deprecation` value.
///
/// Conformant: an RFC 9651 Date Item, parameters allowed (`@1688169599`). Accepted leniently,
/// as servers in the wild send them: the legacy `true` (and `?1`), and an HTTP date in any of
/// the forms [`parse_sunset`] accepts.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_sunset::parse_deprecation;
///
/// let strict = parse_deprecation(b"@1688169599")?;
/// assert_eq!(strict.time(), Some(UNIX_EPOCH + Duration::from_secs(1_688_169_599)));
/// assert!(strict.is_conformant());
///
/// let legacy = parse_deprecation(b"true")?;
/// assert_eq!(legacy.time(), None);
/// assert!(!legacy.is_conformant());
/// # Ok::<(), tower_sunset::ParseError>(())
/// ```
///
/// # Errors
///
/// Fails when the value is none of these.
pub fn parse_deprecation(value: &[u8]) -> Result<ParsedDeprecation, ParseError> {
    if let Ok(item) = sfv::Parser::new(value).parse_item::<sfv::Item>() {
        if let Some(date) = item.bare_item.as_date() {
            let time =
                from_signed_seconds(i64::from(date.unix_seconds())).ok_or(ParseError::new())?;
            return Ok(ParsedDeprecation {
                time: Some(time),
                conformant: true,
            });
        }
        if item.bare_item.as_boolean() == Some(true)
            || item
                .bare_item
                .as_token()
                .is_some_and(|t| t.as_str().eq_ignore_ascii_case("true"))
        {
            return Ok(ParsedDeprecation {
                time: None,
                conformant: false,
            });
        }
    }
    let sunset = parse_sunset(value)?;
    Ok(ParsedDeprecation {
        time: Some(sunset.time),
        conformant: false,
    })
}

/// Reads a `Sunset` value.
///
/// Conformant: an IMF-fixdate (`Sun, 30 Jun 2024 23:59:59 GMT`). Accepted as RFC 9110 asks
/// of recipients, but marked non-conformant: the obsolete RFC 850 and asctime forms. Accepted
/// leniently: `UTC` or `+0000` in place of `GMT` (as in the RFC 9745 draft's own example), a
/// one-digit day (as Spring writes it) and a wrong day of the week (as in RFC 8594's own
/// example, `Sat, 31 Dec 2018`, a Monday).
///
/// ```
/// use tower_sunset::parse_sunset;
///
/// assert!(parse_sunset(b"Sun, 30 Jun 2024 23:59:59 GMT")?.is_conformant());
/// let lenient = parse_sunset(b"Sun, 30 Jun 2024 23:59:59 UTC")?;
/// assert!(!lenient.is_conformant());
/// assert_eq!(lenient.time(), parse_sunset(b"Sun, 30 Jun 2024 23:59:59 GMT")?.time());
/// # Ok::<(), tower_sunset::ParseError>(())
/// ```
///
/// # Errors
///
/// Fails when the value is none of these.
pub fn parse_sunset(value: &[u8]) -> Result<ParsedSunset, ParseError> {
    let text = std::str::from_utf8(value)
        .map_err(|_| ParseError::new())?
        .trim();
    if let Ok(time) = httpdate::parse_http_date(text) {
        let conformant = httpdate::fmt_http_date(time) == text;
        return Ok(ParsedSunset { time, conformant });
    }
    let normalized = normalize(text).ok_or(ParseError::new())?;
    let (_weekday, date) = normalized.split_once(", ").ok_or(ParseError::new())?;
    // The day of the week is redundant; try each rather than trust the one written.
    let time = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .find_map(|weekday| httpdate::parse_http_date(&format!("{weekday}, {date}")).ok())
        .ok_or(ParseError::new())?;
    Ok(ParsedSunset {
        time,
        conformant: false,
    })
}

/// Repairs the common deviations from IMF-fixdate: a `UTC`/`+0000` zone, a one-digit day.
fn normalize(text: &str) -> Option<String> {
    let base = text
        .strip_suffix(" UTC")
        .or_else(|| text.strip_suffix(" +0000"))
        .or_else(|| text.strip_suffix(" GMT"))?;
    // `Sun, 1 Jun 2024 23:59:59` → `Sun, 01 Jun 2024 23:59:59`
    let (weekday, rest) = base.split_once(", ")?;
    let rest = match rest.split_once(' ') {
        Some((day, tail)) if day.len() == 1 && day.bytes().all(|b| b.is_ascii_digit()) => {
            format!("0{day} {tail}")
        }
        _ => rest.to_owned(),
    };
    Some(format!("{weekday}, {rest} GMT"))
}

fn from_signed_seconds(secs: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn deprecation_forms() {
        let cases: [(&[u8], Option<SystemTime>, bool); 7] = [
            (b"@1688169599", Some(at(1_688_169_599)), true),
            (b"@1688169599;reason=\"x\"", Some(at(1_688_169_599)), true),
            (b"true", None, false),
            (b"?1", None, false),
            (
                b"Fri, 30 Jun 2023 23:59:59 GMT",
                Some(at(1_688_169_599)),
                false,
            ),
            (
                b"Fri, 30 Jun 2023 23:59:59 UTC",
                Some(at(1_688_169_599)),
                false,
            ),
            (b" @1688169599 ", Some(at(1_688_169_599)), true),
        ];
        for (input, time, conformant) in cases {
            let parsed = parse_deprecation(input)
                .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(input)));
            assert_eq!(parsed.time(), time, "{}", String::from_utf8_lossy(input));
            assert_eq!(
                parsed.is_conformant(),
                conformant,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            parse_deprecation(b"@-86400").map(|p| p.time()),
            Ok(UNIX_EPOCH.checked_sub(Duration::from_secs(86_400)))
        );
        for bad in [
            &b"false"[..],
            b"@1.5",
            b"@1688169599, @1",
            b"2024-06-30",
            b"",
            b"\xff",
        ] {
            assert!(
                parse_deprecation(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn sunset_forms() {
        let t = at(1_546_300_799); // Mon, 31 Dec 2018 23:59:59 GMT
        let cases: [(&[u8], bool); 7] = [
            (b"Mon, 31 Dec 2018 23:59:59 GMT", true),
            (b"Monday, 31-Dec-18 23:59:59 GMT", false),
            (b"Mon Dec 31 23:59:59 2018", false),
            (b"Mon, 31 Dec 2018 23:59:59 UTC", false),
            (b"Mon, 31 Dec 2018 23:59:59 +0000", false),
            // RFC 8594's own example, whose weekday is wrong.
            (b"Sat, 31 Dec 2018 23:59:59 GMT", false),
            (b" Mon, 31 Dec 2018 23:59:59 GMT ", true),
        ];
        for (input, conformant) in cases {
            let parsed = parse_sunset(input)
                .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(input)));
            assert_eq!(parsed.time(), t, "{}", String::from_utf8_lossy(input));
            assert_eq!(
                parsed.is_conformant(),
                conformant,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let spring = parse_sunset(b"Sat, 1 Jun 2024 23:59:59 GMT").expect("one-digit day");
        assert_eq!(spring.time(), at(1_717_286_399));
        assert!(!spring.is_conformant());
        for bad in [
            &b"2024-06-30T23:59:59Z"[..],
            b"",
            b"tomorrow",
            b"Sat, 1 Jun 2024",
            b"Sat, 31 Feb 2024 23:59:59 GMT",
        ] {
            assert!(
                parse_sunset(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
