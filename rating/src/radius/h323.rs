//! Cisco's H.323 accounting times (`hh:mm:ss.mmm ZON DDD MMM ## YYYY`, with a leading `*` or
//! `.` when the gateway's clock is not synchronized). Pure functions; the AAA server reads
//! them from Start and Stop records.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// A time in Cisco's format, always in UTC: `18:27:28.032 UTC Wed Dec 09 1998`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f UTC %a %b %d %Y").to_string()
}

/// Reads a Cisco time. Zones other than UTC/GMT and a handful of North American and Central
/// European abbreviations are refused (`None`): guessing an offset would misbill.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim().trim_start_matches(['*', '.']);
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [time, zone, _dow, mon, day, year] = parts.as_slice() else {
        return None;
    };
    let offset_h: i64 = match zone.to_ascii_uppercase().as_str() {
        "UTC" | "GMT" | "Z" => 0,
        "EST" => -5,
        "EDT" | "AST" => -4,
        "CST" => -6,
        "CDT" => -5,
        "MST" => -7,
        "MDT" => -6,
        "PST" => -8,
        "PDT" => -7,
        "CET" => 1,
        "CEST" => 2,
        _ => return None,
    };
    let naive = NaiveDateTime::parse_from_str(
        &format!("{mon} {day} {year} {time}"),
        "%b %d %Y %H:%M:%S%.f",
    )
    .ok()?;
    Some(Utc.from_utc_datetime(&naive) - chrono::Duration::hours(offset_h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_zones_shift() {
        let t = Utc.with_ymd_and_hms(1998, 12, 9, 18, 27, 28).unwrap()
            + chrono::Duration::milliseconds(32);
        assert_eq!(format_time(t), "18:27:28.032 UTC Wed Dec 09 1998");
        assert_eq!(parse_time(&format_time(t)), Some(t));
        assert_eq!(parse_time("*18:27:28.032 UTC Wed Dec 9 1998"), Some(t));
        assert_eq!(parse_time(".13:27:28.032 EST Wed Dec 9 1998"), Some(t));
        for bad in [
            "",
            "18:27:28 UTC",
            "18:27:28.032 XYZ Wed Dec 9 1998",
            "junk junk a b c d",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
