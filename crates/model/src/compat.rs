//! Serialized forms that keep rows written by earlier versions readable.
//!
//! [`personal_text`] is for a field that was plain text (`String`) and
//! became personal (`Personal<String>`), such as [`crate::Binary::file_name`]:
//!
//! * JSON (human-readable): a clear value is the text itself, as before;
//!   a withheld value is `null`; a pseudonym or a generalised value is the
//!   tagged object `Personal` has elsewhere (`{"pseudonym": "k1:…"}`). Any
//!   tagged `Personal` object (`{"clear": "…"}`, `"withheld"`) also reads.
//! * bincode (binary): a clear value is the text itself (its length, then
//!   its bytes), as before; any other form is the marker length
//!   [`NOT_CLEAR`] (`u64::MAX`, which no text can have: decoders refuse a
//!   length beyond their size limit) followed by the `Personal` value. An
//!   old decoder refuses a marked value instead of misreading it.

/// The length that marks a non-clear value in binary formats.
pub(crate) const NOT_CLEAR: u64 = u64::MAX;

pub(crate) mod personal_text {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeTuple as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::NOT_CLEAR;
    use crate::personal::Personal;

    /// The text form (JSON) of a value, as written: a text (clear), null
    /// (withheld) or the tagged object. Read by a visitor rather than an
    /// untagged enum: an untagged enum buffers the value and reads it
    /// again, so a deserializer that reports members the model ignores
    /// (the JetStream writer's check that a record's bytes are exactly the
    /// record) would not see those inside the object.
    struct ReadableVisitor;

    impl<'de> Visitor<'de> for ReadableVisitor {
        type Value = Personal<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a text, null or a personal value")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Personal::Clear(text.to_owned()))
        }

        fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
            Ok(Personal::Clear(text))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Personal::Withheld)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Personal::Withheld)
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Personal::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    pub(crate) fn serialize<S: Serializer>(value: &Personal<String>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Personal::Clear(text) => s.serialize_str(text),
            Personal::Withheld if s.is_human_readable() => s.serialize_none(),
            other if s.is_human_readable() => other.serialize(s),
            other => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&NOT_CLEAR)?;
                t.serialize_element(other)?;
                t.end()
            }
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Personal<String>, D::Error> {
        if d.is_human_readable() {
            return d.deserialize_any(ReadableVisitor);
        }
        // A tuple "long enough": the visitor reads the length, then either
        // that many bytes or the marked value. Binary formats read elements
        // one by one and do not check that the declared length was used.
        d.deserialize_tuple(usize::MAX, BinaryVisitor)
    }

    struct BinaryVisitor;

    impl<'de> Visitor<'de> for BinaryVisitor {
        type Value = Personal<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a text or a marked personal value")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let missing = || de::Error::custom("a personal text ended early");
            let len: u64 = seq.next_element()?.ok_or_else(missing)?;
            if len == NOT_CLEAR {
                return seq.next_element()?.ok_or_else(missing);
            }
            // Never reserve what the input has not shown: a corrupt length
            // ends at the input's end (or its size limit), not in memory.
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(256));
            for _ in 0..len {
                bytes.push(seq.next_element::<u8>()?.ok_or_else(missing)?);
            }
            String::from_utf8(bytes).map(Personal::Clear).map_err(|_| de::Error::custom("text is not utf-8"))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use crate::generalised::Generalised;
    use crate::personal::Personal;
    use crate::pseudonym::{KeyId, Pseudonym};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Old {
        a: u32,
        name: String,
        b: u8,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct New {
        a: u32,
        #[serde(with = "super::personal_text")]
        name: Personal<String>,
        b: u8,
    }

    fn forms() -> Vec<Personal<String>> {
        vec![
            Personal::Clear("tool.exe".into()),
            Personal::Clear(String::new()),
            Personal::Clear("é".repeat(300)),
            Personal::Clear("withheld".into()),
            Personal::Withheld,
            Personal::Pseudonym(Pseudonym::new(KeyId::new(7), [9; 16])),
            Personal::Generalised(Generalised::Text("x".into())),
        ]
    }

    #[test]
    fn old_rows_read_and_clear_values_write_as_before() {
        let cfg = bincode::config::standard();
        for text in ["tool.exe", "", &"é".repeat(300)] {
            let old = Old { a: 5, name: text.to_owned(), b: 9 };
            let new = New { a: 5, name: Personal::Clear(text.to_owned()), b: 9 };
            let old_bin = bincode::serde::encode_to_vec(&old, cfg).unwrap();
            assert_eq!(bincode::serde::encode_to_vec(&new, cfg).unwrap(), old_bin, "same bytes");
            let (read, used): (New, usize) = bincode::serde::decode_from_slice(&old_bin, cfg).unwrap();
            assert_eq!((read, used), (new, old_bin.len()));
            let old_json = serde_json::to_string(&old).unwrap();
            assert_eq!(
                serde_json::from_str::<New>(&old_json).unwrap().name,
                Personal::Clear(text.to_owned())
            );
        }
    }

    #[test]
    fn every_form_round_trips_in_json_and_bincode() {
        let cfg = bincode::config::standard();
        for name in forms() {
            let new = New { a: 1, name, b: 2 };
            let bin = bincode::serde::encode_to_vec(&new, cfg).unwrap();
            let (read, used): (New, usize) = bincode::serde::decode_from_slice(&bin, cfg).unwrap();
            assert_eq!((&read, used), (&new, bin.len()));
            let json = serde_json::to_string(&new).unwrap();
            assert_eq!(serde_json::from_str::<New>(&json).unwrap(), new, "{json}");
        }
        // Tagged forms read too.
        let tagged = r#"{"a":1,"name":{"clear":"t"},"b":2}"#;
        assert_eq!(serde_json::from_str::<New>(tagged).unwrap().name, Personal::Clear("t".into()));
        let tagged = r#"{"a":1,"name":"withheld","b":2}"#;
        assert_eq!(serde_json::from_str::<New>(tagged).unwrap().name, Personal::Clear("withheld".into()));
    }

    #[test]
    fn an_old_decoder_refuses_a_marked_value() {
        let cfg = bincode::config::standard().with_limit::<{ 1 << 20 }>();
        let new = New { a: 1, name: Personal::Withheld, b: 2 };
        let bin = bincode::serde::encode_to_vec(&new, cfg).unwrap();
        assert!(bincode::serde::decode_from_slice::<Old, _>(&bin, cfg).is_err());
        // Truncated and corrupt input is an error, not a panic.
        for cut in 0..bin.len() {
            assert!(bincode::serde::decode_from_slice::<New, _>(&bin[..cut], cfg).is_err(), "{cut}");
        }
        let mut huge = vec![1];
        huge.extend_from_slice(&[252, 0xff, 0xff, 0xff, 0x7f]);
        assert!(bincode::serde::decode_from_slice::<New, _>(&huge, cfg).is_err());
    }
}
