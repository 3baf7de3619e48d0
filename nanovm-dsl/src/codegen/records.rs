//! Record, list and optional types (issue 16): one Rust struct per declared record type, with
//! serde, its run-time `SHAPE` (what the runtime checks tool results, event payloads, inputs
//! and arguments against, naming the path of a bad field) and its JSON Schema as a string.
//!
//! Inside a run such values are held as checked JSON (the typed tree reads them as `json`);
//! the host sees them as these structs: `Input` fields, `Tools` parameters and results.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use super::{Gen, ice, snake_ident};
use crate::check::Ty;
use crate::check::names::pascal;

/// The Rust name of a record type (`line_item` -> `LineItem`, `Refund` -> `Refund`).
pub(super) fn record_ident(name: &str) -> Ident {
    Ident::new(&pascal(name), Span::call_site())
}

impl Gen<'_> {
    /// The host's Rust type for a declared type: the generated struct, `Vec<T>`, `Option<T>`;
    /// the other types as in `State`.
    pub(super) fn host_ty(&self, ty: &Ty) -> TokenStream {
        match ty {
            Ty::Record(name) => {
                let id = record_ident(name);
                quote!(#id)
            }
            Ty::List(t) => {
                let t = self.host_ty(t);
                quote!(Vec<#t>)
            }
            Ty::Optional(t) => {
                let t = self.host_ty(t);
                quote!(Option<#t>)
            }
            other => self.rust_ty(other),
        }
    }

    /// A `__nv::Shape` constant expression for a declared type.
    pub(super) fn shape(&self, ty: &Ty) -> TokenStream {
        let nv = &self.nv;
        match ty {
            Ty::Str => quote!(#nv::Shape::Str),
            Ty::Int => quote!(#nv::Shape::Int),
            Ty::Float => quote!(#nv::Shape::Float),
            Ty::Bool => quote!(#nv::Shape::Bool),
            Ty::Json => quote!(#nv::Shape::Json),
            Ty::Record(name) => {
                let id = record_ident(name);
                quote!(#id::SHAPE)
            }
            Ty::List(t) => {
                let t = self.shape(t);
                quote!(#nv::Shape::List(&#t))
            }
            Ty::Optional(t) => {
                let t = self.shape(t);
                quote!(#nv::Shape::Optional(&#t))
            }
            other => ice(format_args!("a shape of type `{other}` in {}", self.site())),
        }
    }

    /// A `&'static Shape` usable in a function body.
    pub(super) fn shape_ref(&self, ty: &Ty) -> TokenStream {
        let nv = &self.nv;
        let s = self.shape(ty);
        quote!({
            const SHAPE: #nv::Shape = #s;
            &SHAPE
        })
    }

    /// The structs of the declared record types, in source order.
    pub(super) fn records(&self) -> TokenStream {
        let nv = &self.nv;
        let serde_path = format!("{}::serde", self.private).replace(' ', "");
        let items = self.p.types.iter().map(|r| {
            let id = record_ident(&r.name);
            let mut doc: Vec<String> = r.doc.iter().map(|l| format!(" {l}")).collect();
            if !doc.is_empty() {
                doc.push(String::new());
            }
            doc.push(format!(" `type {}` of the program.", r.name));
            let fields = r.fields.iter().map(|(n, ty)| {
                let f = snake_ident(n);
                let t = self.at(format!("type `{}`", r.name), || self.host_ty(ty));
                let d = format!(" `{n}: {ty}`");
                quote!(#[doc = #d] pub #f: #t,)
            });
            let shapes = r.fields.iter().map(|(n, ty)| {
                let s = self.at(format!("type `{}`", r.name), || self.shape(ty));
                quote!((#n, #s))
            });
            let name = &r.name;
            let schema = schema_text(self.p, &Ty::Record(r.name.clone()));
            quote! {
                #(#[doc = #doc])*
                #[derive(Clone, Debug, PartialEq, #nv::serde::Serialize, #nv::serde::Deserialize)]
                #[serde(crate = #serde_path, deny_unknown_fields)]
                #[allow(non_snake_case, reason = "fields keep the names the program declares")]
                pub struct #id {
                    #(#fields)*
                }

                impl #id {
                    /// What a value of this type must look like at the boundary (tool results,
                    /// event payloads, inputs): the runtime names the path of a bad field.
                    pub const SHAPE: #nv::Shape = #nv::Shape::Record {
                        name: #name,
                        fields: &[#(#shapes),*],
                    };

                    /// The type's JSON Schema (nested records inlined; every field required,
                    /// an optional one as `null` or its type; no other fields).
                    pub const SCHEMA: &'static str = #schema;
                }
            }
        });
        quote!(#(#items)*)
    }
}

/// The JSON Schema of a declared type, as compact JSON text (deterministic: object keys in
/// sorted order, `required` in declaration order).
pub(crate) fn schema_text(p: &crate::lower::Program, ty: &Ty) -> String {
    schema(p, ty).to_string()
}

fn schema(p: &crate::lower::Program, ty: &Ty) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    match ty {
        Ty::Str | Ty::Choice(_) => json!({"type": "string"}),
        Ty::Int => json!({"type": "integer"}),
        Ty::Float => json!({"type": "number"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::List(t) => json!({"type": "array", "items": schema(p, t)}),
        Ty::Optional(t) => json!({"anyOf": [schema(p, t), {"type": "null"}]}),
        Ty::Record(name) => {
            let Some(r) = p.types.iter().find(|r| &r.name == name) else {
                return json!({});
            };
            let mut props = Map::new();
            for (n, t) in &r.fields {
                props.insert(n.clone(), schema(p, t));
            }
            let required: Vec<Value> = r.fields.iter().map(|(n, _)| json!(n)).collect();
            json!({
                "title": name,
                "type": "object",
                "properties": Value::Object(props),
                "required": required,
                "additionalProperties": false,
            })
        }
        _ => json!({}),
    }
}
