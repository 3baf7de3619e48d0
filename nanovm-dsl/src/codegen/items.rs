//! The program's data types: `Input`, one enum per `choose`, `Step` and `State`.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::quote;

use super::{Gen, choice_ident, keyword, pascal_ident, snake_ident};

impl Gen<'_> {
    pub(super) fn input(&self) -> TokenStream {
        let fields = self.p.vars.iter().filter(|v| v.input).map(|v| {
            let name = snake_ident(&v.name);
            let ty = self.at(format!("variable `{}`", v.name), || self.host_ty(&v.ty));
            let doc = format!(" `{}: {}`", v.name, v.ty);
            quote!(#[doc = #doc] pub #name: #ty,)
        });
        let nv = &self.nv;
        // serde through the runtime's re-export: a user crate needs no serde dependency.
        let serde_path = format!("{}::serde", self.private).replace(' ', "");
        quote! {
            /// The program's typed inputs. Serialized, a `secret` field is its vault handle
            /// (`{"vault_id", "commitment"}`), never plaintext; unknown fields are refused. To
            /// build one from a JSON object of plaintext values (secrets go to the vault), use
            /// the runtime's `input_from_json`.
            #[derive(Clone, Debug, #nv::serde::Serialize, #nv::serde::Deserialize)]
            #[serde(crate = #serde_path, deny_unknown_fields)]
            pub struct Input {
                #(#fields)*
            }
        }
    }

    pub(super) fn choices(&self) -> TokenStream {
        // The doc comments every choice enum shares, built once as literals: `quote` parses a
        // literal written in its template (a `///` line is one) from text at every expansion.
        let doc_all = Literal::string(" Every member, in declaration order.");
        let doc_names =
            Literal::string(" The members as written in the program (the admissible answers).");
        let doc_as_str = Literal::string(" The member as written in the program.");
        let items = self.p.choices.iter().map(|c| {
            let e = choice_ident(&c.var);
            let doc = format!(" The admissible answers of `{}`.", c.var);
            let variants: Vec<Ident> = c.members.iter().map(|m| pascal_ident(m)).collect();
            let names = &c.members;
            let n = super::num(c.members.len() as u64);
            let var = &c.var;
            let member_docs = c.members.iter().map(|m| format!(" `{m}`"));
            quote! {
                #[doc = #doc]
                #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
                pub enum #e {
                    #(#[doc = #member_docs] #variants,)*
                }

                impl #e {
                    #[doc = #doc_all]
                    pub const ALL: [#e; #n] = [#(#e::#variants),*];
                    #[doc = #doc_names]
                    pub const NAMES: &'static [&'static str] = &[#(#names),*];

                    #[doc = #doc_as_str]
                    pub fn as_str(self) -> &'static str {
                        Self::NAMES[self as usize]
                    }

                    fn from_index(i: usize) -> Option<Self> {
                        Self::ALL.get(i).copied()
                    }
                }

                impl ::core::str::FromStr for #e {
                    type Err = __nv::UnknownChoice;
                    fn from_str(s: &str) -> Result<Self, Self::Err> {
                        match s {
                            #(#names => Ok(#e::#variants),)*
                            _ => Err(__nv::UnknownChoice::new(#var, s)),
                        }
                    }
                }

                impl ::core::fmt::Display for #e {
                    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        f.write_str(self.as_str())
                    }
                }
            }
        });
        quote!(#(#items)*)
    }

    pub(super) fn step_enum(&self) -> TokenStream {
        let variants = &self.step_variants;
        let names: Vec<&String> = self.p.steps.iter().map(|s| &s.name).collect();
        let ids = (0..variants.len() as u32).map(Literal::u32_unsuffixed);
        let n = super::num(variants.len() as u64);
        let docs = self.p.steps.iter().map(|s| {
            let mut d = vec![format!(" `{} {}`", keyword(&s.kind), s.name)];
            d.extend(s.doc.iter().map(|l| format!(" {l}")));
            quote!(#(#[doc = #d])*)
        });
        quote! {
            /// The steps, in source order.
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
            pub enum Step {
                #(#docs #variants,)*
            }

            impl Step {
                /// Every step, in source order.
                pub const ALL: [Step; #n] = [#(Step::#variants),*];

                /// The step's name in the program.
                pub fn name(self) -> &'static str {
                    match self {
                        #(Step::#variants => #names,)*
                    }
                }

                /// The step's id (its index in source order).
                pub fn id(self) -> u32 {
                    self as u32
                }

                /// The step with this id.
                pub fn from_id(id: u32) -> Option<Step> {
                    match id {
                        #(#ids => Some(Step::#variants),)*
                        _ => None,
                    }
                }
            }
        }
    }

    pub(super) fn state(&self) -> TokenStream {
        let fields = self.p.vars.iter().map(|v| {
            let name = snake_ident(&v.name);
            let ty = self.at(format!("variable `{}`", v.name), || self.rust_ty(&v.ty));
            if v.input {
                let doc = format!(" Input `{}`.", v.name);
                quote!(#[doc = #doc] pub #name: #ty,)
            } else {
                let doc = format!(" `{}`, once a step has assigned it.", v.name);
                quote!(#[doc = #doc] pub #name: Option<#ty>,)
            }
        });
        quote! {
            /// The program's variables: the inputs, and everything steps assign.
            #[derive(Clone, Debug)]
            pub struct State {
                #(#fields)*
            }
        }
    }
}
