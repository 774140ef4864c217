//! [`Request`]'s Deserialize: reads `id` and `op` from the request object, then hands
//! the rest of the object to the op's derived field code (`OpFields`) as it is parsed.
//!
//! The derived alternative (`#[serde(flatten)]` over an internally tagged enum) buffers
//! every request into serde's private content tree twice before the op sees a field.
//! Here a field written before `op` is kept as a [`Value`] until the op is known (the
//! clients write `id` and `op` first, so this is the rare case); every other field is
//! deserialized once, straight from the parser. Errors are serde's own (`unknown field`,
//! `missing field`, `unknown variant`, `invalid type`), as before.

use std::fmt;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, VariantAccess,
    Visitor,
};
use serde_json::Value;

use crate::{Op, OpFields, Request};

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor)
    }
}

/// A key or string value, borrowed from the input when it has no escapes.
enum Text<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Text<'de> {
    fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }

    /// Feeds this text to `seed` as a string.
    fn feed<S: DeserializeSeed<'de>, E: de::Error>(self, seed: S) -> Result<S::Value, E> {
        match self {
            Text::Borrowed(s) => seed.deserialize(de::value::BorrowedStrDeserializer::new(s)),
            Text::Owned(s) => seed.deserialize(s.into_deserializer()),
        }
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text::Owned(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text::Owned(s))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = Request;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a request: an object with `id` and `op`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
        let mut id = None;
        let mut early = Vec::new();
        let op = loop {
            let Some(key) = map.next_key::<Text<'de>>()? else {
                return Err(de::Error::missing_field("op"));
            };
            match key.as_str() {
                "id" => read_id(&mut map, &mut id)?,
                "op" => break map.next_value::<Text<'de>>()?,
                _ => {
                    let value = map.next_value::<Value>()?;
                    early.push((key, value));
                }
            }
        };
        let mut fields = Fields {
            map,
            id: &mut id,
            early: early.into_iter(),
            pending: None,
        };
        let op = OpFields::deserialize(OpDeserializer {
            name: op,
            fields: &mut fields,
        })?;
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        Ok(Request {
            id,
            op: Op::from(op),
        })
    }
}

fn read_id<'de, A: MapAccess<'de>>(map: &mut A, id: &mut Option<u64>) -> Result<(), A::Error> {
    if id.is_some() {
        return Err(de::Error::duplicate_field("id"));
    }
    *id = Some(map.next_value()?);
    Ok(())
}

/// The op's fields: those read before `op`, then the rest of the request's map, less
/// `id` (taken for the request).
struct Fields<'a, 'de, A> {
    map: A,
    id: &'a mut Option<u64>,
    early: std::vec::IntoIter<(Text<'de>, Value)>,
    pending: Option<Value>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Fields<'_, 'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if let Some((key, value)) = self.early.next() {
            self.pending = Some(value);
            return key.feed(seed).map(Some);
        }
        loop {
            let Some(key) = self.map.next_key::<Text<'de>>()? else {
                return Ok(None);
            };
            match key.as_str() {
                "id" => read_id(&mut self.map, self.id)?,
                "op" => return Err(de::Error::duplicate_field("op")),
                _ => return key.feed(seed).map(Some),
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.pending.take() {
            Some(value) => seed.deserialize(value).map_err(de::Error::custom),
            None => self.map.next_value_seed(seed),
        }
    }
}

/// Presents the op as an externally tagged enum: its name, then its fields.
struct OpDeserializer<'a, 'de, A> {
    name: Text<'de>,
    fields: &'a mut A,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for OpDeserializer<'_, 'de, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'a, 'de, A: MapAccess<'de>> EnumAccess<'de> for OpDeserializer<'a, 'de, A> {
    type Error = A::Error;
    type Variant = FieldsOf<'a, A>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, FieldsOf<'a, A>), A::Error> {
        let variant = self.name.feed(seed)?;
        Ok((variant, FieldsOf(self.fields)))
    }
}

/// The op's variant: always a struct variant, whose fields are the request's.
struct FieldsOf<'a, A>(&'a mut A);

impl<'de, A: MapAccess<'de>> VariantAccess<'de> for FieldsOf<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        Err(de::Error::invalid_type(
            de::Unexpected::StructVariant,
            &"a unit variant",
        ))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, A::Error> {
        Err(de::Error::invalid_type(
            de::Unexpected::StructVariant,
            &"a newtype variant",
        ))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, A::Error> {
        Err(de::Error::invalid_type(
            de::Unexpected::StructVariant,
            &"a tuple variant",
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(&mut *self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, String> {
        serde_json::from_str::<Request>(text).map_err(|e| e.to_string())
    }

    /// What the derived, internally tagged [`Op`] makes of the same object without `id`.
    fn derived(text: &str) -> Result<Op, String> {
        let mut value: Value = serde_json::from_str(text).unwrap();
        value.as_object_mut().unwrap().remove("id");
        serde_json::from_value::<Op>(value).map_err(|e| e.to_string())
    }

    #[test]
    fn fields_in_any_order_give_what_the_derived_op_gives() {
        for text in [
            r#"{"id":1,"op":"counter_add","counter":"c","delta":2}"#,
            r#"{"op":"counter_add","id":2,"counter":"c","delta":2}"#,
            r#"{"counter":"c","delta":-3,"op":"counter_add","id":3}"#,
            r#"{"id":4,"counter":"c","op":"counter_get"}"#,
            r#"{"id":5,"op":"queue_put","queue":"q","value":{"a":[1,"x\n",null]}}"#,
            r#"{"id":6,"value":[1,2],"op":"queue_put","queue":"q","block":false}"#,
            r#"{"id":7,"op":"logs","unit":"a"}"#,
            r#"{"id":8,"op":"timers"}"#,
            r#"{"id":9,"op":"q\u0075eue_len","\u0071ueue":"esc\"aped"}"#,
            r#"{"id":10,"op":"array_create","array":"a","kind":"f64","length":4}"#,
        ] {
            let request = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(Ok(request.op), derived(text), "{text}");
            let id: Value = serde_json::from_str(text).unwrap();
            assert_eq!(Some(request.id), id["id"].as_u64(), "{text}");
        }
    }

    #[test]
    fn bad_requests_fail_with_serdes_messages() {
        for (text, wanted) in [
            (r#"{"id":1}"#, "missing field `op`"),
            (r#"{"op":"status"}"#, "missing field `id`"),
            (
                r#"{"id":1,"op":"frobnicate"}"#,
                "unknown variant `frobnicate`",
            ),
            (r#"{"id":1,"op":7}"#, "invalid type: integer `7`"),
            (r#"{"id":1,"op":"counter_get"}"#, "missing field `counter`"),
            (
                r#"{"id":1,"op":"counter_get","counter":"c","x":1}"#,
                "unknown field `x`",
            ),
            (
                r#"{"x":1,"id":1,"op":"counter_get","counter":"c"}"#,
                "unknown field `x`",
            ),
            (
                r#"{"id":1,"op":"counter_add","counter":"c","delta":"1"}"#,
                "invalid type: string \"1\", expected i64",
            ),
            (
                r#"{"delta":"1","id":1,"op":"counter_add","counter":"c"}"#,
                "invalid type: string \"1\", expected i64",
            ),
            (
                r#"{"id":1,"op":"array_create","array":"a","kind":"i32","length":4}"#,
                "unknown variant `i32`, expected `i64` or `f64`",
            ),
            (r#"{"id":1,"op":"status","id":2}"#, "duplicate field `id`"),
            (
                r#"{"id":1,"op":"status","op":"status"}"#,
                "duplicate field `op`",
            ),
            (r#"{"id":-1,"op":"status"}"#, "invalid value: integer `-1`"),
            (r#"[1,2]"#, "invalid type: sequence"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(
                error.contains(wanted),
                "{text}: {error} should say {wanted}"
            );
        }
    }
}
