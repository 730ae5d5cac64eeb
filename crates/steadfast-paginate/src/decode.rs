//! One-pass page decoding: the items array at a JSON pointer goes straight
//! into `Vec<T>`, and the rest of the body becomes a [`Rest`] that
//! strategies read their cursor, flag or total from.
//!
//! Decoding `T` straight from the bytes (rather than bytes → `Value` → `T`)
//! is what keeps the paginator as cheap as a hand-written loop over a typed
//! envelope; the items are never materialised twice.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserializer as _;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// A page body could not be decoded.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON, the value at the pointer is not an array, or an
    /// item does not match the item type.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Nothing at the items pointer.
    #[error("no items at this JSON pointer; point `items_at` at the array of items")]
    Missing,
}

/// A validated RFC 6901 JSON pointer, split into unescaped reference tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pointer {
    text: String,
    tokens: Vec<String>,
}

/// A string that is not an RFC 6901 JSON pointer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{pointer:?} is not a JSON pointer (RFC 6901): use \"\" for the whole body or \"/field/0/name\", with ~0 for '~' and ~1 for '/'"
)]
pub struct PointerError {
    pointer: String,
}

impl Pointer {
    pub(crate) fn parse(text: &str) -> Result<Self, PointerError> {
        let err = || PointerError {
            pointer: text.to_owned(),
        };
        if text.is_empty() {
            return Ok(Self {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let rest = text.strip_prefix('/').ok_or_else(err)?;
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => return Err(err()),
                    }
                } else {
                    token.push(c);
                }
            }
            tokens.push(token);
        }
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

/// A JSON pointer a strategy reads: parsed once when configured (errors
/// reported by `Strategy::validate`), looked up per page without
/// allocating.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    text: String,
    tokens: Result<Vec<String>, PointerError>,
}

impl Field {
    pub(crate) fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let tokens = Pointer::parse(&text).map(|p| p.tokens);
        Self { text, tokens }
    }

    pub(crate) fn check(&self) -> Result<(), PointerError> {
        self.tokens.as_ref().map(drop).map_err(Clone::clone)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The reference tokens; `None` when the pointer is invalid.
    pub(crate) fn tokens(&self) -> Option<&[String]> {
        self.tokens.as_deref().ok()
    }

    /// The value at this pointer (RFC 6901), if any.
    pub(crate) fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.tokens
            .as_ref()
            .ok()?
            .iter()
            .try_fold(value, |v, token| match v {
                Value::Object(map) => map.get(token),
                Value::Array(items) => items.get(array_index(token)?),
                _ => None,
            })
    }
}

/// A decoded page: the items, the rest of the body, and the last item as
/// JSON (parsed, and where its text is in the body) when a strategy asked
/// for it.
#[derive(Debug)]
pub(crate) struct Decoded<T> {
    pub(crate) rest: Rest,
    pub(crate) items: Vec<T>,
    pub(crate) last_item: Option<Value>,
    pub(crate) last_raw: Option<Range<usize>>,
}

/// Decodes `body`: the array at `items` into `Vec<T>` (JSON `null` reads as
/// no items), everything else into a [`Rest`] with `null` where the array
/// was.
pub(crate) fn decode_page<T: DeserializeOwned>(
    body: Bytes,
    items: &Pointer,
    keep_last: bool,
) -> Result<Decoded<T>, DecodeError> {
    if !keep_last {
        return decode_with::<T>(body, items, false);
    }
    match decode_with::<T>(body.clone(), items, true) {
        // With `keep_last` each item is decoded from its own text, so an
        // error's line and column are relative to the item. Decoding the
        // page again the plain way (only on this error path) reports them
        // in the page, as the plain path always does.
        Err(e) => Err(decode_with::<T>(body, items, false).err().unwrap_or(e)),
        decoded => decoded,
    }
}

fn decode_with<T: DeserializeOwned>(
    body: Bytes,
    items: &Pointer,
    keep_last: bool,
) -> Result<Decoded<T>, DecodeError> {
    let mut slot = Slot {
        items: None,
        last: None,
        keep_last,
        base: body.as_ptr() as usize,
    };
    let mut de = serde_json::Deserializer::from_slice(&body);
    let repr = match items.tokens.as_slice() {
        // The common shape, `{"data": [..], "next": ..}`: the other members
        // stay raw until someone reads them.
        [key] => {
            let mut fields = Vec::new();
            let mut items_key = None;
            let eager = de.deserialize_any(TopLevel {
                key,
                base: body.as_ptr() as usize,
                fields: &mut fields,
                items_key: &mut items_key,
                slot: &mut slot,
            })?;
            match eager {
                Some(value) => Repr::Eager(value),
                None => Repr::Lazy { fields, items_key },
            }
        }
        path => Repr::Eager(
            Seed {
                path,
                slot: &mut slot,
            }
            .deserialize(&mut de)?,
        ),
    };
    de.end()?;
    let last_raw = slot.last;
    let last_item = match &last_raw {
        Some(range) => Some(serde_json::from_slice(&body[range.clone()])?),
        None => None,
    };
    Ok(Decoded {
        rest: Rest {
            bytes: body,
            repr,
            value: OnceLock::new(),
        },
        items: slot.items.ok_or(DecodeError::Missing)?,
        last_item,
        last_raw,
    })
}

/// The body of a page around its items.
///
/// When the items sit under a top-level key (`"/data"`), the other
/// top-level members are kept as raw JSON text and parsed when read: a
/// strategy reading `/next_cursor` parses that one value, and the whole
/// [`Value`] is only built if someone asks for it. Large metadata
/// (facets, included resources) then costs a scan, not a tree, per page.
#[derive(Clone, Debug)]
pub(crate) struct Rest {
    bytes: Bytes,
    repr: Repr,
    value: OnceLock<Value>,
}

#[derive(Clone, Debug)]
enum Repr {
    Eager(Value),
    Lazy {
        /// Top-level members other than the items: name, raw JSON range.
        fields: Vec<(Key, Range<usize>)>,
        /// The member that held the items.
        items_key: Option<Key>,
    },
}

/// A member name: a range of the body, or owned when it had escapes.
#[derive(Clone, Debug)]
enum Key {
    At(Range<usize>),
    Owned(Box<str>),
}

impl Key {
    /// Whether the name is `name` (compared as bytes: no UTF-8 check).
    fn is(&self, bytes: &[u8], name: &str) -> bool {
        match self {
            Self::At(range) => bytes.get(range.clone()) == Some(name.as_bytes()),
            Self::Owned(own) => **own == *name,
        }
    }

    fn as_str<'a>(&'a self, bytes: &'a [u8]) -> &'a str {
        match self {
            Self::At(range) => bytes
                .get(range.clone())
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or(""),
            Self::Owned(name) => name,
        }
    }
}

impl Rest {
    /// The whole body, items replaced by `null`.
    pub(crate) fn value(&self) -> &Value {
        match &self.repr {
            Repr::Eager(value) => value,
            Repr::Lazy { fields, items_key } => self.value.get_or_init(|| {
                let mut map = serde_json::Map::new();
                for (key, range) in fields {
                    // A member `serde_json::Value` cannot hold is left out
                    // here; `lookup` reports it.
                    if let Some(Ok(value)) = self.parse(range) {
                        map.insert(key.as_str(&self.bytes).to_owned(), value);
                    }
                }
                if let Some(key) = items_key {
                    map.insert(key.as_str(&self.bytes).to_owned(), Value::Null);
                }
                Value::Object(map)
            }),
        }
    }

    /// The value at `field`, parsing only the member it is in; an error
    /// when that member is valid JSON that `serde_json::Value` cannot hold
    /// (a number beyond the `f64` range such as `1e400`, nesting deeper than
    /// 128).
    pub(crate) fn lookup(
        &self,
        field: &Field,
    ) -> Result<Option<Cow<'_, Value>>, serde_json::Error> {
        let Repr::Lazy { fields, items_key } = &self.repr else {
            return Ok(field.get(self.value()).map(Cow::Borrowed));
        };
        if let Some(value) = self.value.get() {
            return Ok(field.get(value).map(Cow::Borrowed));
        }
        let Ok(tokens) = field.tokens.as_ref() else {
            return Ok(None);
        };
        let Some((first, rest)) = tokens.split_first() else {
            return Ok(Some(Cow::Borrowed(self.value())));
        };
        // Later duplicates win, as in `serde_json::Value`.
        let member = fields
            .iter()
            .rev()
            .find(|(key, _)| key.as_str(&self.bytes) == first);
        let value = match member {
            Some((_, range)) => match self.parse(range) {
                Some(parsed) => parsed?,
                None => return Ok(None),
            },
            None if items_key
                .as_ref()
                .is_some_and(|k| k.as_str(&self.bytes) == first) =>
            {
                Value::Null
            }
            None => return Ok(None),
        };
        Ok(rest
            .iter()
            .try_fold(value, |value, token| match value {
                Value::Object(mut map) => map.remove(token.as_str()),
                Value::Array(mut items) => {
                    let index = array_index(token)?;
                    (index < items.len()).then(|| items.swap_remove(index))
                }
                _ => None,
            })
            .map(Cow::Owned))
    }

    /// The JSON text at `field`, exactly as in the body (so a number keeps
    /// every digit); only the member it is in is scanned. Where the page's
    /// items were, `null`.
    pub(crate) fn lookup_raw(&self, field: &Field) -> Option<&str> {
        let tokens = field.tokens()?;
        let Repr::Lazy { fields, items_key } = &self.repr else {
            return raw_at(self.bytes.as_ref(), tokens);
        };
        let Some((first, rest)) = tokens.split_first() else {
            return raw_at(self.bytes.as_ref(), tokens);
        };
        let member = fields
            .iter()
            .rev()
            .find(|(key, _)| key.is(&self.bytes, first));
        match member {
            Some((_, range)) => raw_at(self.bytes.get(range.clone())?, rest),
            None if items_key.as_ref().is_some_and(|k| k.is(&self.bytes, first)) => {
                rest.is_empty().then_some("null")
            }
            None => None,
        }
    }

    /// The body's text in `range` (a range the decoder recorded).
    pub(crate) fn text(&self, range: &Range<usize>) -> Option<&str> {
        std::str::from_utf8(self.bytes.get(range.clone())?).ok()
    }

    /// The raw body.
    pub(crate) const fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The page's content, as ranges of the body, for repeated-page
    /// detection: the items array and the member names around it when the
    /// items are a top-level member (so that a page repeated with a fresh
    /// cursor, or an echo of the request, still matches), the whole body
    /// otherwise.
    pub(crate) fn content(&self, parts: &mut Vec<Range<usize>>) {
        parts.clear();
        let mut at = 0;
        if let Repr::Lazy { fields, .. } = &self.repr {
            // The members' ranges, in body order (the order they were read).
            for (_, range) in fields {
                parts.push(at..range.start.max(at));
                at = at.max(range.end);
            }
        }
        parts.push(at..self.bytes.len().max(at));
    }

    /// A hash of the whole [`content`](Self::content).
    #[cfg(test)]
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut parts = Vec::new();
        self.content(&mut parts);
        crate::seen::full_hash(&self.bytes, &parts)
    }

    /// The member at `range` as a `Value`. The first pass checked its
    /// syntax only: a number beyond the `f64` range (`1e400`) or nesting
    /// deeper than 128 still fails here.
    fn parse(&self, range: &Range<usize>) -> Option<Result<Value, serde_json::Error>> {
        Some(serde_json::from_slice(self.bytes.get(range.clone())?))
    }
}

/// The JSON text of the value at `tokens` inside the JSON text `json`
/// (later duplicate members win, as in `serde_json::Value`).
pub(crate) fn raw_at<'a>(json: &'a [u8], tokens: &[String]) -> Option<&'a str> {
    let mut current = json;
    for token in tokens {
        let first = current.iter().find(|b| !b.is_ascii_whitespace())?;
        if !matches!(first, b'{' | b'[') {
            return None;
        }
        let mut de = serde_json::Deserializer::from_slice(current);
        current = de.deserialize_any(Child { token }).ok()??.get().as_bytes();
    }
    // The body was valid JSON, so this is valid UTF-8.
    std::str::from_utf8(current).ok().map(str::trim_ascii)
}

/// Finds the member or element named by `token` and keeps its raw text.
struct Child<'t> {
    token: &'t str,
}

impl<'de> Visitor<'de> for Child<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_it) = map.next_key_seed(KeyIs(self.token))? {
            if is_it {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let target = array_index(self.token);
        let mut found = None;
        let mut index = 0;
        loop {
            if target == Some(index) {
                match seq.next_element::<&'de RawValue>()? {
                    Some(raw) => found = Some(raw),
                    None => return Ok(found),
                }
            } else if seq.next_element::<de::IgnoredAny>()?.is_none() {
                return Ok(found);
            }
            index += 1;
        }
    }
}

/// Whether a member name is the one looked for.
struct KeyIs<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

struct Slot<T> {
    items: Option<Vec<T>>,
    /// Where the last item's text is in the body (with `keep_last`).
    last: Option<Range<usize>>,
    keep_last: bool,
    /// The body's address, to turn borrowed text into ranges.
    base: usize,
}

/// Deserializes a JSON value, diverting the array at `path` into the slot.
struct Seed<'a, T> {
    path: &'a [String],
    slot: &'a mut Slot<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Seed<'_, T> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.path.split_first() {
            None => {
                d.deserialize_any(Items(self.slot))?;
                Ok(Value::Null)
            }
            Some((head, rest)) => d.deserialize_any(Spine {
                head,
                rest,
                slot: self.slot,
            }),
        }
    }
}

/// The target array: items decoded one by one, straight from the input.
struct Items<'a, T>(&'a mut Slot<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for Items<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of items")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.items = Some(Vec::new());
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    // Out of line: the per-item loop then gets the inlining budget of a
    // function of its own (as serde's `Vec` visitor does), instead of
    // sharing one with the whole page decoder.
    #[inline(never)]
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let slot = self.0;
        // Grown as it fills, like serde's own `Vec` visitor: sizing it up
        // front from the last page measured slower with glibc (a large
        // allocation first consolidates the small chunks the previous
        // page's items just freed).
        let mut items = Vec::new();
        if slot.keep_last {
            // Each item's text is borrowed from the body, then decoded:
            // the last one's stays available exactly as sent (a 20-digit id
            // must not come back as a float).
            let mut last: Option<&'de RawValue> = None;
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                items.push(serde_json::from_str(raw.get()).map_err(de::Error::custom)?);
                last = Some(raw);
            }
            slot.last = last.map(|raw| {
                let start = (raw.get().as_ptr() as usize).saturating_sub(slot.base);
                start..start + raw.get().len()
            });
        } else {
            while let Some(item) = seq.next_element::<T>()? {
                items.push(item);
            }
        }
        slot.items = Some(items);
        Ok(())
    }
}

/// A value on the way to the target: rebuilt as `Value`, except the child
/// named by `head`, which is visited with the rest of the path.
struct Spine<'a, T> {
    head: &'a str,
    rest: &'a [String],
    slot: &'a mut Slot<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Spine<'_, T> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = if key == self.head {
                map.next_value_seed(Seed {
                    path: self.rest,
                    slot: &mut *self.slot,
                })?
            } else {
                map.next_value::<Value>()?
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let target = array_index(self.head);
        let mut out = Vec::new();
        loop {
            let next = if target == Some(out.len()) {
                seq.next_element_seed(Seed {
                    path: self.rest,
                    slot: &mut *self.slot,
                })?
            } else {
                seq.next_element::<Value>()?
            };
            match next {
                Some(value) => out.push(value),
                None => return Ok(Value::Array(out)),
            }
        }
    }
}

/// The top level when the items are one member down: the items member is
/// decoded, the others recorded as raw ranges. Anything but an object
/// falls back to [`Spine`] (and then has no items, which is an error).
struct TopLevel<'a, T> {
    key: &'a str,
    base: usize,
    fields: &'a mut Vec<(Key, Range<usize>)>,
    items_key: &'a mut Option<Key>,
    slot: &'a mut Slot<T>,
}

impl<'a, T> TopLevel<'a, T> {
    fn spine(self) -> Spine<'a, T> {
        Spine {
            head: self.key,
            rest: &[],
            slot: self.slot,
        }
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for TopLevel<'_, T> {
    /// `None`: recorded lazily; `Some`: not an object, built eagerly.
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        while let Some((key, is_items)) = map.next_key_seed(KeySeed {
            base: self.base,
            target: self.key,
        })? {
            if is_items {
                map.next_value_seed(Seed {
                    path: &[],
                    slot: &mut *self.slot,
                })?;
                *self.items_key = Some(key);
            } else {
                let raw: &'de RawValue = map.next_value()?;
                let start = (raw.get().as_ptr() as usize).saturating_sub(self.base);
                self.fields.push((key, start..start + raw.get().len()));
            }
        }
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Value>, A::Error> {
        self.spine().visit_seq(seq).map(Some)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<Value>, E> {
        Ok(Some(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<Value>, E> {
        Ok(Some(Value::Null))
    }
}

/// A member name, borrowed as a range of the body when it has no escapes.
struct KeySeed<'a> {
    base: usize,
    target: &'a str,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = (Key, bool);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(Key, bool), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = (Key, bool);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(Key, bool), E> {
        let start = (v.as_ptr() as usize).saturating_sub(self.base);
        Ok((Key::At(start..start + v.len()), v == self.target))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(Key, bool), E> {
        Ok((Key::Owned(v.into()), v == self.target))
    }
}

/// RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if digits && (token == "0" || !token.starts_with('0')) {
        token.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Item {
        id: u64,
    }

    fn ptr(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    fn ids(d: &Decoded<Item>) -> Vec<u64> {
        d.items.iter().map(|i| i.id).collect()
    }

    #[test]
    fn root_array() {
        let d = decode_page::<Item>(
            Bytes::copy_from_slice(br#"[{"id":1},{"id":2}]"#),
            &ptr(""),
            false,
        )
        .unwrap();
        assert_eq!(ids(&d), [1, 2]);
        assert_eq!(d.rest.value(), &Value::Null);
        assert_eq!(d.last_item, None);
    }

    #[test]
    fn array_under_a_pointer_leaves_the_rest_for_strategies() {
        let body = br#"{"data":[{"id":7,"x":1}],"next_cursor":"c2","meta":{"total":3}}"#;
        let d = decode_page::<Item>(Bytes::copy_from_slice(body), &ptr("/data"), true).unwrap();
        assert_eq!(ids(&d), [7]);
        assert_eq!(
            d.rest.value(),
            &json!({"data": null, "next_cursor": "c2", "meta": {"total": 3}})
        );
        assert_eq!(d.last_item, Some(json!({"id": 7, "x": 1})));
    }

    #[test]
    fn a_fingerprint_covers_the_items_not_the_members_around_them() {
        let print = |body: &str, pointer: &str| {
            decode_page::<Item>(
                Bytes::copy_from_slice(body.as_bytes()),
                &ptr(pointer),
                false,
            )
            .unwrap()
            .rest
            .fingerprint()
        };
        let a = print(r#"{"page":1,"data":[{"id":1}],"next":"x"}"#, "/data");
        assert_eq!(
            a,
            print(r#"{"page":2,"data":[{"id":1}],"next":"yz"}"#, "/data")
        );
        assert_ne!(
            a,
            print(r#"{"page":1,"data":[{"id":2}],"next":"x"}"#, "/data")
        );
        assert_ne!(
            a,
            print(r#"{"page":1,"rows":[{"id":1}],"next":"x"}"#, "/rows")
        );
        // Nested or root arrays: the whole body.
        let nested = print(r#"{"a":{"items":[{"id":1}]},"n":1}"#, "/a/items");
        assert_ne!(
            nested,
            print(r#"{"a":{"items":[{"id":1}]},"n":2}"#, "/a/items")
        );
        assert_eq!(print(r#"[{"id":1}]"#, ""), print(r#"[{"id":1}]"#, ""));
        assert_ne!(print(r#"[{"id":1}]"#, ""), print(r#"[{"id":3}]"#, ""));
    }

    #[test]
    fn members_are_parsed_only_when_read() {
        let body = br#"{"next":{"cursor":"c9","n":[1,2]},"data":[{"id":1}],"t\u0061g":"x","next":{"cursor":"c10"}}"#;
        let d = decode_page::<Item>(Bytes::copy_from_slice(body), &ptr("/data"), false).unwrap();
        assert_eq!(ids(&d), [1]);
        let get = |p: &str| d.rest.lookup(&Field::new(p)).unwrap().map(Cow::into_owned);
        assert!(d.rest.value.get().is_none(), "nothing parsed yet");
        assert_eq!(
            get("/next/cursor"),
            Some(json!("c10")),
            "a later duplicate wins"
        );
        assert_eq!(get("/next/n"), None);
        assert_eq!(get("/tag"), Some(json!("x")), "escaped member names");
        assert_eq!(get("/data"), Some(Value::Null));
        assert_eq!(get("/data/0"), None);
        assert_eq!(get("/missing"), None);
        assert_eq!(get("bad"), None);
        assert!(d.rest.value.get().is_none(), "still nothing built");
        assert_eq!(
            get(""),
            Some(json!({"next": {"cursor": "c10"}, "data": null, "tag": "x"}))
        );
        assert!(d.rest.value.get().is_some());
        assert_eq!(
            get("/next/cursor"),
            Some(json!("c10")),
            "and from the built value"
        );
    }

    #[test]
    fn a_top_level_that_is_not_an_object_has_no_items() {
        for body in [
            &br"[1,2]"[..],
            br#""text""#,
            b"3",
            b"null",
            b"true",
            b"-1",
            b"1.5",
        ] {
            let e = decode_page::<Item>(Bytes::copy_from_slice(body), &ptr("/data"), false)
                .unwrap_err();
            assert!(matches!(e, DecodeError::Missing), "{body:?}: {e}");
        }
        let d = decode_page::<Value>(
            Bytes::copy_from_slice(br#"[[0], [{"x":1}]]"#),
            &ptr("/1"),
            false,
        )
        .unwrap();
        assert_eq!(d.items, [json!({"x": 1})]);
        assert_eq!(d.rest.value(), &json!([[0], null]));
    }

    #[test]
    fn nested_pointers_with_indices_and_escapes() {
        let body = br#"{"a/b":[{"skip":[1]},{"it~ems":[{"id":3}]}],"n":1.5}"#;
        let d = decode_page::<Item>(Bytes::copy_from_slice(body), &ptr("/a~1b/1/it~0ems"), false)
            .unwrap();
        assert_eq!(ids(&d), [3]);
        assert_eq!(
            d.rest.value(),
            &json!({"a/b": [{"skip": [1]}, {"it~ems": null}], "n": 1.5})
        );
    }

    #[test]
    fn null_items_are_an_empty_page() {
        let d = decode_page::<Item>(
            Bytes::copy_from_slice(br#"{"data":null,"has_more":false}"#),
            &ptr("/data"),
            false,
        )
        .unwrap();
        assert!(d.items.is_empty());
    }

    #[test]
    fn missing_or_mistyped_items_are_errors() {
        let e = decode_page::<Item>(
            Bytes::copy_from_slice(br#"{"items":[]}"#),
            &ptr("/data"),
            false,
        )
        .unwrap_err();
        assert!(matches!(e, DecodeError::Missing));
        let e = decode_page::<Item>(
            Bytes::copy_from_slice(br#"{"data":{"id":1}}"#),
            &ptr("/data"),
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("expected a JSON array of items"),
            "{e}"
        );
        let e = decode_page::<Item>(Bytes::copy_from_slice(br#"[{"id":"x"}]"#), &ptr(""), false)
            .unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = decode_page::<Item>(Bytes::copy_from_slice(br#"[{"id":"x"}]"#), &ptr(""), true)
            .unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e =
            decode_page::<Item>(Bytes::copy_from_slice(br"[] []"), &ptr(""), false).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
        let e = decode_page::<Item>(Bytes::copy_from_slice(br"[1"), &ptr(""), false).unwrap_err();
        assert!(matches!(e, DecodeError::Json(_)));
        let e = decode_page::<Item>(
            Bytes::copy_from_slice(br#"{"data":[]}"#),
            &ptr("/data/0"),
            false,
        )
        .unwrap_err();
        assert!(matches!(e, DecodeError::Missing));
    }

    #[test]
    fn fields_look_up_like_serde_json_pointers() {
        let v = json!({"a/b": [{"c~d": 1}, 2], "": {"x": true}, "n": null});
        for p in [
            "",
            "/a~1b",
            "/a~1b/0/c~0d",
            "/a~1b/1",
            "/a~1b/01",
            "/a~1b/9",
            "//x",
            "/n",
            "/n/x",
            "/zz",
        ] {
            let field = Field::new(p);
            assert!(field.check().is_ok(), "{p}");
            assert_eq!(field.get(&v), v.pointer(p), "{p}");
        }
        assert!(Field::new("x").check().is_err());
        assert_eq!(Field::new("x").get(&v), None);
        assert_eq!(Field::new("/a").as_str(), "/a");
    }

    #[test]
    fn pointer_syntax_is_validated() {
        assert_eq!(ptr("").tokens, Vec::<String>::new());
        assert_eq!(ptr("/").tokens, [""]);
        assert_eq!(ptr("/a~1~0/0").tokens, ["a/~", "0"]);
        assert!(Pointer::parse("data").is_err());
        assert!(Pointer::parse("/a~2").is_err());
        let msg = Pointer::parse("/a~").unwrap_err().to_string();
        assert!(msg.contains("RFC 6901"), "{msg}");
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("10"), Some(10));
        assert_eq!(array_index(""), None);
    }

    proptest! {
        /// The meta value equals what serde_json builds, with the array
        /// replaced by null, and the items equal the array's elements.
        #[test]
        fn agrees_with_serde_json_value(
            n in 0usize..20,
            extra in prop::collection::btree_map("[a-z]{1,3}", any::<i32>(), 0..4),
            key in "[a-z]{1,4}",
        ) {
            let items: Vec<Value> = (0..n as u64).map(|id| json!({"id": id})).collect();
            let mut doc = serde_json::Map::new();
            for (k, v) in &extra {
                doc.insert(k.clone(), json!(v));
            }
            doc.insert(key.clone(), Value::Array(items));
            let body = serde_json::to_vec(&doc).unwrap();
            let d = decode_page::<Item>(Bytes::from(body.clone()), &ptr(&format!("/{key}")), true).unwrap();
            prop_assert_eq!(ids(&d), (0..n as u64).collect::<Vec<_>>());
            doc.insert(key.clone(), Value::Null);
            let expected = Value::Object(doc);
            prop_assert_eq!(d.last_item.is_some(), n > 0);
            for k in extra.keys().chain([&key, &"zz".to_owned()]) {
                let p = format!("/{k}");
                let lazy = d.rest.lookup(&Field::new(p.as_str())).unwrap().map(Cow::into_owned);
                prop_assert_eq!(lazy.as_ref(), expected.pointer(&p));
            }
            prop_assert_eq!(d.rest.value(), &expected);
        }

        #[test]
        fn never_panics(body in prop::collection::vec(any::<u8>(), 0..64), p in "(/[a0~]{0,3}){0,3}") {
            if let Ok(p) = Pointer::parse(&p) {
                let _ = decode_page::<Value>(Bytes::from(body.clone()), &p, true);
            }
        }
    }
}
