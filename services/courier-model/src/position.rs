//! The courier position and the domain types it is made of.
//!
//! Every value is parsed once, at the edge, into a type that cannot hold an
//! invalid value (`CourierId`, `Latitude`, ...). [`Position::try_new`] turns an
//! [`UncheckedPosition`] (what a client sent, or what a stream record holds)
//! into a [`Position`] or into the list of every rule it breaks.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use uuid::Uuid;

/// A rule a field broke: the field's name and a sentence saying the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The JSON / Avro field name, for example `lat`.
    pub field: &'static str,
    /// What is wrong, phrased as the rule, for example `must be between -90 and 90`.
    pub message: String,
}

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    fn required(field: &'static str) -> Self {
        Self::new(field, "is required")
    }
}

/// Maximum length of a courier or order id.
pub const MAX_ID_LEN: usize = 64;

fn check_id(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "must be 1 to {MAX_ID_LEN} characters long (got {})",
                value.chars().count()
            ),
        ));
    }
    // Bytes first (every position has a courier id): a non-ASCII character
    // has no byte in the alphabet, so all allowed bytes mean all allowed
    // characters; only a refused id is read as characters, for the message.
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if value.bytes().all(allowed) {
        return Ok(());
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii() && allowed(*c as u8))) {
        return Err(FieldError::new(
            field,
            format!("may contain only A-Z, a-z, 0-9, '_' and '-' (found {bad:?})"),
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses an id: 1 to 64 characters of `[A-Za-z0-9_-]`.
            pub fn parse(value: &str) -> Result<Self, FieldError> {
                check_id($field, value)?;
                Ok(Self(value.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A courier's id: 1 to 64 characters of `[A-Za-z0-9_-]`.
    CourierId,
    "courier_id"
);
id_type!(
    /// The id of the delivery in progress: 1 to 64 characters of `[A-Za-z0-9_-]`.
    OrderId,
    "order_id"
);

/// The client's idempotency key for one position (a UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Uuid);

impl EventId {
    /// Parses a UUID in any of its standard text forms.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Uuid::try_parse(value).map(Self).map_err(|_| {
            FieldError::new(
                "event_id",
                "must be a UUID such as 0192f8e2-7c1a-7d3e-9a4b-5c6d7e8f9a0b",
            )
        })
    }

    /// A new time-ordered UUIDv7, assigned by the server when a client sends none.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl From<Uuid> for EventId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

macro_rules! bounded_f64 {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
        pub struct $name(f64);

        impl $name {
            /// Checks the value against the field's rule.
            pub fn new(value: f64) -> Result<Self, FieldError> {
                let check: fn(f64) -> bool = $check;
                if value.is_finite() && check(value) {
                    Ok(Self(value))
                } else {
                    Err(FieldError::new($field, format!(concat!("must be ", $rule, " (got {})"), value)))
                }
            }

            /// The value.
            pub fn get(self) -> f64 {
                self.0
            }
        }
    };
}

bounded_f64!(
    /// Latitude in degrees, in [-90, 90].
    Latitude, "lat", |v| (-90.0..=90.0).contains(&v), "a number between -90 and 90"
);
bounded_f64!(
    /// Longitude in degrees, in [-180, 180].
    Longitude, "lon", |v| (-180.0..=180.0).contains(&v), "a number between -180 and 180"
);
bounded_f64!(
    /// Horizontal accuracy radius in metres, at least 0.
    AccuracyMeters, "accuracy_m", |v| v >= 0.0, "a number of metres >= 0"
);
bounded_f64!(
    /// Ground speed in metres per second, in [0, 100].
    SpeedMps, "speed_mps", |v| (0.0..=100.0).contains(&v), "a number between 0 and 100 metres per second"
);
bounded_f64!(
    /// Heading in degrees clockwise from north, in [0, 360).
    HeadingDeg, "heading_deg", |v| (0.0..360.0).contains(&v), "a number of degrees in [0, 360)"
);

/// How far `recorded_at` may stray from the time the server received the position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    /// How far in the future (device clock ahead) a position may be.
    pub max_future: Duration,
    /// How old a position may be.
    pub max_age: Duration,
}

impl TimeRules {
    /// No time window at all. A position's time window is a policy of the
    /// service that received it, applied once, at receipt (a deployment may
    /// accept fixes days old); whatever reads the stream afterwards checks
    /// only the structural rules, never a time window of its own.
    pub const UNBOUNDED: Self = Self {
        max_future: Duration::MAX,
        max_age: Duration::MAX,
    };
}

impl Default for TimeRules {
    fn default() -> Self {
        Self {
            max_future: Duration::from_secs(5 * 60),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A position as received, before any rule was checked. Every field the
/// client may omit is an `Option`; type errors (a string where a number
/// belongs) are reported by the decoder that fills this in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UncheckedPosition<'a> {
    /// The client's idempotency key; the server assigns a UUIDv7 when absent.
    pub event_id: Option<&'a str>,
    /// The courier.
    pub courier_id: Option<&'a str>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// Device time of the fix.
    pub recorded_at: Option<DateTime<Utc>>,
    /// Accuracy radius.
    pub accuracy_m: Option<f64>,
    /// Speed.
    pub speed_mps: Option<f64>,
    /// Heading.
    pub heading_deg: Option<f64>,
    /// Delivery in progress.
    pub order_id: Option<&'a str>,
}

/// A valid courier position.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// Idempotency key.
    pub event_id: EventId,
    /// The courier.
    pub courier_id: CourierId,
    /// Latitude.
    pub lat: Latitude,
    /// Longitude.
    pub lon: Longitude,
    /// Device time of the fix, UTC, microsecond precision.
    pub recorded_at: DateTime<Utc>,
    /// When the server accepted it, UTC, microsecond precision.
    pub received_at: DateTime<Utc>,
    /// Accuracy radius.
    pub accuracy_m: Option<AccuracyMeters>,
    /// Speed.
    pub speed_mps: Option<SpeedMps>,
    /// Heading.
    pub heading_deg: Option<HeadingDeg>,
    /// Delivery in progress.
    pub order_id: Option<OrderId>,
}

fn optional<T>(
    value: Option<f64>,
    parse: fn(f64) -> Result<T, FieldError>,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    value.and_then(|v| parse(v).map_err(|e| errors.push(e)).ok())
}

fn recorded_at_ok(
    recorded_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    rules: &TimeRules,
) -> Result<DateTime<Utc>, FieldError> {
    let future = TimeDelta::from_std(rules.max_future).unwrap_or(TimeDelta::MAX);
    let age = TimeDelta::from_std(rules.max_age).unwrap_or(TimeDelta::MAX);
    // Differences, not bounds: a bound beyond the representable range is no
    // bound, and no difference of two instants overflows a `TimeDelta`.
    if recorded_at.signed_duration_since(received_at) > future {
        return Err(FieldError::new(
            "recorded_at",
            format!(
                "must not be more than {}s in the future (device clock ahead?)",
                rules.max_future.as_secs()
            ),
        ));
    }
    if received_at.signed_duration_since(recorded_at) > age {
        return Err(FieldError::new(
            "recorded_at",
            format!("must not be older than {}s", rules.max_age.as_secs()),
        ));
    }
    Ok(to_micros(recorded_at))
}

/// `t` truncated to whole microseconds, the precision a position keeps.
/// (chrono's `trunc_subsecs`, and `with_nanosecond` on a `DateTime`, go
/// through time zone arithmetic; on the naive UTC time only the nanosecond
/// field changes. Every position pays it twice.)
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let naive = t.naive_utc();
    naive
        .with_nanosecond(naive.nanosecond() / 1000 * 1000)
        .map_or(t, |n| n.and_utc())
}

impl Position {
    /// Checks every rule and returns the position, or every rule it breaks in
    /// field order. `received_at` is the server's time of receipt; the
    /// `recorded_at` window is measured from it.
    pub fn try_new(
        input: &UncheckedPosition<'_>,
        received_at: DateTime<Utc>,
        rules: &TimeRules,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let event_id = match input.event_id {
            Some(text) => EventId::parse(text).map_err(|e| errors.push(e)).ok(),
            None => Some(EventId::new_v7()),
        };
        let courier_id = match input.courier_id {
            Some(text) => CourierId::parse(text).map_err(|e| errors.push(e)).ok(),
            None => {
                errors.push(FieldError::required("courier_id"));
                None
            }
        };
        let lat = match input.lat {
            Some(v) => Latitude::new(v).map_err(|e| errors.push(e)).ok(),
            None => {
                errors.push(FieldError::required("lat"));
                None
            }
        };
        let lon = match input.lon {
            Some(v) => Longitude::new(v).map_err(|e| errors.push(e)).ok(),
            None => {
                errors.push(FieldError::required("lon"));
                None
            }
        };
        let received_at = to_micros(received_at);
        let recorded_at = match input.recorded_at {
            Some(ts) => recorded_at_ok(ts, received_at, rules)
                .map_err(|e| errors.push(e))
                .ok(),
            None => {
                errors.push(FieldError::required("recorded_at"));
                None
            }
        };
        let accuracy_m = optional(input.accuracy_m, AccuracyMeters::new, &mut errors);
        let speed_mps = optional(input.speed_mps, SpeedMps::new, &mut errors);
        let heading_deg = optional(input.heading_deg, HeadingDeg::new, &mut errors);
        let order_id = input
            .order_id
            .and_then(|text| OrderId::parse(text).map_err(|e| errors.push(e)).ok());

        match (event_id, courier_id, lat, lon, recorded_at) {
            (Some(event_id), Some(courier_id), Some(lat), Some(lon), Some(recorded_at))
                if errors.is_empty() =>
            {
                Ok(Self {
                    event_id,
                    courier_id,
                    lat,
                    lon,
                    recorded_at,
                    received_at,
                    accuracy_m,
                    speed_mps,
                    heading_deg,
                    order_id,
                })
            }
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn valid() -> UncheckedPosition<'static> {
        UncheckedPosition {
            event_id: Some("0192f8e2-7c1a-7d3e-9a4b-5c6d7e8f9a0b"),
            courier_id: Some("courier-42"),
            lat: Some(-23.55),
            lon: Some(-46.63),
            recorded_at: Some(now() - TimeDelta::seconds(3)),
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_position_is_accepted() {
        let p = Position::try_new(&valid(), now(), &TimeRules::default()).expect("valid");
        assert_eq!(p.courier_id.as_str(), "courier-42");
        assert_eq!(p.received_at, now());
    }

    #[test]
    fn a_missing_event_id_gets_a_v7_uuid() {
        let input = UncheckedPosition {
            event_id: None,
            ..valid()
        };
        let p = Position::try_new(&input, now(), &TimeRules::default()).expect("valid");
        assert_eq!(p.event_id.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn every_broken_rule_is_reported_in_field_order() {
        let input = UncheckedPosition {
            event_id: Some("nope"),
            courier_id: Some("bad id!"),
            lat: Some(91.0),
            lon: Some(-181.0),
            recorded_at: Some(now() + TimeDelta::minutes(6)),
            accuracy_m: Some(-1.0),
            speed_mps: Some(100.5),
            heading_deg: Some(360.0),
            order_id: Some(""),
        };
        let errors = Position::try_new(&input, now(), &TimeRules::default()).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "event_id",
                "courier_id",
                "lat",
                "lon",
                "recorded_at",
                "accuracy_m",
                "speed_mps",
                "heading_deg",
                "order_id"
            ]
        );
    }

    #[test]
    fn required_fields_are_named_when_missing() {
        let errors = Position::try_new(&UncheckedPosition::default(), now(), &TimeRules::default())
            .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["courier_id", "lat", "lon", "recorded_at"]);
        assert!(errors.iter().all(|e| e.message == "is required"));
    }

    #[test]
    fn old_positions_are_rejected_and_the_window_is_configurable() {
        let input = UncheckedPosition {
            recorded_at: Some(now() - TimeDelta::days(8)),
            ..valid()
        };
        assert!(Position::try_new(&input, now(), &TimeRules::default()).is_err());
        let rules = TimeRules {
            max_age: Duration::from_secs(10 * 24 * 3600),
            ..TimeRules::default()
        };
        assert!(Position::try_new(&input, now(), &rules).is_ok());
    }

    #[test]
    fn unbounded_rules_accept_any_representable_time_and_keep_every_other_rule() {
        for recorded_at in [
            now() - TimeDelta::days(400),
            now() + TimeDelta::days(400),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ] {
            let input = UncheckedPosition {
                recorded_at: Some(recorded_at),
                ..valid()
            };
            assert!(
                Position::try_new(&input, now(), &TimeRules::UNBOUNDED).is_ok(),
                "{recorded_at}"
            );
        }
        let input = UncheckedPosition {
            lat: Some(91.0),
            ..valid()
        };
        assert!(Position::try_new(&input, now(), &TimeRules::UNBOUNDED).is_err());
    }

    #[test]
    fn boundaries_are_inclusive_where_the_rule_says_so() {
        for (lat, lon) in [(90.0, 180.0), (-90.0, -180.0)] {
            let input = UncheckedPosition {
                lat: Some(lat),
                lon: Some(lon),
                ..valid()
            };
            assert!(Position::try_new(&input, now(), &TimeRules::default()).is_ok());
        }
        assert!(HeadingDeg::new(0.0).is_ok());
        assert!(HeadingDeg::new(359.999).is_ok());
        assert!(Latitude::new(f64::NAN).is_err());
        assert!(Longitude::new(f64::INFINITY).is_err());
    }

    #[test]
    fn ids_allow_only_the_documented_alphabet_and_length() {
        assert!(CourierId::parse("A-z_09").is_ok());
        assert!(CourierId::parse(&"x".repeat(64)).is_ok());
        assert!(CourierId::parse(&"x".repeat(65)).is_err());
        assert!(CourierId::parse("é").is_err());
        assert!(OrderId::parse("").is_err());
    }

    #[test]
    fn recorded_at_is_truncated_to_microseconds() {
        let ts = now() - TimeDelta::nanoseconds(1_234_567_891);
        let input = UncheckedPosition {
            recorded_at: Some(ts),
            ..valid()
        };
        let received = now() + TimeDelta::nanoseconds(999_999);
        let p = Position::try_new(&input, received, &TimeRules::default()).expect("valid");
        // Truncated, never rounded: .765432109 keeps .765432.
        assert_eq!(p.recorded_at, ts - TimeDelta::nanoseconds(109));
        assert_eq!(p.recorded_at.timestamp_subsec_nanos(), 765_432_000);
        assert_eq!(p.received_at, now() + TimeDelta::nanoseconds(999_000));
    }
}
