//! The engine's JSON payloads, written byte for byte as `serde_json`'s
//! compact writer writes them, faster: a text that needs no escape (almost
//! every one) is checked in one branch-free pass and copied whole, where
//! `serde_json` looks each byte up and branches on it, and keys and values
//! go straight into one buffer. What this writer does not handle itself
//! (map keys other than texts and integers) makes it give up, and the
//! caller writes the record with `serde_json` instead; floats are written
//! by `serde_json` itself. The property tests below
//! (`fast_json_is_serde_json_for_every_record` and the others) hold the
//! two to the same bytes.

use std::fmt::Display;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Why the fast writer stopped: the value needs `serde_json` (or failed
/// there, or in its own `Serialize`).
#[derive(Debug)]
pub(crate) struct GiveUp;

impl Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not written by the fast json writer")
    }
}

impl std::error::Error for GiveUp {}

impl ser::Error for GiveUp {
    fn custom<T: Display>(_: T) -> Self {
        Self
    }
}

/// `value` as compact JSON, exactly as `serde_json::to_writer` writes it,
/// appended to `out`; on `Err` the caller truncates `out` and uses
/// `serde_json`.
pub(crate) fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), GiveUp> {
    value.serialize(&mut Writer { out })
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `b` must be escaped inside a JSON string (as `serde_json`'s
/// table says: control characters, `"` and `\`).
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `bytes` needs an escape, eight bytes at a time
/// (most texts are short keys and values, too short for a vector loop to
/// pay its set-up). A text's last bytes are read as the eight that end
/// it, overlapping the words before (a byte checked twice is the same
/// answer), not copied into a padded word: that copy's bytes, read back
/// at once as one word, waited for the copy to land and were half of this
/// writer's time. A text of four to seven bytes is one word of its first
/// four and its last four (most keys), a shorter one checked byte by byte.
fn any_needs_escape(bytes: &[u8]) -> bool {
    let Some(last) = bytes.len().checked_sub(8) else {
        let Some(tail) = bytes.len().checked_sub(4) else {
            return bytes.iter().any(|&b| needs_escape(b));
        };
        let half = |h: &[u8]| u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
        return word_needs_escape(half(bytes) | half(&bytes[tail..]) << 32);
    };
    let mut any = false;
    for w in bytes.chunks_exact(8) {
        any |= word_needs_escape(word(w));
    }
    any | word_needs_escape(word(&bytes[last..]))
}

/// The first eight bytes of `w` (which holds at least eight) as a word.
fn word(w: &[u8]) -> u64 {
    u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
}

/// Whether one of the eight bytes of `w` needs an escape: a byte below
/// 0x20, `"` or `\` (the exact tests for a zero byte and for a byte below
/// a bound of at most 0x80, on the word and on the word xor each quote).
const fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const fn has_zero(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = has_zero(w ^ (ONES * b'"' as u64));
    let backslash = has_zero(w ^ (ONES * b'\\' as u64));
    control | quote | backslash != 0
}

impl Writer<'_> {
    fn string(&mut self, s: &str) {
        let bytes = s.as_bytes();
        if !any_needs_escape(bytes) {
            // One copy of the quotes and the text together.
            self.out.reserve(bytes.len() + 2);
            self.out.push(b'"');
            self.out.extend_from_slice(bytes);
            self.out.push(b'"');
            return;
        }
        self.out.reserve(bytes.len() + 2);
        self.out.push(b'"');
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if !needs_escape(b) {
                continue;
            }
            self.out.extend_from_slice(&bytes[start..i]);
            start = i + 1;
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                _ => 0,
            };
            if short == 0 {
                self.out.extend_from_slice(b"\\u00");
                self.out.push(HEX[usize::from(b >> 4)]);
                self.out.push(HEX[usize::from(b & 0xf)]);
            } else {
                self.out.extend_from_slice(&[b'\\', short]);
            }
        }
        self.out.extend_from_slice(&bytes[start..]);
        self.out.push(b'"');
    }

    fn unsigned(&mut self, v: u128) {
        let mut buf = [0u8; 40];
        let mut at = buf.len();
        let mut v = v;
        loop {
            at -= 1;
            buf[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&buf[at..]);
    }

    fn signed(&mut self, v: i128) {
        if v < 0 {
            self.out.push(b'-');
        }
        self.unsigned(v.unsigned_abs());
    }

    /// A float as `serde_json` writes it (shortest round trip, `null` for
    /// what JSON cannot hold).
    fn float<F: Serialize>(&mut self, v: F) -> Result<(), GiveUp> {
        serde_json::to_writer(&mut *self.out, &v).map_err(|_| GiveUp)
    }
}

/// A sequence or map being written: whether an element was written yet.
struct Compound<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
    /// The bytes that close it.
    close: &'static [u8],
}

impl Compound<'_, '_> {
    fn comma(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.w.out.push(b',');
        }
    }

    fn key(&mut self, key: &str) {
        self.comma();
        self.w.string(key);
        self.w.out.push(b':');
    }

    fn end(self) -> Result<(), GiveUp> {
        self.w.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl<'w, 'a> Writer<'a> {
    fn open(&'w mut self, open: &[u8], close: &'static [u8]) -> Compound<'w, 'a> {
        self.out.extend_from_slice(open);
        Compound { w: self, first: true, close }
    }

    /// `{"variant":` before a variant's content; closed by one more `}`.
    fn tagged(&mut self, variant: &str) {
        self.out.push(b'{');
        self.string(variant);
        self.out.push(b':');
    }
}

/// The ten integer methods of a serializer `self`: `signed(self, i128)`
/// and `unsigned(self, u128)`.
macro_rules! integers {
    (|$s:ident, $v:ident| $signed:expr, |$us:ident, $uv:ident| $unsigned:expr) => {
        integers!(@one $s $v $signed, i128, serialize_i8 i8, serialize_i16 i16, serialize_i32 i32, serialize_i64 i64, serialize_i128 i128);
        integers!(@one $us $uv $unsigned, u128, serialize_u8 u8, serialize_u16 u16, serialize_u32 u32, serialize_u64 u64, serialize_u128 u128);
    };
    (@one $s:ident $v:ident $body:expr, $wide:ty, $($method:ident $ty:ty),*) => {$(
        fn $method(self, v: $ty) -> Result<(), GiveUp> {
            let ($s, $v) = (self, <$wide>::from(v));
            $body
        }
    )*};
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = GiveUp;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = Compound<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), GiveUp> {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    integers!(
        |w, v| {
            w.signed(v);
            Ok(())
        },
        |w, v| {
            w.unsigned(v);
            Ok(())
        }
    );
    fn serialize_f32(self, v: f32) -> Result<(), GiveUp> {
        self.float(v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), GiveUp> {
        self.float(v)
    }
    fn serialize_char(self, v: char) -> Result<(), GiveUp> {
        self.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), GiveUp> {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), GiveUp> {
        let mut seq = self.open(b"[", b"]");
        for b in v {
            seq.comma();
            seq.w.unsigned(u128::from(*b));
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<(), GiveUp> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), GiveUp> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), GiveUp> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), GiveUp> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), GiveUp> {
        self.string(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), GiveUp> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), GiveUp> {
        self.tagged(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(self.open(b"[", b"]"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(self.open(b"[", b"]"))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(self.open(b"[", b"]"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, GiveUp> {
        self.tagged(variant);
        Ok(self.open(b"[", b"]}"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(self.open(b"{", b"}"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(self.open(b"{", b"}"))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, GiveUp> {
        self.tagged(variant);
        Ok(self.open(b"{", b"}}"))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
        self.comma();
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), GiveUp> {
        Compound::end(self)
    }
}

/// The other sequences: written as [`ser::SerializeSeq`] writes them.
macro_rules! like_seq {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = GiveUp;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
                ser::SerializeSeq::serialize_element(self, value)
            }
            fn end(self) -> Result<(), GiveUp> {
                Compound::end(self)
            }
        }
    )*};
}

like_seq!(
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), GiveUp> {
        self.comma();
        key.serialize(MapKey { w: &mut *self.w })?;
        self.w.out.push(b':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), GiveUp> {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), GiveUp> {
        self.key(key);
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), GiveUp> {
        Compound::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), GiveUp> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<(), GiveUp> {
        Compound::end(self)
    }
}

/// A map key: a text, or an integer written as a text (as `serde_json`
/// writes them); anything else gives up.
struct MapKey<'w, 'a> {
    w: &'w mut Writer<'a>,
}

impl MapKey<'_, '_> {
    fn quoted(self, write: impl FnOnce(&mut Writer<'_>)) -> Result<(), GiveUp> {
        self.w.out.push(b'"');
        write(self.w);
        self.w.out.push(b'"');
        Ok(())
    }
}

impl ser::Serializer for MapKey<'_, '_> {
    type Ok = ();
    type Error = GiveUp;
    type SerializeSeq = Impossible<(), GiveUp>;
    type SerializeTuple = Impossible<(), GiveUp>;
    type SerializeTupleStruct = Impossible<(), GiveUp>;
    type SerializeTupleVariant = Impossible<(), GiveUp>;
    type SerializeMap = Impossible<(), GiveUp>;
    type SerializeStruct = Impossible<(), GiveUp>;
    type SerializeStructVariant = Impossible<(), GiveUp>;

    fn serialize_str(self, v: &str) -> Result<(), GiveUp> {
        self.w.string(v);
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), GiveUp> {
        self.w.string(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), GiveUp> {
        value.serialize(self)
    }
    integers!(|k, v| k.quoted(|w| w.signed(v)), |k, v| k.quoted(|w| w.unsigned(v)));
    fn serialize_bool(self, _: bool) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_f32(self, _: f32) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_f64(self, _: f64) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_char(self, _: char) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_none(self) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_unit(self) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), GiveUp> {
        Err(GiveUp)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, GiveUp> {
        Err(GiveUp)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Serialize;

    use super::write;

    fn both<T: Serialize + ?Sized>(value: &T) -> (Result<Vec<u8>, super::GiveUp>, Vec<u8>) {
        let mut ours = Vec::new();
        let ours = write(&mut ours, value).map(|()| ours);
        (ours, serde_json::to_vec(value).unwrap())
    }

    fn same<T: Serialize + ?Sized>(value: &T) {
        let (ours, theirs) = both(value);
        assert_eq!(
            String::from_utf8_lossy(&ours.unwrap()),
            String::from_utf8_lossy(&theirs),
            "the fast writer differs from serde_json"
        );
    }

    /// Every byte value in every place of a word, beside bytes that need
    /// no escape and beside one that does.
    #[test]
    fn a_word_needs_an_escape_iff_one_of_its_bytes_does() {
        for b in 0..=255u8 {
            for at in 0..8 {
                for fill in [b'a', 0xff, b' ', 0x80, b'"'] {
                    let mut w = [fill; 8];
                    w[at] = b;
                    let want = w.iter().any(|&x| super::needs_escape(x));
                    assert_eq!(super::word_needs_escape(u64::from_le_bytes(w)), want, "{w:?}");
                    assert_eq!(
                        super::any_needs_escape(&w[..=at]),
                        w[..=at].iter().any(|&x| super::needs_escape(x))
                    );
                }
            }
        }
    }

    /// Every length up to three words, every byte value at every place,
    /// beside fillers that need no escape: the last word, read where the
    /// text ends (overlapping the one before), misses no byte.
    #[test]
    fn a_text_needs_an_escape_iff_one_of_its_bytes_does_at_every_length_and_place() {
        for len in 0..=24 {
            for fill in [b'a', 0xff, b' ', 0x80] {
                let clean = vec![fill; len];
                assert!(!super::any_needs_escape(&clean), "{clean:?}");
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut t = clean.clone();
                        t[at] = b;
                        assert_eq!(super::any_needs_escape(&t), super::needs_escape(b), "{t:?}");
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_needs_escape_is_the_byte_test(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(super::any_needs_escape(&bytes), bytes.iter().any(|&b| super::needs_escape(b)));
        }

        #[test]
        fn fast_json_is_serde_json_for_every_record(record in privtel_testkit::record()) {
            let (ours, theirs) = both(&record);
            prop_assert_eq!(ours.unwrap(), theirs);
        }

        #[test]
        fn fast_json_escapes_every_text_as_serde_json(s in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            // Any char, and every byte below 0x80 (controls, quote,
            // backslash, DEL) in every position.
            let ascii: String = bytes.iter().map(|b| char::from(b & 0x7f)).collect();
            for text in [&s, &ascii, &format!("{ascii}{s}\"\\")] {
                let (ours, theirs) = both(text);
                prop_assert_eq!(ours.unwrap(), theirs);
            }
        }

        #[test]
        fn fast_json_writes_numbers_as_serde_json(i in any::<i128>(), u in any::<u128>(), f in any::<f64>(), g in any::<f32>()) {
            for (ours, theirs) in [both(&i), both(&u), both(&(i as i64)), both(&(u as u8)), both(&f), both(&g)] {
                prop_assert_eq!(ours.unwrap(), theirs);
            }
        }
    }

    #[derive(Serialize)]
    enum Shapes {
        Unit,
        Newtype(u32),
        Tuple(u8, Option<String>),
        Struct { a: Vec<u8>, b: () },
    }

    #[derive(Serialize)]
    struct Wrapper(Vec<Shapes>);

    #[test]
    fn fast_json_writes_every_shape_as_serde_json() {
        same(&Wrapper(vec![
            Shapes::Unit,
            Shapes::Newtype(7),
            Shapes::Tuple(1, None),
            Shapes::Tuple(2, Some("x\ny".into())),
            Shapes::Struct { a: vec![], b: () },
            Shapes::Struct { a: vec![0, 255], b: () },
        ]));
        same(&(true, false, 'é', '"', f64::NAN, f64::INFINITY, -0.0f64, 1e300f64, 0.1f32));
        same(&serde_bytes_like(&[1, 2, 3]));
        same(&Vec::<u8>::new());
        same(&BTreeMap::from([("k\"1", 1), ("k2", 2)]));
        same(&BTreeMap::from([(-3i64, "a"), (4, "b")]));
        same(&BTreeMap::from([(u128::MAX, ())]));
        same(&BTreeMap::<String, u8>::new());
        same(&Some(Some(3u8)));
        same(&None::<u8>);
    }

    /// Bytes through `serialize_bytes`.
    fn serde_bytes_like(b: &[u8]) -> impl Serialize + '_ {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(b)
    }

    #[test]
    fn keys_it_cannot_write_make_it_give_up_not_differ() {
        let mut out = Vec::new();
        assert!(write(&mut out, &BTreeMap::from([(true, 1)])).is_err());
        assert!(write(&mut out, &BTreeMap::from([((1, 2), 1)])).is_err());
    }
}
