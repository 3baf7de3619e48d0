//! The host's side of tool calls: the `Tools` trait, its object-safe `ToolsDyn` form, the
//! typed `Call` enum and its dispatch.

use proc_macro2::{Ident, TokenStream};
use quote::quote;

use super::{Gen, pascal_ident, snake_ident};
use crate::check::Ty;

impl Gen<'_> {
    pub(super) fn tools(&self) -> TokenStream {
        let nv = &self.nv;
        let methods = self.p.tools.iter().map(|t| {
            let name = snake_ident(&t.name);
            let mut doc = t.doc.iter().map(|l| format!(" {l}")).collect::<Vec<_>>();
            if !doc.is_empty() {
                doc.push(String::new());
            }
            doc.push(format!(
                " {} tool; declared result type `{}`.{}",
                if t.effect { "An effect" } else { "A read-only" },
                t.ret,
                if t.idempotent { " Must honour `ctx.idempotency_key`." } else { "" }
            ));
            if t.ret.is_composite() {
                doc.push(
                    " Returns the typed value; the runtime still checks it against the type's shape."
                        .into(),
                );
            }
            let params = t.params.iter().map(|(n, ty)| {
                let n = snake_ident(n);
                let ty = self.at(format!("tool `{}`", t.name), || {
                    if ty.is_composite() {
                        self.host_ty(ty)
                    } else {
                        self.param_ty(ty)
                    }
                });
                quote!(#n: #ty)
            });
            // A tool declared to return a record, list or optional type returns it typed; the
            // others return JSON, decoded against the declared type by the runtime.
            let ret = if t.ret.is_composite() {
                self.host_ty(&t.ret)
            } else {
                quote!(#nv::Json)
            };
            quote! {
                #(#[doc = #doc])*
                fn #name(&self, ctx: &#nv::ToolContext, #(#params),*)
                    -> impl ::core::future::Future<Output = Result<#ret, #nv::ToolError>> + Send;
            }
        });
        let variants = self.p.tools.iter().map(|t| {
            let v = pascal_ident(&t.name);
            let fields = t.params.iter().map(|(n, ty)| {
                let doc = format!(" `{n}: {ty}`");
                let n = snake_ident(n);
                let ty = self.at(format!("tool `{}`", t.name), || self.rust_ty(ty));
                quote!(#[doc = #doc] #n: #ty)
            });
            let doc = format!(" A call of `{}`.", t.name);
            quote!(#[doc = #doc] #v { #(#fields),* },)
        });
        let tool_arms = self.p.tools.iter().enumerate().map(|(i, t)| {
            let v = pascal_ident(&t.name);
            let i = super::num(i as u64);
            quote!(Call::#v { .. } => #i,)
        });
        let args_arms = self.p.tools.iter().map(|t| {
            let v = pascal_ident(&t.name);
            let names: Vec<Ident> = t.params.iter().map(|(n, _)| snake_ident(n)).collect();
            let pushes = t.params.iter().map(|(n, ty)| {
                let id = snake_ident(n);
                let d = match ty {
                    Ty::Secret(_) => quote!(#nv::Datum::secret(#id)),
                    _ => quote!(__nv::plain(#id)),
                };
                quote!((#n, #d))
            });
            quote!(Call::#v { #(#names),* } => vec![#(#pushes),*],)
        });
        let invoke_arms = self.p.tools.iter().map(|t| {
            let v = pascal_ident(&t.name);
            let m = snake_ident(&t.name);
            let names: Vec<Ident> = t.params.iter().map(|(n, _)| snake_ident(n)).collect();
            let reveals = t
                .params
                .iter()
                .filter(|(_, ty)| matches!(ty, Ty::Secret(_)))
                .map(|(n, _)| {
                    let id = snake_ident(n);
                    quote!(let #id = ctx.reveal(&#id).await?;)
                });
            let typed = t
                .params
                .iter()
                .filter(|(_, ty)| ty.is_composite())
                .map(|(n, ty)| {
                    let id = snake_ident(n);
                    let host = self.host_ty(ty);
                    let what = format!("argument `{n}` of tool `{}`", t.name);
                    quote!(let #id: #host = __nv::from_json(#id, #what)?;)
                });
            let call = if t.ret.is_composite() {
                quote!(self.#m(&ctx, #(#names),*).await.map(|v| __nv::to_json(&v)))
            } else {
                quote!(self.#m(&ctx, #(#names),*).await)
            };
            quote!(Call::#v { #(#names),* } => { #(#reveals)* #(#typed)* #call })
        });
        let empty = self.p.tools.is_empty();
        let tool_body = if empty {
            quote!(match *self {})
        } else {
            quote!(match self { #(#tool_arms)* })
        };
        let args_body = if empty {
            quote!(match *self {})
        } else {
            quote!(match self { #(#args_arms)* })
        };
        let invoke_body = if empty {
            quote!(match call {})
        } else {
            quote!(Box::pin(async move { match call { #(#invoke_arms)* } }))
        };
        let ctx = super::param(std::slice::from_ref(&invoke_body), "ctx");
        quote! {
            /// The host's tools: one typed method per tool the program declares. Implement it to
            /// run the program; a tool the program declares but the host forgets is a compile
            /// error, and the program cannot call anything else.
            ///
            /// Results come back as JSON (tools are the boundary with the outside world); the
            /// runtime decodes them against the declared type and treats a mismatch as a tool error.
            pub trait Tools: Send + Sync + 'static {
                #(#methods)*
            }

            /// Object-safe form of [`Tools`], implemented for every `T: Tools`.
            #[doc(hidden)]
            pub trait ToolsDyn: Send + Sync + 'static {
                #[doc(hidden)]
                fn __invoke(
                    self: ::std::sync::Arc<Self>,
                    call: Call,
                    ctx: #nv::ToolContext,
                ) -> #nv::BoxFuture<'static, Result<#nv::Json, #nv::ToolError>>;
            }

            impl<T: Tools> ToolsDyn for T {
                fn __invoke(
                    self: ::std::sync::Arc<Self>,
                    call: Call,
                    #ctx: #nv::ToolContext,
                ) -> #nv::BoxFuture<'static, Result<#nv::Json, #nv::ToolError>> {
                    #invoke_body
                }
            }

            /// A typed tool call, built by a step from the program's variables.
            #[derive(Clone, Debug)]
            pub enum Call {
                #(#variants)*
            }

            impl #nv::ToolCall for Call {
                fn tool(&self) -> usize {
                    #tool_body
                }

                fn args(&self) -> Vec<(&'static str, #nv::Datum)> {
                    #args_body
                }
            }
        }
    }
}
