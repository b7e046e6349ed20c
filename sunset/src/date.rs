//! The two date formats: RFC 9651 Date for `Deprecation`, IMF-fixdate for `Sunset`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use crate::error::{ConfigError, ConfigErrorKind};

/// 9999-12-31T23:59:59Z, the last second an HTTP date can express.
const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

/// Whole seconds since the Unix epoch (rounded down), if `time` is within 1970..=9999.
pub(crate) fn unix_seconds(time: SystemTime) -> Result<u64, ConfigError> {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
        .filter(|&s| s <= MAX_UNIX_SECONDS)
        .ok_or(ConfigError::new(ConfigErrorKind::TimeOutOfRange))
}

/// The time `secs` seconds after the Unix epoch.
pub(crate) fn from_unix_seconds(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `Deprecation: @<seconds>`: an RFC 9651 Date Item.
pub(crate) fn deprecation_value(secs: u64) -> HeaderValue {
    // `secs` ≤ MAX_UNIX_SECONDS, far inside sf-integer's 15 digits.
    let integer = i64::try_from(secs)
        .ok()
        .and_then(|s| sfv::Integer::try_from(s).ok())
        .unwrap_or(sfv::Integer::MAX);
    let text = sfv::ItemSerializer::new()
        .bare_item(sfv::Date::from_unix_seconds(integer))
        .finish();
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("@0"))
}

/// `Sunset: <IMF-fixdate>`, e.g. `Sun, 30 Jun 2024 23:59:59 GMT`.
pub(crate) fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(from_unix_seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_9745_example() {
        // RFC 9745 §2.1: `Deprecation: @1688169599` is 2023-06-30T23:59:59Z.
        assert_eq!(deprecation_value(1_688_169_599), "@1688169599");
    }

    #[test]
    fn rfc_8594_example() {
        // RFC 8594 §3's example is `Sunset: Sat, 31 Dec 2018 23:59:59 GMT`, but that day was a
        // Monday; the correct IMF-fixdate names it so.
        assert_eq!(http_date(1_546_300_799), "Mon, 31 Dec 2018 23:59:59 GMT");
        // Single-digit days keep two digits (Spring's formatter does not).
        assert_eq!(http_date(1_717_286_399), "Sat, 01 Jun 2024 23:59:59 GMT");
    }

    #[test]
    fn range_is_1970_to_9999() {
        assert_eq!(unix_seconds(UNIX_EPOCH), Ok(0));
        assert_eq!(
            unix_seconds(from_unix_seconds(MAX_UNIX_SECONDS)),
            Ok(MAX_UNIX_SECONDS)
        );
        assert_eq!(http_date(MAX_UNIX_SECONDS), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert!(unix_seconds(from_unix_seconds(MAX_UNIX_SECONDS + 1)).is_err());
        assert!(unix_seconds(UNIX_EPOCH - Duration::from_secs(1)).is_err());
        assert_eq!(
            unix_seconds(UNIX_EPOCH + Duration::from_millis(1999)),
            Ok(1),
            "rounded down"
        );
    }
}
