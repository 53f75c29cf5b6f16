//! The batch body, `{"publications":[...]}`, read with two bounds that a whole-body parse
//! would not keep:
//! - it stops at `max_batch + 1` items, so a body of a million tiny items costs no more
//!   than a refused batch of the limit's size;
//! - each item stays raw JSON until it is parsed on its own, exactly as a single publish
//!   body is (duplicate keys refused), never through a map that lets the last key win.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Why a batch body was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BatchError {
    /// More than the allowed number of items.
    TooMany,
    /// Not a JSON object with exactly a `publications` array (serde_json's message).
    Invalid(String),
}

/// Parses the batch body into its raw items, at most `max`.
pub(crate) fn parse(bytes: &[u8], max: usize) -> Result<Vec<Box<RawValue>>, BatchError> {
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de::Deserializer::deserialize_map(&mut de, Body { max, over: &over })
        .and_then(|items| de.end().map(|()| items));
    parsed.map_err(|e| {
        if over.get() {
            BatchError::TooMany
        } else {
            BatchError::Invalid(e.to_string())
        }
    })
}

struct Body<'a> {
    max: usize,
    over: &'a Cell<bool>,
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = Vec<Box<RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object {\"publications\":[...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut items = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key != "publications" {
                return Err(de::Error::unknown_field(&key, &["publications"]));
            }
            if items.is_some() {
                return Err(de::Error::duplicate_field("publications"));
            }
            items = Some(map.next_value_seed(Items {
                max: self.max,
                over: self.over,
            })?);
        }
        items.ok_or_else(|| de::Error::missing_field("publications"))
    }
}

struct Items<'a> {
    max: usize,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = Vec<Box<RawValue>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = Vec<Box<RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of publications")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(item) = seq.next_element::<Box<RawValue>>()? {
            if out.len() == self.max {
                self.over.set(true);
                return Err(de::Error::custom("too many publications"));
            }
            out.push(item);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_past_the_limit_and_keeps_items_raw() {
        let items = parse(br#"{"publications":[{"a":1,"a":2}, 3]}"#, 2).unwrap();
        assert_eq!(
            items[0].get(),
            r#"{"a":1,"a":2}"#,
            "duplicates left for the item parse"
        );
        let many = format!("{{\"publications\":[{}0]}}", "0,".repeat(100_000));
        assert_eq!(
            parse(many.as_bytes(), 1000).err(),
            Some(BatchError::TooMany)
        );
        assert!(parse(&many.as_bytes()[..50], 1000).is_err());
        for bad in [
            &br#"{"publications":[],"publications":[]}"#[..],
            br#"{"publications":[], "x":1}"#,
            br#"{}"#,
            br#"[]"#,
            br#"{"publications":[]} x"#,
        ] {
            assert!(
                matches!(parse(bad, 10), Err(BatchError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
