//! RFC 3339 UTC timestamps with a `Z` suffix, as every wire field uses them.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats a timestamp as RFC 3339 in UTC with a `Z` suffix and whole seconds... or finer
/// precision when the value has it.
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Converts Unix microseconds (the store's representation) to a wire timestamp.
pub fn from_micros(us: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // Truncate to milliseconds: enough for ordering on the wire, short to read.
    let t = t
        .replace_nanosecond((t.nanosecond() / 1_000_000) * 1_000_000)
        .unwrap_or(t);
    format(t)
}

/// Current time as Unix microseconds.
pub fn now_micros() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

/// `serde(with)` helper for `OffsetDateTime` fields that must serialize with a `Z` suffix.
pub mod rfc3339_z {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_has_z_suffix() {
        let s = super::from_micros(1_700_000_000_123_456);
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(
            super::from_micros(1_700_000_000_000_000),
            "2023-11-14T22:13:20Z"
        );
    }
}
