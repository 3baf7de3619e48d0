//! The shape of a declared type (issue 16): what a value of a record, `list<T>` or `T?` type
//! must look like where it enters a run (a tool result, an event payload, an input, a typed
//! model answer), checked whole, with the path of the first bad part; and its JSON Schema.

use crate::value::Json;

/// How a message names the kind of JSON value found where another was expected.
pub(crate) fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a bool",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// The shape of a declared type (issue 16): what a tool result, an event payload, a recorded
/// input or a tool argument of a record, `list<T>` or `T?` type must look like. Generated code
/// emits one `SHAPE` per record type (`Refund::SHAPE`) and builds the others from them.
///
/// A value is let in only whole: [`Shape::conform`] either returns the complete value (with
/// every absent optional field made an explicit `null`, and every `float` a float) or names
/// the first bad field by its path (`items[2].qty`), never a partial value.
#[derive(Debug)]
pub enum Shape {
    /// `string`
    Str,
    /// `int`: a JSON number that is a signed 64-bit integer
    Int,
    /// `float`: any JSON number
    Float,
    /// `bool`
    Bool,
    /// `json`: anything
    Json,
    /// `list<T>`: an array whose every item has the shape
    List(&'static Shape),
    /// `T?`: `null` (or an absent field) or the shape
    Optional(&'static Shape),
    /// A record type: an object with exactly these fields (an unknown field is refused)
    Record {
        /// The type's name.
        name: &'static str,
        /// The fields in declaration order.
        fields: &'static [(&'static str, Shape)],
    },
}

/// A value of the wrong shape: the path of the first bad part and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{path}`: {message}")]
#[non_exhaustive]
pub struct ShapeError {
    /// Where, e.g. `items[2].qty` (`value` for the whole value).
    pub path: String,
    /// What is wrong there, e.g. `expected an int, found a string`.
    pub message: String,
}

impl Shape {
    /// The type as written in the program, e.g. `list<Item>` or `string?`.
    pub fn name(&self) -> String {
        match self {
            Shape::Str => "string".into(),
            Shape::Int => "int".into(),
            Shape::Float => "float".into(),
            Shape::Bool => "bool".into(),
            Shape::Json => "json".into(),
            Shape::List(t) => format!("list<{}>", t.name()),
            Shape::Optional(t) => format!("{}?", t.name()),
            Shape::Record { name, .. } => (*name).to_string(),
        }
    }

    fn expected(&self) -> String {
        match self {
            Shape::Str => "a string".into(),
            Shape::Int => "an int".into(),
            Shape::Float => "a number".into(),
            Shape::Bool => "a bool".into(),
            Shape::Json => "any value".into(),
            Shape::List(t) => format!("a list of {}", t.name()),
            Shape::Optional(t) => format!("{} or null", t.expected()),
            Shape::Record { name, .. } => format!("an object (`{name}`)"),
        }
    }

    /// The value, whole and normalised, if it has this shape; else the path of the first part
    /// that does not.
    pub fn conform(&self, v: &Json) -> Result<Json, ShapeError> {
        let mut path = String::new();
        self.walk(v, &mut path)
    }

    fn walk(&self, v: &Json, path: &mut String) -> Result<Json, ShapeError> {
        let wrong = |path: &str, expected: String| ShapeError {
            path: if path.is_empty() {
                "value".into()
            } else {
                path.to_string()
            },
            message: format!("expected {expected}, found {}", kind_of(v)),
        };
        match (self, v) {
            (Shape::Json, _) => Ok(v.clone()),
            (Shape::Str, Json::String(_)) | (Shape::Bool, Json::Bool(_)) => Ok(v.clone()),
            (Shape::Int, Json::Number(n)) if n.as_i64().is_some() => Ok(v.clone()),
            (Shape::Float, Json::Number(n)) => Ok(n
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| v.clone(), Json::Number)),
            (Shape::Optional(_), Json::Null) => Ok(Json::Null),
            (Shape::Optional(t), _) => t.walk(v, path),
            (Shape::List(t), Json::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.push(t.walk(item, path)?);
                    path.truncate(len);
                }
                Ok(Json::Array(out))
            }
            (Shape::Record { name, fields }, Json::Object(map)) => {
                let mut out = serde_json::Map::with_capacity(fields.len());
                for (field, shape) in *fields {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(field);
                    match (map.get(*field), shape) {
                        (Some(x), _) => {
                            out.insert((*field).to_string(), shape.walk(x, path)?);
                        }
                        (None, Shape::Optional(_)) => {
                            out.insert((*field).to_string(), Json::Null);
                        }
                        (None, _) => {
                            return Err(ShapeError {
                                path: path.clone(),
                                message: format!(
                                    "missing (`{name}` declares it `{}`)",
                                    shape.name()
                                ),
                            });
                        }
                    }
                    path.truncate(len);
                }
                if let Some(extra) = map.keys().find(|k| !fields.iter().any(|(f, _)| f == k)) {
                    let at = if path.is_empty() {
                        extra.clone()
                    } else {
                        format!("{path}.{extra}")
                    };
                    return Err(ShapeError {
                        path: at,
                        message: format!("`{name}` has no such field"),
                    });
                }
                Ok(Json::Object(out))
            }
            (shape, _) => Err(wrong(path, shape.expected())),
        }
    }
}

impl Shape {
    /// The JSON Schema of the shape (nested records inlined; every field listed in
    /// `required`, an optional one as `anyOf [T, null]`; no other fields), the same schema the
    /// compiler writes as a record type's `SCHEMA`.
    pub fn json_schema(&self) -> Json {
        use serde_json::json;
        match self {
            Shape::Str => json!({"type": "string"}),
            Shape::Int => json!({"type": "integer"}),
            Shape::Float => json!({"type": "number"}),
            Shape::Bool => json!({"type": "boolean"}),
            Shape::Json => json!({}),
            Shape::List(t) => json!({"type": "array", "items": t.json_schema()}),
            Shape::Optional(t) => json!({"anyOf": [t.json_schema(), {"type": "null"}]}),
            Shape::Record { name, fields } => {
                let mut props = serde_json::Map::new();
                for (f, s) in *fields {
                    props.insert((*f).to_string(), s.json_schema());
                }
                let required: Vec<Json> = fields.iter().map(|(f, _)| Json::from(*f)).collect();
                json!({
                    "title": name,
                    "type": "object",
                    "properties": Json::Object(props),
                    "required": required,
                    "additionalProperties": false,
                })
            }
        }
    }
}
