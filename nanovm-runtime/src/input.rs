//! Typed JSON at the boundary: a program's inputs from a JSON object, and their JSON Schema.
//!
//! A caller outside Rust (an HTTP client, an MCP agent) hands a run's inputs as one JSON
//! object. [`input_from_json`] checks it against the program's declared inputs before anything
//! is stored: every unknown, missing or wrongly typed field is reported by name
//! ([`InputError`]); only a valid object has its `secret` fields put into the vault (the
//! plaintext goes there and nowhere else: the run records the vault id and the salted
//! commitment), and is then decoded into the generated `Input` through its serde
//! implementation. [`input_schema`] describes the same object as a JSON Schema (draft 2020-12),
//! generated from the program's declared types, so the check and the schema cannot disagree.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::program::{InputInfo, Program, ProgramInfo};
use crate::shape::Shape;
use crate::value::Json;
use crate::vault::{Vault, VaultError};

/// A declared input type, as the boundary checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scalar {
    Str,
    Int,
    Float,
    Bool,
    Json,
}

impl Scalar {
    /// Parses a declared type as written (`"string"`, `"secret int"`): the scalar and whether
    /// it is a secret. `None` for a type the boundary does not know (never for a program the
    /// compiler accepted).
    fn parse(ty: &str) -> Option<(Scalar, bool)> {
        let (secret, inner) = match ty.strip_prefix("secret ") {
            Some(inner) => (true, inner.trim()),
            None => (false, ty.trim()),
        };
        let s = match inner {
            "string" => Scalar::Str,
            "int" => Scalar::Int,
            "float" => Scalar::Float,
            "bool" => Scalar::Bool,
            "json" => Scalar::Json,
            _ => return None,
        };
        Some((s, secret))
    }

    fn accepts(self, v: &Json) -> bool {
        match self {
            Scalar::Str => v.is_string(),
            Scalar::Int => v.as_i64().is_some(),
            Scalar::Float => v.is_number(),
            Scalar::Bool => v.is_boolean(),
            Scalar::Json => true,
        }
    }

    fn schema(self) -> Json {
        match self {
            Scalar::Str => serde_json::json!({ "type": "string" }),
            Scalar::Int => serde_json::json!({
                "type": "integer",
                "minimum": i64::MIN,
                "maximum": i64::MAX,
            }),
            Scalar::Float => serde_json::json!({ "type": "number" }),
            Scalar::Bool => serde_json::json!({ "type": "boolean" }),
            Scalar::Json => serde_json::json!({}),
        }
    }

    /// What the type expects, for messages.
    fn expected(self) -> &'static str {
        match self {
            Scalar::Str => "a string",
            Scalar::Int => "an integer (i64)",
            Scalar::Float => "a number",
            Scalar::Bool => "a bool",
            Scalar::Json => "any JSON value",
        }
    }
}

/// What a JSON value is, for messages.
fn found(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a bool",
        Json::Number(n) if n.is_i64() => "an integer",
        Json::Number(n) if n.is_u64() => "an integer out of range",
        Json::Number(_) => "a number with a fraction or exponent",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// One field a JSON input got wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The object has a field the program does not declare.
    #[error("unknown field `{field}`")]
    Unknown {
        /// The field's name as given.
        field: String,
    },
    /// A declared input is absent.
    #[error("missing field `{field}` (declared `{ty}`)")]
    Missing {
        /// The input's name.
        field: String,
        /// Its declared type, e.g. `secret string`.
        ty: String,
    },
    /// A declared input has a value of another type.
    #[error("field `{field}`: expected {expected} (declared `{ty}`), found {found}")]
    WrongType {
        /// The input's name.
        field: String,
        /// Its declared type.
        ty: String,
        /// What the type expects, in words.
        expected: String,
        /// What was given instead, in words.
        found: String,
    },
    /// A record, list or optional input whose value does not have the declared type: the
    /// path of the first bad part inside it (`order.items[2].qty`) and what is wrong there.
    #[error("field `{path}`: {message} (declared `{field}: {ty}`)")]
    WrongShape {
        /// The input's name.
        field: String,
        /// The path of the bad part, starting with the input's name.
        path: String,
        /// Its declared type.
        ty: String,
        /// What is wrong, e.g. `expected an int, found a string`.
        message: String,
    },
}

impl FieldError {
    /// The field this error is about.
    pub fn field(&self) -> &str {
        match self {
            FieldError::Unknown { field }
            | FieldError::Missing { field, .. }
            | FieldError::WrongType { field, .. }
            | FieldError::WrongShape { field, .. } => field,
        }
    }
}

/// A JSON input refused at the boundary. When this is returned, nothing was stored: neither
/// the run nor (unless [`InputError::Vault`] failed half-way) any secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The input is not a JSON object.
    #[error("the input must be a JSON object with the program's inputs as fields, found {found}")]
    NotAnObject {
        /// What was given instead, in words.
        found: String,
    },
    /// Some fields are wrong; every one of them is listed.
    #[error("{}", Fields(.0))]
    Fields(Vec<FieldError>),
    /// The vault refused a secret.
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// The checked object did not decode into the program's `Input` (a mismatch between the
    /// program's declared inputs and its generated type: a bug, not the caller's mistake).
    #[error("the input passed the check but does not decode into the program's Input: {0}")]
    Decode(String),
}

impl InputError {
    /// The field errors (empty for the other kinds).
    pub fn fields(&self) -> &[FieldError] {
        match self {
            InputError::Fields(f) => f,
            _ => &[],
        }
    }
}

/// Joins field errors for [`InputError`]'s message.
struct Fields<'a>(&'a [FieldError]);

impl fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Checks `json` against the declared inputs without storing anything: every field error, in
/// declaration order (unknown fields last, in the object's order).
pub fn check_input(info: &ProgramInfo, json: &Json) -> Result<(), InputError> {
    let Json::Object(obj) = json else {
        return Err(InputError::NotAnObject {
            found: found(json).to_string(),
        });
    };
    let mut errors = Vec::new();
    for input in info.inputs {
        if let Some(shape) = input.shape {
            match obj.get(input.name) {
                None if matches!(shape, Shape::Optional(_)) => {}
                None => errors.push(FieldError::Missing {
                    field: input.name.to_string(),
                    ty: input.ty.to_string(),
                }),
                Some(v) => {
                    if let Err(e) = shape.conform(v) {
                        let path = if e.path == "value" {
                            input.name.to_string()
                        } else if e.path.starts_with('[') {
                            format!("{}{}", input.name, e.path)
                        } else {
                            format!("{}.{}", input.name, e.path)
                        };
                        errors.push(FieldError::WrongShape {
                            field: input.name.to_string(),
                            path,
                            ty: input.ty.to_string(),
                            message: e.message,
                        });
                    }
                }
            }
            continue;
        }
        let Some((scalar, _)) = Scalar::parse(input.ty) else {
            errors.push(wrong(
                input,
                "a type this boundary knows",
                "an unsupported declaration",
            ));
            continue;
        };
        match obj.get(input.name) {
            None => errors.push(FieldError::Missing {
                field: input.name.to_string(),
                ty: input.ty.to_string(),
            }),
            Some(v) if !scalar.accepts(v) => {
                errors.push(wrong(input, scalar.expected(), found(v)));
            }
            Some(_) => {}
        }
    }
    for key in obj.keys() {
        if !info.inputs.iter().any(|i| i.name == key) {
            errors.push(FieldError::Unknown { field: key.clone() });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(InputError::Fields(errors))
    }
}

fn wrong(input: &InputInfo, expected: &str, found: &str) -> FieldError {
    FieldError::WrongType {
        field: input.name.to_string(),
        ty: input.ty.to_string(),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// Builds `P`'s `Input` from a JSON object of plaintext values: checks it ([`check_input`]),
/// then puts every `secret` field's plaintext into `vault` and decodes the object, with each
/// secret replaced by its handle, into `P::Input`. The plaintext of a secret is kept by the
/// vault only; the `Input` (and the run it starts) holds the vault id and the commitment.
pub async fn input_from_json<P: Program>(
    vault: &dyn Vault,
    json: &Json,
) -> Result<P::Input, InputError>
where
    P::Input: DeserializeOwned,
{
    let info = P::info();
    check_input(info, json)?;
    let mut obj = match json {
        Json::Object(obj) => obj.clone(),
        _ => unreachable!("check_input accepted a non-object"),
    };
    for input in info.inputs {
        if !matches!(Scalar::parse(input.ty), Some((_, true))) {
            continue;
        }
        if let Some(plain) = obj.remove(input.name) {
            let (vault_id, commitment) = vault.put(plain).await?;
            // A handle's serialized form (see `SecretRef`'s serde implementation).
            let inner = serde_json::json!({ "vault_id": vault_id, "commitment": commitment });
            obj.insert(input.name.to_string(), inner);
        }
    }
    serde_json::from_value(Json::Object(obj)).map_err(|e| InputError::Decode(e.to_string()))
}

/// The JSON Schema (draft 2020-12) of `info`'s inputs as [`input_from_json`] accepts them: an
/// object with exactly the declared fields, all required, no others. A `secret` field is
/// marked `"writeOnly": true` (it is accepted as plaintext and never shown again).
pub fn input_schema(info: &ProgramInfo) -> Json {
    let mut properties = serde_json::Map::new();
    for input in info.inputs {
        let mut schema = match (input.shape, Scalar::parse(input.ty)) {
            (Some(shape), _) => shape.json_schema(),
            (None, Some((scalar, _))) => scalar.schema(),
            (None, None) => serde_json::json!({}),
        };
        if let Json::Object(o) = &mut schema {
            if matches!(Scalar::parse(input.ty), Some((_, true))) {
                o.insert("writeOnly".into(), Json::Bool(true));
                o.insert(
                    "description".into(),
                    Json::from(format!(
                        "`{}: {}`: kept in the vault; the trace records only a salted commitment",
                        input.name, input.ty
                    )),
                );
            } else {
                o.insert(
                    "description".into(),
                    Json::from(format!("`{}: {}`", input.name, input.ty)),
                );
            }
        }
        properties.insert(input.name.to_string(), schema);
    }
    // An optional (`T?`) input may be left out; every other one is required.
    let required: Vec<Json> = info
        .inputs
        .iter()
        .filter(|i| !matches!(i.shape, Some(Shape::Optional(_))))
        .map(|i| Json::from(i.name))
        .collect();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": info.name,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The JSON Schema of a value of declared type `ty` as written (`"int"`, `"json"`): what an
/// `await`'s payload of that type must be (`{}`, anything, for `json` and for a type this
/// boundary does not know).
pub fn value_schema(ty: &str) -> Json {
    match Scalar::parse(ty) {
        Some((scalar, _)) => scalar.schema(),
        None => serde_json::json!({}),
    }
}
