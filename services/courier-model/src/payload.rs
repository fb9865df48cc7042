//! Decoding of `POST /v1/positions` bodies.
//!
//! The body is read in one pass with `serde_json`. Syntax errors fail the
//! whole request (with line and column); everything else is collected per
//! position and per field, so a client learns every problem at once:
//! unknown fields (with a suggestion), wrong JSON types, duplicates, and the
//! domain rules of [`Position::try_new`].

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use crate::position::{FieldError, Position, TimeRules, UncheckedPosition};
use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The fields a position object may have, in schema order.
pub const FIELDS: [&str; 9] = [
    "event_id",
    "courier_id",
    "lat",
    "lon",
    "recorded_at",
    "accuracy_m",
    "speed_mps",
    "heading_deg",
    "order_id",
];

const EVENT_ID: usize = 0;
const COURIER_ID: usize = 1;
const LAT: usize = 2;
const LON: usize = 3;
const RECORDED_AT: usize = 4;
const ACCURACY_M: usize = 5;
const SPEED_MPS: usize = 6;
const HEADING_DEG: usize = 7;
const ORDER_ID: usize = 8;

/// Unknown fields reported per position at most (the rest are counted).
const MAX_UNKNOWN_REPORTED: usize = 8;

/// Any JSON value, with strings borrowed from the body where possible and
/// containers skipped (no position field holds one).
#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue<'a> {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// An array (contents skipped).
    Array,
    /// An object (contents skipped).
    Object,
}

impl JsonValue<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Number(_) => "a number",
            Self::Str(_) => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        }
    }
}

struct JsonValueVisitor;

impl<'de> Visitor<'de> for JsonValueVisitor {
    type Value = JsonValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(JsonValue::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(JsonValue::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(JsonValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(JsonValue::Number(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(JsonValue::Number(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(JsonValue::Number(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(JsonValue::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(JsonValue::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(JsonValue::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(JsonValue::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(JsonValue::Object)
    }
}

impl<'de> Deserialize<'de> for JsonValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonValueVisitor)
    }
}

/// One position object as found in the body, before any rule is checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawPosition<'a> {
    fields: [Option<JsonValue<'a>>; FIELDS.len()],
    unknown: Vec<String>,
    unknown_count: usize,
    duplicates: Vec<&'static str>,
    /// The JSON type, when the item is not an object at all.
    not_object: Option<&'static str>,
}

/// A key of a position object.
enum FieldKey {
    Known(usize),
    Unknown(String),
}

struct FieldKeyVisitor;

impl Visitor<'_> for FieldKeyVisitor {
    type Value = FieldKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, v: &str) -> Result<FieldKey, E> {
        Ok(match FIELDS.iter().position(|f| *f == v) {
            Some(i) => FieldKey::Known(i),
            None => FieldKey::Unknown(v.to_owned()),
        })
    }
}

impl<'de> Deserialize<'de> for FieldKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FieldKeyVisitor)
    }
}

impl<'de> RawPosition<'de> {
    fn absorb<A: MapAccess<'de>>(&mut self, key: FieldKey, map: &mut A) -> Result<(), A::Error> {
        match key {
            FieldKey::Known(i) => {
                let value = map.next_value::<JsonValue<'de>>()?;
                if self.fields[i].is_some() {
                    self.duplicates.push(FIELDS[i]);
                }
                self.fields[i] = Some(value);
            }
            FieldKey::Unknown(name) => {
                map.next_value::<IgnoredAny>()?;
                self.unknown_count += 1;
                if self.unknown.len() < MAX_UNKNOWN_REPORTED {
                    self.unknown.push(name);
                }
            }
        }
        Ok(())
    }
}

struct RawPositionVisitor;

impl<'de> Visitor<'de> for RawPositionVisitor {
    type Value = RawPosition<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a position object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawPosition::default();
        while let Some(key) = map.next_key::<FieldKey>()? {
            raw.absorb(key, &mut map)?;
        }
        Ok(raw)
    }
    // Anything else is kept as "not an object" so the other items of the
    // batch are still decoded.
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawPosition::not_object("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawPosition::not_object("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawPosition::not_object("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawPosition::not_object("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawPosition::not_object("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawPosition::not_object("a string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawPosition::not_object("an array"))
    }
}

impl<'de> Deserialize<'de> for RawPosition<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawPositionVisitor)
    }
}

/// One rejected field of one position, as reported to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Index of the position in the request (0 for a single position).
    pub index: usize,
    /// The field, or `$` for the position as a whole.
    pub field: String,
    /// The rule that was broken.
    pub error: String,
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn unknown_field_message(name: &str) -> String {
    let suggestion = FIELDS
        .iter()
        .map(|f| (levenshtein(name, f), f))
        .min()
        .filter(|(d, _)| *d <= 2);
    match suggestion {
        Some((_, f)) => format!("is not a known field; did you mean {f:?}?"),
        None => format!("is not a known field (known: {})", FIELDS.join(", ")),
    }
}

impl<'a> RawPosition<'a> {
    fn not_object(json_type: &'static str) -> Self {
        Self {
            not_object: Some(json_type),
            ..Self::default()
        }
    }

    fn string(&self, i: usize, errors: &mut Vec<FieldError>) -> Option<&str> {
        match self.fields[i].as_ref()? {
            JsonValue::Null => None,
            JsonValue::Str(s) => Some(s),
            other => {
                errors.push(FieldError::new(
                    FIELDS[i],
                    format!("must be a string (got {})", other.type_name()),
                ));
                None
            }
        }
    }

    fn number(&self, i: usize, errors: &mut Vec<FieldError>) -> Option<f64> {
        match self.fields[i].as_ref()? {
            JsonValue::Null => None,
            JsonValue::Number(n) => Some(*n),
            other => {
                errors.push(FieldError::new(
                    FIELDS[i],
                    format!("must be a number (got {})", other.type_name()),
                ));
                None
            }
        }
    }

    /// Checks every rule. `Err` holds every broken rule, as client-facing
    /// rejections for the position at `index`.
    pub fn check(
        &self,
        index: usize,
        received_at: DateTime<Utc>,
        rules: &TimeRules,
    ) -> Result<Position, Vec<Rejection>> {
        let reject = |field: &str, error: String| Rejection {
            index,
            field: field.to_owned(),
            error,
        };
        if let Some(json_type) = self.not_object {
            return Err(vec![reject(
                "$",
                format!("each position must be a JSON object (got {json_type})"),
            )]);
        }
        let mut type_errors = Vec::new();
        let recorded_at = self.string(RECORDED_AT, &mut type_errors).and_then(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    type_errors.push(FieldError::new(
                        "recorded_at",
                        format!(
                            "must be an RFC 3339 timestamp such as 2026-11-24T10:15:30.250Z (got {text:?})"
                        ),
                    ))
                })
                .ok()
        });
        let unchecked = UncheckedPosition {
            event_id: self.string(EVENT_ID, &mut type_errors),
            courier_id: self.string(COURIER_ID, &mut type_errors),
            lat: self.number(LAT, &mut type_errors),
            lon: self.number(LON, &mut type_errors),
            recorded_at,
            accuracy_m: self.number(ACCURACY_M, &mut type_errors),
            speed_mps: self.number(SPEED_MPS, &mut type_errors),
            heading_deg: self.number(HEADING_DEG, &mut type_errors),
            order_id: self.string(ORDER_ID, &mut type_errors),
        };
        let result = Position::try_new(&unchecked, received_at, rules);
        if type_errors.is_empty() && self.unknown.is_empty() && self.duplicates.is_empty() {
            return result.map_err(|errors| {
                errors
                    .into_iter()
                    .map(|e| reject(e.field, e.message))
                    .collect()
            });
        }
        let mut rejections: Vec<Rejection> = self
            .unknown
            .iter()
            .map(|name| reject(name, unknown_field_message(name)))
            .collect();
        if self.unknown_count > self.unknown.len() {
            rejections.push(reject(
                "$",
                format!(
                    "{} more unknown fields not listed",
                    self.unknown_count - self.unknown.len()
                ),
            ));
        }
        rejections.extend(
            self.duplicates
                .iter()
                .map(|f| reject(f, "appears more than once".into())),
        );
        rejections.extend(
            type_errors
                .iter()
                .map(|e| reject(e.field, e.message.clone())),
        );
        if let Err(errors) = result {
            // A field with a type error is absent for the domain check: do not
            // also report it as missing.
            rejections.extend(
                errors
                    .into_iter()
                    .filter(|e| !type_errors.iter().any(|t| t.field == e.field))
                    .map(|e| reject(e.field, e.message)),
            );
        }
        Err(rejections)
    }
}

/// A request body: one position, or a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope<'a> {
    /// A single position object.
    Single(Box<RawPosition<'a>>),
    /// `{"positions": [...]}`.
    Batch(Vec<RawPosition<'a>>),
}

impl<'a> Envelope<'a> {
    /// The positions, in request order.
    pub fn positions(&self) -> &[RawPosition<'a>] {
        match self {
            Self::Single(p) => std::slice::from_ref(p.as_ref()),
            Self::Batch(v) => v,
        }
    }
}

enum EnvelopeKey {
    Positions,
    Field(FieldKey),
}

impl<'de> Deserialize<'de> for EnvelopeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnvelopeKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvelopeKey, E> {
                if v == "positions" {
                    Ok(EnvelopeKey::Positions)
                } else {
                    FieldKeyVisitor.visit_str(v).map(EnvelopeKey::Field)
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses the envelope with a batch limit: `positions` stops at `max_batch`
/// items (see [`PositionsSeed`]) and sets `over` when there are more.
struct EnvelopeVisitor<'c> {
    max_batch: usize,
    over: &'c Cell<bool>,
}

impl<'de> Visitor<'de> for EnvelopeVisitor<'_> {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a position object or {"positions": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut single = RawPosition::default();
        let mut single_keys = 0usize;
        let mut batch: Option<Vec<RawPosition<'de>>> = None;
        while let Some(key) = map.next_key::<EnvelopeKey>()? {
            match key {
                EnvelopeKey::Positions => {
                    if batch.is_some() {
                        return Err(de::Error::custom("\"positions\" appears more than once"));
                    }
                    batch = Some(map.next_value_seed(PositionsSeed {
                        max_batch: self.max_batch,
                        over: self.over,
                    })?);
                }
                EnvelopeKey::Field(key) => {
                    single_keys += 1;
                    single.absorb(key, &mut map)?;
                }
            }
        }
        match batch {
            Some(_) if single_keys > 0 => Err(de::Error::custom(
                "a body with \"positions\" must have no other field; send either one position object or {\"positions\": [...]}",
            )),
            Some(positions) => Ok(Envelope::Batch(positions)),
            None => Ok(Envelope::Single(Box::new(single))),
        }
    }
}

/// The `positions` array, read up to `max_batch` items: when one more item
/// follows, it is skipped without being kept, `over` is set and parsing
/// stops with an error, so a body of a million tiny items costs no more than
/// `max_batch` of them.
struct PositionsSeed<'c> {
    max_batch: usize,
    over: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for PositionsSeed<'_> {
    type Value = Vec<RawPosition<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<'c> {
            max_batch: usize,
            over: &'c Cell<bool>,
        }
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Vec<RawPosition<'de>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"positions\" to be an array of position objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let hint = seq.size_hint().unwrap_or(16);
                let mut out = Vec::with_capacity(hint.min(self.max_batch).min(1024));
                loop {
                    if out.len() == self.max_batch {
                        if seq.next_element::<IgnoredAny>()?.is_some() {
                            self.over.set(true);
                            return Err(de::Error::custom(format!(
                                "\"positions\" holds more than {} items",
                                self.max_batch
                            )));
                        }
                        return Ok(out);
                    }
                    match seq.next_element::<RawPosition<'de>>()? {
                        Some(p) => out.push(p),
                        None => return Ok(out),
                    }
                }
            }
        }
        d.deserialize_seq(V {
            max_batch: self.max_batch,
            over: self.over,
        })
    }
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    /// Without a batch limit; [`parse_body`] applies one while parsing.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let over = Cell::new(false);
        d.deserialize_map(EnvelopeVisitor {
            max_batch: usize::MAX,
            over: &over,
        })
    }
}

/// Why a body could not be read as positions at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON, or not the expected shape.
    #[error("{message} at line {line} column {column}")]
    Malformed {
        /// What is wrong.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The batch is empty or larger than allowed.
    #[error("\"positions\" must hold 1 to {max} items (got {})", batch_count(.got, .max))]
    BatchSize {
        /// Items sent, counted up to `max + 1`: parsing stops at the first
        /// item over the limit, so `max + 1` means "more than `max`".
        got: usize,
        /// The limit.
        max: usize,
    },
}

fn batch_count(got: &usize, max: &usize) -> String {
    if got > max {
        format!("more than {max}")
    } else {
        got.to_string()
    }
}

/// Parses a body. Strings are borrowed from `body` where they have no escapes.
/// A batch of more than `max_batch` items fails as soon as item
/// `max_batch + 1` is seen: the rest of the body is not parsed.
pub fn parse_body(body: &[u8], max_batch: usize) -> Result<Envelope<'_>, BodyError> {
    let over = Cell::new(false);
    let parsed = {
        let mut de = serde_json::Deserializer::from_slice(body);
        (&mut de)
            .deserialize_map(EnvelopeVisitor {
                max_batch,
                over: &over,
            })
            .and_then(|envelope| de.end().map(|()| envelope))
    };
    if over.get() {
        return Err(BodyError::BatchSize {
            got: max_batch.saturating_add(1),
            max: max_batch,
        });
    }
    let envelope: Envelope<'_> = parsed.map_err(|e| {
        let text = e.to_string();
        // serde_json appends " at line L column C"; keep the message clean.
        let message = match text.rfind(" at line ") {
            Some(i) => text[..i].to_owned(),
            None => text,
        };
        BodyError::Malformed {
            message,
            line: e.line(),
            column: e.column(),
        }
    })?;
    if let Envelope::Batch(items) = &envelope
        && (items.is_empty() || items.len() > max_batch)
    {
        return Err(BodyError::BatchSize {
            got: items.len(),
            max: max_batch,
        });
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    const GOOD: &str =
        r#"{"courier_id":"c-1","lat":-23.5,"lon":-46.6,"recorded_at":"2026-11-24T09:59:58Z"}"#;

    fn check_all(body: &str) -> Vec<Result<Position, Vec<Rejection>>> {
        let envelope = parse_body(body.as_bytes(), 1000).expect("parses");
        envelope
            .positions()
            .iter()
            .enumerate()
            .map(|(i, p)| p.check(i, now(), &TimeRules::default()))
            .collect()
    }

    #[test]
    fn a_single_position_object_is_accepted() {
        let results = check_all(GOOD);
        assert_eq!(results.len(), 1);
        let p = results[0].as_ref().expect("valid");
        assert_eq!(p.courier_id.as_str(), "c-1");
        assert_eq!(p.recorded_at, now() - TimeDelta::seconds(2));
    }

    #[test]
    fn a_batch_keeps_request_order_and_reports_each_bad_item() {
        let body = format!(r#"{{"positions": [{GOOD}, 42, {{"courier_id":"c-2"}}, {GOOD}]}}"#);
        let results = check_all(&body);
        assert!(results[0].is_ok() && results[3].is_ok());
        let not_object = results[1].as_ref().unwrap_err();
        assert_eq!(not_object[0].field, "$");
        assert!(not_object[0].error.contains("a number"));
        let missing: Vec<_> = results[2]
            .as_ref()
            .unwrap_err()
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(missing, [(2, "lat"), (2, "lon"), (2, "recorded_at")]);
    }

    #[test]
    fn an_unknown_field_is_rejected_with_a_suggestion() {
        let body =
            r#"{"courier_id":"c-1","latt":-23.5,"lon":-46.6,"recorded_at":"2026-11-24T09:59:58Z"}"#;
        let errors = check_all(body).remove(0).unwrap_err();
        assert_eq!(errors[0].field, "latt");
        assert!(
            errors[0].error.contains("did you mean \"lat\""),
            "{}",
            errors[0].error
        );
        // and lat itself is reported missing
        assert!(
            errors
                .iter()
                .any(|e| e.field == "lat" && e.error == "is required")
        );
    }

    #[test]
    fn a_wrong_type_is_named_and_not_also_reported_missing() {
        let body = r#"{"courier_id":7,"lat":"-23.5","lon":-46.6,"recorded_at":"yesterday"}"#;
        let errors = check_all(body).remove(0).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["recorded_at", "courier_id", "lat"]);
        assert!(errors[1].error.contains("must be a string (got a number)"));
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let body = r#"{"courier_id":"c-1","lat":1,"lon":2,"recorded_at":"2026-11-24T09:59:58Z","speed_mps":null,"order_id":null,"event_id":null}"#;
        assert!(check_all(body)[0].is_ok());
    }

    #[test]
    fn a_duplicate_field_is_rejected() {
        let body =
            r#"{"courier_id":"c-1","lat":1,"lat":2,"lon":2,"recorded_at":"2026-11-24T09:59:58Z"}"#;
        let errors = check_all(body).remove(0).unwrap_err();
        assert_eq!(errors[0].field, "lat");
        assert_eq!(errors[0].error, "appears more than once");
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = parse_body(b"{\n  \"lat\": 1,\n  oops\n}", 10).unwrap_err();
        match err {
            BodyError::Malformed { line, column, .. } => assert_eq!((line, column), (3, 3)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batch_size_limits_are_enforced() {
        assert_eq!(
            parse_body(br#"{"positions":[]}"#, 10),
            Err(BodyError::BatchSize { got: 0, max: 10 })
        );
        let body = format!(r#"{{"positions":[{}]}}"#, [GOOD; 3].join(","));
        assert_eq!(
            parse_body(body.as_bytes(), 2),
            Err(BodyError::BatchSize { got: 3, max: 2 })
        );
    }

    /// A 1 MiB body of empty items: the limit stops parsing at item
    /// `max + 1`, so at most `max` items are ever held.
    #[test]
    fn a_huge_batch_stops_parsing_at_the_limit() {
        let mut body = String::from(r#"{"positions":["#);
        while body.len() < 1024 * 1024 - 8 {
            body.push_str("{},");
        }
        body.push_str("{}]}");
        assert!(body.len() <= 1024 * 1024);
        let err = parse_body(body.as_bytes(), 1000).unwrap_err();
        assert_eq!(
            err,
            BodyError::BatchSize {
                got: 1001,
                max: 1000
            }
        );
        assert!(
            err.to_string()
                .contains("1 to 1000 items (got more than 1000)"),
            "{err}"
        );

        // Proof that the rest is not parsed: the same body broken right
        // after item 1001 still fails for its size, not for its syntax.
        let mut broken = String::from(r#"{"positions":["#);
        broken.push_str(&"{},".repeat(1001));
        broken.push_str("this is not JSON");
        broken.push_str(&"{},".repeat(300_000));
        assert_eq!(
            parse_body(broken.as_bytes(), 1000),
            Err(BodyError::BatchSize {
                got: 1001,
                max: 1000
            })
        );
        // ... while at the limit itself, the whole body is parsed.
        let mut exact = String::from(r#"{"positions":["#);
        exact.push_str(&["{}"; 1000].join(","));
        exact.push_str("]}");
        let envelope = parse_body(exact.as_bytes(), 1000).expect("1000 items parse");
        assert_eq!(envelope.positions().len(), 1000);
        let trailing = format!("{exact} x");
        assert!(matches!(
            parse_body(trailing.as_bytes(), 1000),
            Err(BodyError::Malformed { .. })
        ));
    }

    #[test]
    fn mixing_positions_with_fields_is_malformed() {
        let err = parse_body(br#"{"lat":1,"positions":[]}"#, 10).unwrap_err();
        assert!(matches!(err, BodyError::Malformed { .. }));
        let err = parse_body(b"[1,2]", 10).unwrap_err();
        assert!(matches!(err, BodyError::Malformed { .. }));
    }

    #[test]
    fn coordinates_survive_parsing_bit_for_bit() {
        // Without serde_json's float_roundtrip, this parses 1 ULP off.
        for text in [
            "-46.654199999999996",
            "-23.561400000000003",
            "0.1",
            "89.99999999999999",
        ] {
            let body = format!(
                r#"{{"courier_id":"c","lat":1,"lon":{text},"recorded_at":"2026-11-24T09:59:58Z"}}"#
            );
            let p = check_all(&body).remove(0).expect("valid");
            assert_eq!(
                p.lon.get().to_bits(),
                text.parse::<f64>().expect("f64").to_bits(),
                "{text}"
            );
        }
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let body =
            r#"{"courier_id":"c\u002d1","lat":1,"lon":2,"recorded_at":"2026-11-24T09:59:58Z"}"#;
        assert_eq!(
            check_all(body)[0]
                .as_ref()
                .expect("valid")
                .courier_id
                .as_str(),
            "c-1"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_give_an_error_or_positions_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(envelope) = parse_body(&body, 1000) {
                for (i, p) in envelope.positions().iter().enumerate() {
                    let _ = p.check(i, now(), &TimeRules::default());
                }
            }
        }

        #[test]
        fn any_json_position_gives_an_error_or_a_valid_position(
            courier in proptest::option::of("[ -~]{0,70}"),
            lat in proptest::option::of(any::<f64>()),
            lon in proptest::option::of(-200.0f64..200.0),
            recorded in proptest::option::of("[0-9TZ:.+-]{0,30}"),
            speed in proptest::option::of(any::<f64>()),
            heading in proptest::option::of(any::<f64>()),
            extra in proptest::option::of("[a-z_]{1,12}"),
        ) {
            let mut obj = serde_json::Map::new();
            if let Some(c) = courier { obj.insert("courier_id".into(), c.into()); }
            if let Some(v) = lat.filter(|v| v.is_finite()) { obj.insert("lat".into(), v.into()); }
            if let Some(v) = lon { obj.insert("lon".into(), v.into()); }
            if let Some(r) = recorded { obj.insert("recorded_at".into(), r.into()); }
            if let Some(v) = speed.filter(|v| v.is_finite()) { obj.insert("speed_mps".into(), v.into()); }
            if let Some(v) = heading.filter(|v| v.is_finite()) { obj.insert("heading_deg".into(), v.into()); }
            if let Some(k) = extra { obj.insert(k, serde_json::Value::Bool(true)); }
            let body = serde_json::to_vec(&serde_json::Value::Object(obj)).expect("json");
            let envelope = parse_body(&body, 1000).expect("valid JSON parses");
            match envelope.positions()[0].check(0, now(), &TimeRules::default()) {
                Ok(p) => {
                    prop_assert!((-90.0..=90.0).contains(&p.lat.get()));
                    prop_assert!((-180.0..=180.0).contains(&p.lon.get()));
                    prop_assert!(!p.courier_id.as_str().is_empty());
                }
                Err(rejections) => prop_assert!(!rejections.is_empty()),
            }
        }
    }
}
