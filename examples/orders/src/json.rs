//! Strict JSON: a document whose objects repeat a key is refused, not guessed at (`serde_json`
//! keeps the last value silently).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as one JSON document with no repeated object key at any depth.
///
/// # Errors
///
/// Not JSON, trailing bytes, nesting deeper than `serde_json`'s limit (128), or a repeated key;
/// the message says which and where.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(Strict)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut list = Vec::new();
        while let Some(value) = seq.next_element_seed(Strict)? {
            list.push(value);
        }
        Ok(Value::Array(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let value = map.next_value_seed(Strict)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        let error = parse_strict(br#"{"a": 1, "a": 2}"#).expect_err("duplicate");
        assert!(error.to_string().contains("duplicate key \"a\""), "{error}");
        let nested = br#"{"items": [{"sku": "x", "sku": "y"}]}"#;
        assert!(parse_strict(nested).is_err());
        // The same key in sibling objects is fine.
        let siblings = br#"{"items": [{"sku": "x"}, {"sku": "y"}]}"#;
        assert_eq!(
            parse_strict(siblings).expect("valid")["items"][1]["sku"],
            "y"
        );
    }

    #[test]
    fn it_reads_what_serde_json_reads() {
        let text = br#"{"s": "\u00e9", "n": -1, "u": 18446744073709551615, "f": 1.5, "z": null, "b": [true, {}]}"#;
        let strict = parse_strict(text).expect("valid");
        let loose: Value = serde_json::from_slice(text).expect("valid");
        assert_eq!(strict, loose);
        assert!(parse_strict(b"{} x").is_err());
        assert!(parse_strict(b"").is_err());
    }
}
