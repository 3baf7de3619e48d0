//! The `action` function: what each step asks the runtime to do (model calls with rendered
//! templates, typed tool calls, decisions, suspensions, ends).

use proc_macro2::TokenStream;
use quote::quote;

use super::{Gen, choice_ident, ice, pascal_ident, snake_ident, step_site};
use crate::check::Ty;
use crate::lower::{Call, Llm, LlmOut, Part, StepKind, TExpr, TKind, Template};

impl Gen<'_> {
    pub(super) fn action_fn(&self) -> TokenStream {
        let nv = &self.nv;
        let arms = self.p.steps.iter().enumerate().map(|(i, s)| {
            let v = self.step_variant(i);
            let body = self.at(step_site(s), || match &s.kind {
                StepKind::Llm(l) => self.llm_action(l),
                StepKind::Call(c) => self.call_action(c),
                StepKind::Guard(_) | StepKind::Branch(_) => quote!(#nv::Action::Decide),
                StepKind::Parallel(_) => quote!(#nv::Action::Parallel),
                StepKind::Await(a) => {
                    let ev = &a.event;
                    let timeout = match a.timeout {
                        Some((ms, _)) => {
                            let ms = super::num(ms);
                            quote!(Some(::core::time::Duration::from_millis(#ms)))
                        }
                        None => quote!(None),
                    };
                    quote!(#nv::Action::Await { event: #ev, timeout: #timeout })
                }
                StepKind::End { success, message } => {
                    let m = match message {
                        Some(m) => quote!(Some(#m)),
                        None => quote!(None),
                    };
                    quote!(#nv::Action::End { success: #success, message: #m })
                }
            });
            quote!(Step::#v => #body,)
        });
        let arms: Vec<TokenStream> = arms.collect();
        let state = super::param(&arms, "state");
        quote! {
            /// What `step` asks the runtime to do, given the current variables.
            pub fn action(step: Step, #state: &State) -> Result<#nv::Action<Call>, #nv::Fault> {
                Ok(match step {
                    #(#arms)*
                })
            }
        }
    }

    pub(super) fn llm_action(&self, l: &Llm) -> TokenStream {
        let nv = &self.nv;
        let prompt = self.template(&l.prompt);
        let system = match &l.system {
            Some(t) => {
                let t = self.template(t);
                quote!(Some(#t))
            }
            None => quote!(None),
        };
        let model = match &l.model {
            Some(m) => quote!(Some(#m)),
            None => quote!(None),
        };
        let max_tokens = match l.max_tokens {
            Some(m) => {
                let m = super::num(m);
                quote!(Some(#m))
            }
            None => quote!(None),
        };
        let choices = match &l.output {
            LlmOut::Choose { choice, .. } => {
                let e = choice_ident(&self.p.choices[*choice].var);
                quote!(Some(#e::NAMES))
            }
            LlmOut::Into { .. } | LlmOut::Answer { .. } | LlmOut::Discard => quote!(None),
        };
        let answer = match &l.output {
            LlmOut::Answer { ty, .. } => {
                let name = ty.to_string();
                let schema = match ty {
                    Ty::Record(r) => {
                        let id = super::records::record_ident(r);
                        quote!(#id::SCHEMA)
                    }
                    other => {
                        let s = super::records::schema_text(self.p, other);
                        quote!(#s)
                    }
                };
                quote!(Some({
                    const ANSWER: #nv::AnswerType = #nv::AnswerType { name: #name, schema: #schema };
                    &ANSWER
                }))
            }
            _ => quote!(None),
        };
        let min_confidence = match l.min_confidence {
            Some(p) => quote!(Some(#p)),
            None => quote!(None),
        };
        quote!(#nv::Action::Llm(#nv::LlmCall {
            system: #system,
            prompt: #prompt,
            model: #model,
            max_tokens: #max_tokens,
            choices: #choices,
            min_confidence: #min_confidence,
            answer: #answer,
        }))
    }

    pub(super) fn template(&self, t: &Template) -> TokenStream {
        let cap: usize = t
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(s) => s.len(),
                Part::Hole { .. } => 16,
            })
            .sum();
        let cap = super::num(cap as u64);
        let pushes = t.parts.iter().map(|p| match p {
            Part::Text(s) => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => quote!(s.push(#c);),
                    _ => quote!(s.push_str(#s);),
                }
            }
            Part::Hole { var, fields, .. } => {
                let v = &self.p.vars[*var];
                if let Ty::Choice(_) = v.ty {
                    let place = self.var_place(*var);
                    return quote!(s.push_str(#place.as_str()););
                }
                let mut value = self.var_ref(*var);
                let mut path = v.name.clone();
                for f in fields {
                    value = quote!(__nv::field(#value, #path, #f)?);
                    path = format!("{path}.{f}");
                }
                quote!(__nv::Render::render(#value, &mut s);)
            }
        });
        quote!({
            let mut s = String::with_capacity(#cap);
            #(#pushes)*
            s
        })
    }

    /// An expression borrowing a variable (type `&T`): `&state.x` for inputs,
    /// `__nv::get(&state.x, "x")?` for assigned variables.
    pub(super) fn call_action(&self, c: &Call) -> TokenStream {
        let nv = &self.nv;
        let tool = &self.p.tools[c.tool];
        let v = pascal_ident(&tool.name);
        let fields = tool.params.iter().zip(&c.args).map(|((n, ty), arg)| {
            let n = snake_ident(n);
            let value = self.arg_value(arg, ty);
            quote!(#n: #value)
        });
        quote!(#nv::Action::Tool(Call::#v { #(#fields),* }))
    }

    /// An argument converted to the parameter's Rust type, owned.
    pub(super) fn arg_value(&self, e: &TExpr, param: &Ty) -> TokenStream {
        let nv = &self.nv;
        if param.is_composite() {
            // Held as JSON; the checker proved the value has the parameter's type (a record,
            // list or optional value read from one of the same type, a literal, `null`).
            return self.arg_value(e, &Ty::Json);
        }
        match (param, &e.ty, &e.kind) {
            // A field of a record, read as JSON, passed to a scalar parameter.
            (Ty::Int, Ty::Json, _) => {
                let j = self.json_expr(e);
                let p = super::expr::path_text(self.p, e);
                quote!(__nv::json_int(#j, #p)?)
            }
            (Ty::Float, Ty::Json, _) => {
                let j = self.json_expr(e);
                let p = super::expr::path_text(self.p, e);
                quote!(__nv::json_f64(#j, #p)?)
            }
            // A secret is passed as its vault handle (`Copy`), never revealed here.
            (Ty::Secret(_), Ty::Secret(_), TKind::Var(v)) => self.var_value(*v),
            (Ty::Str, Ty::Str, TKind::Var(v)) => {
                let place = self.var_place(*v);
                quote!(#place.clone())
            }
            (Ty::Str, Ty::Choice(_), _) => {
                let x = self.choice_str(e);
                quote!(String::from(#x))
            }
            (Ty::Str, _, _) => {
                let x = self.str_expr(e);
                quote!(String::from(#x))
            }
            (Ty::Int, _, _) => self.int_expr(e),
            (Ty::Float, _, _) => self.float_expr(e),
            (Ty::Bool, _, _) => self.bool_expr(e),
            (Ty::Json, Ty::Json, _) => {
                let x = self.json_expr(e);
                quote!(::core::clone::Clone::clone(#x))
            }
            (Ty::Json, Ty::Str, _) => {
                let x = self.str_expr(e);
                quote!(#nv::Json::from(#x))
            }
            (Ty::Json, Ty::Choice(_), _) => {
                let x = self.choice_str(e);
                quote!(#nv::Json::from(#x))
            }
            (Ty::Json, Ty::Null, _) => quote!(#nv::Json::Null),
            (Ty::Json, Ty::List(_), TKind::List(items)) => {
                let items = items.iter().map(|i| self.arg_value(i, &Ty::Json));
                quote!(#nv::Json::Array(vec![#(#items),*]))
            }
            (Ty::Json, Ty::Int | Ty::Float | Ty::Bool, _) => {
                let x = self.expr(e);
                quote!(#nv::Json::from(#x))
            }
            _ => ice(format_args!(
                "an argument of type `{}` for a parameter of type `{param}` in {}",
                e.ty,
                self.site()
            )),
        }
    }
}
