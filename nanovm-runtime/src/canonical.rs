//! The canonical binary encoding that trace hashes are computed over.
//!
//! Hashes are taken over typed values written field by field in a fixed order with explicit
//! tags and lengths, never over serialized JSON text: two equal events always produce the same
//! bytes whatever serde features other crates switch on (`serde_json/preserve_order` reorders
//! maps workspace-wide), and two different events never do. JSON data inside events (tool
//! results, payloads) is encoded with object keys sorted and numbers tagged by kind.

use crate::value::{Datum, Digest, Json};

/// Appends canonical bytes to a buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// An empty encoder with room for `capacity` bytes (a scratch buffer sized once instead of
    /// growing through several reallocations).
    pub fn with_capacity(capacity: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets what was written, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// A one-byte tag.
    pub fn tag(&mut self, t: u8) -> &mut Self {
        self.buf.push(t);
        self
    }

    /// A `u64`, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `u32` as a `u64`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.u64(u64::from(v))
    }

    /// A boolean.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.tag(u8::from(v))
    }

    /// Length-prefixed UTF-8.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }

    /// A digest (fixed 32 bytes).
    pub fn digest(&mut self, d: &Digest) -> &mut Self {
        self.buf.extend_from_slice(&d.0);
        self
    }

    /// `0` for `None`, `1` then the value for `Some`.
    pub fn opt<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) -> &mut Self
    where
        T: ?Sized,
    {
        match v {
            None => {
                self.tag(0);
            }
            Some(x) => {
                self.tag(1);
                f(self, x);
            }
        }
        self
    }

    /// An optional string.
    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        self.opt(v, |e, s| {
            e.str(s);
        })
    }

    /// A JSON value: tagged by kind, object keys sorted by their bytes.
    pub fn json(&mut self, v: &Json) -> &mut Self {
        match v {
            Json::Null => {
                self.tag(0);
            }
            Json::Bool(b) => {
                self.tag(1).bool(*b);
            }
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    self.tag(2).u64(i as u64);
                } else if let Some(u) = n.as_u64() {
                    self.tag(3).u64(u);
                } else {
                    // serde_json numbers are i64, u64 or finite f64.
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    self.tag(4).u64(f.to_bits());
                }
            }
            Json::String(s) => {
                self.tag(5).str(s);
            }
            Json::Array(items) => {
                self.tag(6).u64(items.len() as u64);
                for item in items {
                    self.json(item);
                }
            }
            Json::Object(map) => {
                self.tag(7).u64(map.len() as u64);
                let mut sorted = true;
                let mut last: Option<&String> = None;
                for k in map.keys() {
                    if last.is_some_and(|l| l.as_bytes() > k.as_bytes()) {
                        sorted = false;
                        break;
                    }
                    last = Some(k);
                }
                if sorted {
                    for (k, v) in map {
                        self.str(k).json(v);
                    }
                } else {
                    let mut pairs: Vec<_> = map.iter().collect();
                    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                    for (k, v) in pairs {
                        self.str(k).json(v);
                    }
                }
            }
        }
        self
    }

    /// A recorded value.
    pub fn datum(&mut self, d: &Datum) -> &mut Self {
        match d {
            Datum::Plain(v) => {
                self.tag(0).json(v);
            }
            Datum::Secret {
                vault_id,
                commitment,
            } => {
                self.tag(1);
                self.buf.extend_from_slice(&vault_id.0);
                self.digest(commitment);
            }
        }
        self
    }

    /// `name = datum` pairs in order.
    pub fn fields<N: AsRef<str>>(&mut self, fields: &[(N, Datum)]) -> &mut Self {
        self.u64(fields.len() as u64);
        for (n, d) in fields {
            self.str(n.as_ref()).datum(d);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(v: &Json) -> Vec<u8> {
        let mut e = Encoder::new();
        e.json(v);
        e.bytes().to_vec()
    }

    #[test]
    fn object_key_order_does_not_matter() {
        let a: Json = serde_json::from_str(r#"{"b":1,"a":[true,null]}"#).unwrap();
        let b: Json = serde_json::from_str(r#"{"a":[true,null],"b":1}"#).unwrap();
        assert_eq!(enc(&a), enc(&b));
    }

    #[test]
    fn kinds_are_distinguished() {
        assert_ne!(enc(&json!(1)), enc(&json!(1.0)));
        assert_ne!(enc(&json!("1")), enc(&json!(1)));
        assert_ne!(enc(&json!([])), enc(&json!({})));
        assert_ne!(enc(&json!(["ab"])), enc(&json!(["a", "b"])));
        assert_ne!(enc(&json!(null)), enc(&json!(false)));
    }
}
