//! Code generation: a lowered [`Program`] becomes one Rust module of typed items.
//!
//! For `program customer_refund` the module `customer_refund` holds `Input`, one enum per
//! `choose`, `Step`, `State`, the `Tools` trait (one typed method per declared tool), `Call`,
//! the `action` and `transition` functions (plain `match`es; conditions are plain Rust
//! expressions), `PROGRAM_HASH`, `MERMAID`, and `Program`, which implements the runtime's
//! program trait. Generated code reaches the runtime only through its hidden, versioned
//! `__private_v0_1` module.
//!
//! Output is deterministic byte for byte: everything is emitted in source order from vectors,
//! never from hash maps.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::check::Ty;
use crate::check::names::{choice_type_name, pascal};
use crate::lower::{
    Await, Call, Decision, Llm, LlmOut, Parallel, Part, Program, StepKind, TExpr, TKind, Template,
};
use crate::syntax::ast::{BinOp, Builtin, Literal as Lit};

/// The version tag of the runtime's hidden module that generated code uses.
pub const PRIVATE_MODULE: &str = "__private_v0_1";

/// Code generation settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The path of the crate that re-exports the runtime, e.g. `::nanovm` (the default) or
    /// `::nanovm_runtime`.
    pub runtime_path: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime_path: "::nanovm".into(),
        }
    }
}

/// Generates the module for one program.
pub fn generate(p: &Program, opts: &Options) -> TokenStream {
    Gen::new(p, opts).module()
}

/// Generates and pretty-prints several programs as one Rust file (build.rs output).
pub fn generate_file(programs: &[Program], opts: &Options, header: &str) -> String {
    let items: Vec<TokenStream> = programs.iter().map(|p| generate(p, opts)).collect();
    let tokens = quote!(#(#items)*);
    let body = match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        // Unparseable output would be a codegen bug; keep the raw tokens so rustc points at it.
        Err(_) => tokens.to_string(),
    };
    format!("{header}{body}")
}

/// A Rust identifier for a snake_case name, raw if it is a Rust keyword.
pub fn snake_ident(name: &str) -> Ident {
    if syn::parse_str::<Ident>(name).is_ok() {
        Ident::new(name, Span::call_site())
    } else {
        Ident::new_raw(name, Span::call_site())
    }
}

fn pascal_ident(name: &str) -> Ident {
    Ident::new(&pascal(name), Span::call_site())
}

fn choice_ident(var: &str) -> Ident {
    Ident::new(&choice_type_name(var), Span::call_site())
}

fn doc_attrs(doc: &[String]) -> TokenStream {
    let lines = doc.iter().map(|l| format!(" {l}"));
    quote!(#(#[doc = #lines])*)
}

struct Gen<'p> {
    p: &'p Program,
    /// The full path of the runtime's hidden module, imported once as `__nv`.
    private: TokenStream,
    /// `__nv`, the alias every other item uses.
    nv: TokenStream,
}

impl<'p> Gen<'p> {
    fn new(p: &'p Program, opts: &Options) -> Self {
        let root: syn::Path =
            syn::parse_str(&opts.runtime_path).unwrap_or_else(|_| syn::parse_quote!(::nanovm));
        let private = Ident::new(PRIVATE_MODULE, Span::call_site());
        Gen {
            p,
            private: quote!(#root::#private),
            nv: quote!(__nv),
        }
    }

    fn module(&self) -> TokenStream {
        let p = self.p;
        let name = snake_ident(&p.name);
        let doc = doc_attrs(&p.doc);
        let private = &self.private;
        let hash = p.hash.iter().map(|b| Literal::u8_unsuffixed(*b));
        let mermaid = crate::graph::mermaid(p);
        let input = self.input();
        let choices = self.choices();
        let steps = self.step_enum();
        let state = self.state();
        let tools = self.tools();
        let info = self.info();
        let imp = self.program_impl();
        let action = self.action_fn();
        let transition = self.transition_fn();
        let decisions = self.decision_fns();
        let branches = self.branch_fns();
        quote! {
            #doc
            #[allow(
                // Steps and variables keep the program's names; the module is the namespace.
                clippy::module_name_repetitions,
                // Generated matches mirror the program, even where one arm would do.
                clippy::match_single_binding,
                // Conditions are emitted fully parenthesised rather than re-deriving precedence.
                unused_parens,
                clippy::double_parens,
                clippy::match_same_arms,
                unreachable_patterns,
            )]
            pub mod #name {
                #[allow(unused_imports)]
                use #private as __nv;

                /// blake3 of the canonical program text and the compiler version.
                pub const PROGRAM_HASH: [u8; 32] = [#(#hash),*];

                /// The program's graph as a Mermaid flowchart.
                pub const MERMAID: &str = #mermaid;

                #input
                #choices
                #steps
                #state
                #tools
                #info
                #imp
                #action
                #transition
                #decisions
                #branches
            }
        }
    }

    // ----- types -----

    fn rust_ty(&self, ty: &Ty) -> TokenStream {
        let nv = &self.nv;
        match ty {
            Ty::Str => quote!(String),
            Ty::Int => quote!(i64),
            Ty::Float => quote!(f64),
            Ty::Bool => quote!(bool),
            Ty::Json | Ty::Error | Ty::Null | Ty::List(_) => quote!(#nv::Json),
            Ty::Secret(inner) => {
                let inner = self.rust_ty(inner);
                quote!(#nv::SecretRef<#inner>)
            }
            Ty::Choice(c) => {
                let e = choice_ident(&self.p.choices[*c].var);
                quote!(#e)
            }
        }
    }

    fn input(&self) -> TokenStream {
        let fields = self.p.vars.iter().filter(|v| v.input).map(|v| {
            let name = snake_ident(&v.name);
            let ty = self.rust_ty(&v.ty);
            let doc = format!(" `{}: {}`", v.name, v.ty);
            quote!(#[doc = #doc] pub #name: #ty,)
        });
        quote! {
            /// The program's typed inputs.
            #[derive(Clone, Debug)]
            pub struct Input {
                #(#fields)*
            }
        }
    }

    fn choices(&self) -> TokenStream {
        let items = self.p.choices.iter().map(|c| {
            let e = choice_ident(&c.var);
            let doc = format!(" The admissible answers of `{}`.", c.var);
            let variants: Vec<Ident> = c.members.iter().map(|m| pascal_ident(m)).collect();
            let names = &c.members;
            let n = c.members.len();
            let var = &c.var;
            let member_docs = c.members.iter().map(|m| format!(" `{m}`"));
            quote! {
                #[doc = #doc]
                #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
                pub enum #e {
                    #(#[doc = #member_docs] #variants,)*
                }

                impl #e {
                    /// Every member, in declaration order.
                    pub const ALL: [#e; #n] = [#(#e::#variants),*];
                    /// The members as written in the program (the admissible answers).
                    pub const NAMES: &'static [&'static str] = &[#(#names),*];

                    /// The member as written in the program.
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

    fn step_enum(&self) -> TokenStream {
        let variants: Vec<Ident> = self.p.steps.iter().map(|s| pascal_ident(&s.name)).collect();
        let names: Vec<&String> = self.p.steps.iter().map(|s| &s.name).collect();
        let n = variants.len();
        let ids = (0..n as u32).map(Literal::u32_unsuffixed);
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

    fn state(&self) -> TokenStream {
        let fields = self.p.vars.iter().map(|v| {
            let name = snake_ident(&v.name);
            let ty = self.rust_ty(&v.ty);
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

    fn param_ty(&self, ty: &Ty) -> TokenStream {
        let nv = &self.nv;
        match ty {
            Ty::Secret(inner) => {
                let inner = self.rust_ty(inner);
                quote!(#nv::Secret<#inner>)
            }
            other => self.rust_ty(other),
        }
    }

    fn tools(&self) -> TokenStream {
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
            let params = t.params.iter().map(|(n, ty)| {
                let n = snake_ident(n);
                let ty = self.param_ty(ty);
                quote!(#n: #ty)
            });
            quote! {
                #(#[doc = #doc])*
                fn #name(&self, ctx: &#nv::ToolContext, #(#params),*)
                    -> impl ::core::future::Future<Output = Result<#nv::Json, #nv::ToolError>> + Send;
            }
        });
        let variants = self.p.tools.iter().map(|t| {
            let v = pascal_ident(&t.name);
            let fields = t.params.iter().map(|(n, ty)| {
                let doc = format!(" `{n}: {ty}`");
                let n = snake_ident(n);
                let ty = self.rust_ty(ty);
                quote!(#[doc = #doc] #n: #ty)
            });
            let doc = format!(" A call of `{}`.", t.name);
            quote!(#[doc = #doc] #v { #(#fields),* },)
        });
        let tool_arms = self.p.tools.iter().enumerate().map(|(i, t)| {
            let v = pascal_ident(&t.name);
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
            quote!(Call::#v { #(#names),* } => { #(#reveals)* self.#m(&ctx, #(#names),*).await })
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
                #[allow(unused_variables)]
                fn __invoke(
                    self: ::std::sync::Arc<Self>,
                    call: Call,
                    ctx: #nv::ToolContext,
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

    fn info(&self) -> TokenStream {
        let nv = &self.nv;
        let p = self.p;
        let opt = |v: Option<u64>| match v {
            Some(v) => quote!(Some(#v)),
            None => quote!(None),
        };
        let b = &p.budget;
        let (ms, mt, mss, mtc) = (
            opt(b.max_steps),
            opt(b.max_tokens),
            opt(b.max_stalled_steps),
            opt(b.max_tool_calls),
        );
        let md = match b.max_duration_ms {
            Some(v) => quote!(Some(::core::time::Duration::from_millis(#v))),
            None => quote!(None),
        };
        let name = &p.name;
        let inputs = p.vars.iter().filter(|v| v.input).map(|v| {
            let n = &v.name;
            let t = v.ty.to_string();
            let secret = matches!(v.ty, Ty::Secret(_));
            quote!(#nv::InputInfo { name: #n, ty: #t, secret: #secret })
        });
        let tools = p.tools.iter().map(|t| {
            let n = &t.name;
            let (e, i) = (t.effect, t.idempotent);
            quote!(#nv::ToolInfo { name: #n, effect: #e, idempotent: #i })
        });
        let steps = p.steps.iter().map(|s| {
            let n = &s.name;
            let kind = kind_tokens(nv, &s.kind);
            let retry = step_retry(&s.kind);
            let parallel = match &s.kind {
                StepKind::Parallel(par) => {
                    let branches = par.branches.iter().map(|b| {
                        let bn = &b.name;
                        let bk = kind_tokens(nv, &b.kind);
                        let br = step_retry(&b.kind);
                        let after: &[usize] = match &b.kind {
                            StepKind::Llm(l) => &l.after,
                            StepKind::Call(c) => &c.after,
                            _ => &[],
                        };
                        let after = after.iter().map(|&a| a as u16);
                        quote!(#nv::BranchInfo { name: #bn, kind: #bk, retry: #br, after: &[#(#after),*] })
                    });
                    let mc = match par.max_concurrency {
                        Some(m) => quote!(Some(#m)),
                        None => quote!(None),
                    };
                    let r = par.retry;
                    quote!(Some(&#nv::ParallelInfo {
                        branches: &[#(#branches),*],
                        max_concurrency: #mc,
                        retry: #r,
                    }))
                }
                _ => quote!(None),
            };
            quote!(#nv::StepInfo { name: #n, kind: #kind, retry: #retry, parallel: #parallel })
        });
        let start = p.start as u32;
        quote! {
            static INFO: #nv::ProgramInfo = #nv::ProgramInfo {
                name: #name,
                hash: #nv::Digest(PROGRAM_HASH),
                budget: #nv::Budget {
                    max_steps: #ms,
                    max_tokens: #mt,
                    max_stalled_steps: #mss,
                    max_duration: #md,
                    max_tool_calls: #mtc,
                },
                inputs: &[#(#inputs),*],
                tools: &[#(#tools),*],
                steps: &[#(#steps),*],
                start: #start,
            };
        }
    }

    fn program_impl(&self) -> TokenStream {
        let nv = &self.nv;
        let record: Vec<_> = self
            .p
            .vars
            .iter()
            .filter(|v| v.input)
            .map(|v| {
                let n = snake_ident(&v.name);
                match v.ty {
                    Ty::Secret(_) => quote!(#nv::Datum::secret(&input.#n)),
                    _ => quote!(#nv::plain(&input.#n)),
                }
            })
            .collect();
        // A program without inputs records none and never reads `input`.
        let record_allow = record
            .is_empty()
            .then(|| quote!(#[allow(unused_variables)]));
        let mut input_index = 0usize;
        let restore = self.p.vars.iter().map(|v| {
            let n = snake_ident(&v.name);
            let name = &v.name;
            if v.input {
                let i = input_index;
                input_index += 1;
                match &v.ty {
                    Ty::Secret(_) => quote!(#n: __nv::secret_input(inputs, #i, #name)?,),
                    _ => quote!(#n: __nv::input(inputs, #i, #name)?,),
                }
            } else {
                quote!(#n: None,)
            }
        });
        let outputs = self
            .p
            .vars
            .iter()
            .filter(|v| !v.input && !matches!(v.ty, Ty::Secret(_)))
            .map(|v| {
                let n = snake_ident(&v.name);
                let name = &v.name;
                let conv = match v.ty {
                    Ty::Choice(_) => quote!(#nv::Json::from(x.as_str())),
                    Ty::Json => quote!(x.clone()),
                    _ => quote!(#nv::Json::from(x.clone())),
                };
                quote! {
                    if let Some(x) = &state.#n {
                        out.push((#name, #conv));
                    }
                }
            })
            .collect::<Vec<_>>();
        // A program without variables has no outputs: no `out` to fill (clippy's
        // `let_and_return` would fire on an empty fill).
        let outputs_body = if outputs.is_empty() {
            quote!(Vec::new())
        } else {
            let n = outputs.len();
            quote! {
                let mut out = Vec::with_capacity(#n);
                #(#outputs)*
                out
            }
        };
        let step_err =
            quote!(#nv::Fault::Input { name: "step", message: format!("no step has id {step}") });
        quote! {
            /// The compiled program; run it with the runtime.
            #[derive(Clone, Copy, Debug, Default)]
            pub struct Program;

            impl #nv::Program for Program {
                type Input = Input;
                type State = State;
                type Tools = dyn ToolsDyn;
                type Call = Call;

                fn info() -> &'static #nv::ProgramInfo {
                    &INFO
                }

                #record_allow
                fn record_input(input: &Input) -> Vec<#nv::Datum> {
                    vec![#(#record),*]
                }

                #[allow(unused_variables)]
                fn restore(inputs: &[#nv::Datum]) -> Result<State, #nv::Fault> {
                    Ok(State { #(#restore)* })
                }

                fn action(step: #nv::StepId, state: &State) -> Result<#nv::Action<Call>, #nv::Fault> {
                    match Step::from_id(step) {
                        Some(s) => action(s, state),
                        None => Err(#step_err),
                    }
                }

                fn transition(step: #nv::StepId, state: &mut State, outcome: #nv::Outcome<'_>) -> #nv::Next {
                    match Step::from_id(step) {
                        Some(s) => transition(s, state, outcome),
                        None => #nv::Next::Fail(format!("no step has id {step}")),
                    }
                }

                fn branch_action(step: #nv::StepId, branch: #nv::BranchId, state: &State) -> Result<#nv::Action<Call>, #nv::Fault> {
                    match Step::from_id(step) {
                        Some(s) => branch_action(s, branch, state),
                        None => Err(#step_err),
                    }
                }

                fn apply_branch(step: #nv::StepId, branch: #nv::BranchId, state: &mut State, outcome: #nv::Outcome<'_>) -> #nv::Next {
                    match Step::from_id(step) {
                        Some(s) => apply_branch(s, branch, state, outcome),
                        None => #nv::Next::Fail(format!("no step has id {step}")),
                    }
                }

                fn invoke(
                    tools: &::std::sync::Arc<dyn ToolsDyn>,
                    call: Call,
                    ctx: #nv::ToolContext,
                ) -> #nv::BoxFuture<'static, Result<#nv::Json, #nv::ToolError>> {
                    ::std::sync::Arc::clone(tools).__invoke(call, ctx)
                }

                #[allow(unused_variables)]
                fn outputs(state: &State) -> Vec<(&'static str, #nv::Json)> {
                    #outputs_body
                }
            }
        }
    }

    // ----- behaviour -----

    fn action_fn(&self) -> TokenStream {
        let nv = &self.nv;
        let arms = self.p.steps.iter().map(|s| {
            let v = pascal_ident(&s.name);
            let body = match &s.kind {
                StepKind::Llm(l) => self.llm_action(l),
                StepKind::Call(c) => self.call_action(c),
                StepKind::Guard(_) | StepKind::Branch(_) => quote!(#nv::Action::Decide),
                StepKind::Parallel(_) => quote!(#nv::Action::Parallel),
                StepKind::Await(a) => {
                    let ev = &a.event;
                    let timeout = match a.timeout {
                        Some((ms, _)) => quote!(Some(::core::time::Duration::from_millis(#ms))),
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
            };
            quote!(Step::#v => #body,)
        });
        quote! {
            /// What `step` asks the runtime to do, given the current variables.
            #[allow(unused_variables)]
            pub fn action(step: Step, state: &State) -> Result<#nv::Action<Call>, #nv::Fault> {
                Ok(match step {
                    #(#arms)*
                })
            }
        }
    }

    fn llm_action(&self, l: &Llm) -> TokenStream {
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
            Some(m) => quote!(Some(#m)),
            None => quote!(None),
        };
        let choices = match &l.output {
            LlmOut::Choose { choice, .. } => {
                let e = choice_ident(&self.p.choices[*choice].var);
                quote!(Some(#e::NAMES))
            }
            _ => quote!(None),
        };
        quote!(#nv::Action::Llm(#nv::LlmCall {
            system: #system,
            prompt: #prompt,
            model: #model,
            max_tokens: #max_tokens,
            choices: #choices,
        }))
    }

    fn template(&self, t: &Template) -> TokenStream {
        let cap: usize = t
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(s) => s.len(),
                Part::Hole { .. } => 16,
            })
            .sum();
        let pushes = t.parts.iter().map(|p| match p {
            Part::Text(s) => quote!(s.push_str(#s);),
            Part::Hole { var, fields, .. } => {
                let v = &self.p.vars[*var];
                if let Ty::Choice(_) = v.ty {
                    let value = self.var_value(*var);
                    return quote!(s.push_str(#value.as_str()););
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
    fn var_ref(&self, var: usize) -> TokenStream {
        let v = &self.p.vars[var];
        let n = snake_ident(&v.name);
        let name = &v.name;
        if v.input {
            quote!(&state.#n)
        } else {
            quote!(__nv::get(&state.#n, #name)?)
        }
    }

    /// A variable of a `Copy` type by value.
    fn var_value(&self, var: usize) -> TokenStream {
        let v = &self.p.vars[var];
        let n = snake_ident(&v.name);
        let name = &v.name;
        if v.input {
            quote!(state.#n)
        } else {
            quote!((*__nv::get(&state.#n, #name)?))
        }
    }

    /// A variable as a place whose methods can be called (`state.x`, `__nv::get(..)?`).
    fn var_place(&self, var: usize) -> TokenStream {
        let v = &self.p.vars[var];
        let n = snake_ident(&v.name);
        let name = &v.name;
        if v.input {
            quote!(state.#n)
        } else {
            quote!(__nv::get(&state.#n, #name)?)
        }
    }

    fn call_action(&self, c: &Call) -> TokenStream {
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
    fn arg_value(&self, e: &TExpr, param: &Ty) -> TokenStream {
        let nv = &self.nv;
        if let (Ty::Secret(_), TKind::Var(v)) = (param, &e.kind) {
            return self.var_value(*v);
        }
        if let (Ty::Str, Ty::Str, TKind::Var(v)) = (param, &e.ty, &e.kind) {
            let place = self.var_place(*v);
            return quote!(#place.clone());
        }
        match param {
            Ty::Str => match &e.ty {
                Ty::Choice(_) => {
                    let x = self.expr(e);
                    quote!(String::from(#x.as_str()))
                }
                _ => {
                    let x = self.str_expr(e);
                    quote!(String::from(#x))
                }
            },
            Ty::Int => self.expr(e),
            Ty::Float => self.float_expr(e),
            Ty::Bool => self.bool_expr(e),
            _ => match &e.ty {
                Ty::Json => {
                    let x = self.expr(e);
                    quote!(::core::clone::Clone::clone(#x))
                }
                Ty::Str => {
                    let x = self.str_expr(e);
                    quote!(#nv::Json::from(#x))
                }
                Ty::Choice(_) => {
                    let x = self.expr(e);
                    quote!(#nv::Json::from(#x.as_str()))
                }
                Ty::Null => quote!(#nv::Json::Null),
                Ty::List(_) => {
                    let TKind::List(items) = &e.kind else {
                        return quote!(#nv::Json::Null);
                    };
                    let items = items.iter().map(|i| self.arg_value(i, &Ty::Json));
                    quote!(#nv::Json::Array(vec![#(#items),*]))
                }
                _ => {
                    let x = self.expr(e);
                    quote!(#nv::Json::from(#x))
                }
            },
        }
    }

    fn transition_fn(&self) -> TokenStream {
        let nv = &self.nv;
        let mut arms = Vec::new();
        for (i, s) in self.p.steps.iter().enumerate() {
            let v = pascal_ident(&s.name);
            let fail = |what: &str| {
                let msg = format!("{what} `{}` failed and has no `on error` edge", s.name);
                quote!(#nv::Next::Fail(String::from(#msg)))
            };
            match &s.kind {
                StepKind::Llm(l) => {
                    let next = l.next.map_or(i, |n| n);
                    let go = self.go(next);
                    match &l.output {
                        LlmOut::Choose { var, choice } => {
                            let e = choice_ident(&self.p.choices[*choice].var);
                            let f = snake_ident(&self.p.vars[*var].name);
                            arms.push(quote! {
                                (Step::#v, #nv::Outcome::Choice(i)) => match #e::from_index(i) {
                                    Some(c) => {
                                        state.#f = Some(c);
                                        #go
                                    }
                                    None => #nv::Next::Reject(format!("choice index {i} out of range")),
                                },
                            });
                            let invalid = match l.on_invalid {
                                Some(t) => self.go(t),
                                None => quote!(#nv::Next::Stall),
                            };
                            arms.push(quote!((Step::#v, #nv::Outcome::Invalid) => #invalid,));
                        }
                        LlmOut::Into { var } => {
                            let f = snake_ident(&self.p.vars[*var].name);
                            arms.push(quote! {
                                (Step::#v, #nv::Outcome::Text(t)) => {
                                    state.#f = Some(String::from(t));
                                    #go
                                }
                            });
                        }
                        LlmOut::Discard => {
                            arms.push(quote!((Step::#v, #nv::Outcome::Text(_)) => #go,))
                        }
                    }
                    let on_error = match l.on_error {
                        Some(t) => self.go(t),
                        None => fail("llm step"),
                    };
                    arms.push(quote!((Step::#v, #nv::Outcome::Failed) => #on_error,));
                }
                StepKind::Call(c) => {
                    let next = c.next.map_or(i, |n| n);
                    let go = self.go(next);
                    let accept = self.accept_tool(c, &go);
                    arms.push(quote!((Step::#v, #nv::Outcome::Tool(value)) => #accept,));
                    let on_error = match c.on_error {
                        Some(t) => self.go(t),
                        None => fail("call"),
                    };
                    arms.push(quote!((Step::#v, #nv::Outcome::Failed) => #on_error,));
                }
                StepKind::Guard(_) | StepKind::Branch(_) => {
                    let f = format_ident!("decide_{}", s.name);
                    arms.push(quote! {
                        (Step::#v, #nv::Outcome::Decide) => match #f(state) {
                            Ok((arm, to)) => #nv::Next::Decided { arm, to: to.id() },
                            Err(fault) => #nv::Next::Fault(fault),
                        },
                    });
                }
                StepKind::Parallel(par) => {
                    let go = self.go(par.next);
                    arms.push(quote!((Step::#v, #nv::Outcome::Joined) => #go,));
                    let on_error = match par.on_error {
                        Some(t) => self.go(t),
                        None => fail("parallel step"),
                    };
                    arms.push(quote!((Step::#v, #nv::Outcome::Failed) => #on_error,));
                }
                StepKind::Await(a) => arms.push(self.await_arms(&v, a)),
                StepKind::End { .. } => {}
            }
        }
        quote! {
            /// The compiled transition function: applies the outcome of `step` to the variables
            /// and names the successor.
            #[allow(unused_variables)]
            pub fn transition(step: Step, state: &mut State, outcome: #nv::Outcome<'_>) -> #nv::Next {
                match (step, outcome) {
                    #(#arms)*
                    (step, outcome) => __nv::unexpected(step.name(), &outcome),
                }
            }
        }
    }

    fn go(&self, to: usize) -> TokenStream {
        let nv = &self.nv;
        let v = pascal_ident(&self.p.steps[to].name);
        quote!(#nv::Next::Go(Step::#v.id()))
    }

    /// Decodes a tool result against the declared type, stores it if the call has `into`.
    fn accept_tool(&self, c: &Call, go: &TokenStream) -> TokenStream {
        let nv = &self.nv;
        let tool = &self.p.tools[c.tool];
        let ty = self.rust_ty(&tool.ret);
        let what = format!("tool `{}`", tool.name);
        let accept = match c.into {
            Some(var) => {
                let f = snake_ident(&self.p.vars[var].name);
                quote!(Ok(x) => {
                    state.#f = Some(x);
                    #go
                })
            }
            // Not stored, but still checked against the declared type.
            None => quote!(Ok(_) => #go,),
        };
        quote! {
            match __nv::decode::<#ty>(value, #what) {
                #accept
                Err(message) => #nv::Next::Reject(message),
            }
        }
    }

    fn await_arms(&self, v: &Ident, a: &Await) -> TokenStream {
        let nv = &self.nv;
        let go = self.go(a.next);
        let ty = self.rust_ty(&a.ty);
        let what = format!("the event `{}`", a.event);
        let accept = match a.into {
            Some(var) => {
                let f = snake_ident(&self.p.vars[var].name);
                quote!(Ok(x) => {
                    state.#f = Some(x);
                    #go
                })
            }
            None => quote!(Ok(_) => #go,),
        };
        let timeout = a.timeout.map(|(_, t)| {
            let go = self.go(t);
            quote!((Step::#v, #nv::Outcome::Timeout) => #go,)
        });
        quote! {
            (Step::#v, #nv::Outcome::Event(value)) => match __nv::decode::<#ty>(value, #what) {
                #accept
                Err(message) => #nv::Next::Reject(message),
            },
            #timeout
        }
    }

    fn decision_fns(&self) -> TokenStream {
        let nv = &self.nv;
        let fns = self.p.steps.iter().filter_map(|s| {
            let (StepKind::Guard(d) | StepKind::Branch(d)) = &s.kind else {
                return None;
            };
            Some(self.decision_fn(&s.name, d, nv))
        });
        quote!(#(#fns)*)
    }

    fn decision_fn(&self, name: &str, d: &Decision, nv: &TokenStream) -> TokenStream {
        let f = format_ident!("decide_{}", name);
        let doc = format!(" The arms of `{name}`, first true `when` wins.");
        let arms = d.arms.iter().enumerate().map(|(i, (cond, to))| {
            let c = self.bool_expr(cond);
            let to = pascal_ident(&self.p.steps[*to].name);
            let i = i as u32;
            quote! {
                if #c {
                    return Ok((Some(#i), Step::#to));
                }
            }
        });
        let otherwise = pascal_ident(&self.p.steps[d.otherwise].name);
        quote! {
            #[doc = #doc]
            #[allow(unused_variables, clippy::nonminimal_bool, clippy::bool_comparison)]
            fn #f(state: &State) -> Result<(Option<u32>, Step), #nv::Fault> {
                #(#arms)*
                Ok((None, Step::#otherwise))
            }
        }
    }

    fn branch_fns(&self) -> TokenStream {
        let nv = &self.nv;
        let mut action_arms = Vec::new();
        let mut apply_arms = Vec::new();
        for s in &self.p.steps {
            let StepKind::Parallel(Parallel { branches, .. }) = &s.kind else {
                continue;
            };
            let v = pascal_ident(&s.name);
            for (b, branch) in branches.iter().enumerate() {
                let b = b as u16;
                let accepted = quote!(#nv::Next::Go(Step::#v.id()));
                match &branch.kind {
                    StepKind::Llm(l) => {
                        let act = self.llm_action(l);
                        action_arms.push(quote!((Step::#v, #b) => Ok(#act),));
                        match &l.output {
                            LlmOut::Choose { var, choice } => {
                                let e = choice_ident(&self.p.choices[*choice].var);
                                let f = snake_ident(&self.p.vars[*var].name);
                                apply_arms.push(quote! {
                                    (Step::#v, #b, #nv::Outcome::Choice(i)) => match #e::from_index(i) {
                                        Some(c) => {
                                            state.#f = Some(c);
                                            #accepted
                                        }
                                        None => #nv::Next::Reject(format!("choice index {i} out of range")),
                                    },
                                });
                                let msg = format!(
                                    "branch `{}` got an answer outside its choices",
                                    branch.name
                                );
                                apply_arms.push(quote!((Step::#v, #b, #nv::Outcome::Invalid) => #nv::Next::Reject(String::from(#msg)),));
                            }
                            LlmOut::Into { var } => {
                                let f = snake_ident(&self.p.vars[*var].name);
                                apply_arms.push(quote! {
                                    (Step::#v, #b, #nv::Outcome::Text(t)) => {
                                        state.#f = Some(String::from(t));
                                        #accepted
                                    }
                                });
                            }
                            LlmOut::Discard => apply_arms
                                .push(quote!((Step::#v, #b, #nv::Outcome::Text(_)) => #accepted,)),
                        }
                    }
                    StepKind::Call(c) => {
                        let act = self.call_action(c);
                        action_arms.push(quote!((Step::#v, #b) => Ok(#act),));
                        let accept = self.accept_tool(c, &accepted);
                        apply_arms
                            .push(quote!((Step::#v, #b, #nv::Outcome::Tool(value)) => #accept,));
                    }
                    _ => {}
                }
            }
        }
        quote! {
            /// What branch `branch` of the parallel step `step` asks for.
            #[allow(unused_variables)]
            pub fn branch_action(step: Step, branch: u16, state: &State) -> Result<#nv::Action<Call>, #nv::Fault> {
                match (step, branch) {
                    #(#action_arms)*
                    (step, branch) => Err(#nv::Fault::Input {
                        name: "branch",
                        message: format!("step `{}` has no branch {branch}", step.name()),
                    }),
                }
            }

            /// Applies a branch's outcome; `Next::Go` (with the parallel step's id) accepts it.
            #[allow(unused_variables)]
            pub fn apply_branch(step: Step, branch: u16, state: &mut State, outcome: #nv::Outcome<'_>) -> #nv::Next {
                match (step, branch, outcome) {
                    #(#apply_arms)*
                    (step, _, outcome) => __nv::unexpected(step.name(), &outcome),
                }
            }
        }
    }

    // ----- expressions -----
    //
    // Each typed expression compiles to a Rust expression of a fixed shape per type:
    // `string` -> `&str`, `int` -> `i64`, `float` -> `f64`, `bool` -> `bool`, `json` -> `&Json`,
    // a choice -> the choice enum (by value). Faults propagate with `?`, so these expressions
    // live inside functions returning `Result<_, Fault>`.

    fn expr(&self, e: &TExpr) -> TokenStream {
        match (&e.kind, &e.ty) {
            (TKind::Var(v), ty) => match ty {
                Ty::Str => {
                    let place = self.var_place(*v);
                    quote!(#place.as_str())
                }
                Ty::Int | Ty::Float | Ty::Bool | Ty::Choice(_) => self.var_value(*v),
                _ => self.var_ref(*v),
            },
            (TKind::Field { .. }, _) => self.json_expr(e),
            (_, Ty::Str) => self.str_expr(e),
            (_, Ty::Int) => self.int_expr(e),
            (_, Ty::Float) => self.float_expr(e),
            (_, Ty::Bool) => self.bool_expr(e),
            (TKind::Lit(Lit::Null), _) => {
                let nv = &self.nv;
                quote!((&#nv::Json::Null))
            }
            _ => self.json_expr(e),
        }
    }

    fn str_expr(&self, e: &TExpr) -> TokenStream {
        match &e.kind {
            TKind::Lit(Lit::Str(s)) => quote!(#s),
            TKind::Var(_) => self.expr(e),
            TKind::Field { .. } => {
                let j = self.json_expr(e);
                let p = path_text(self.p, e);
                quote!(__nv::json_str(#j, #p)?)
            }
            TKind::Builtin { func, arg } => {
                let a = self.str_or_json_str(arg);
                match func {
                    Builtin::Lower => quote!((&*__nv::lower(#a))),
                    Builtin::Upper => quote!((&*__nv::upper(#a))),
                    Builtin::Trim => quote!(#a.trim()),
                    Builtin::Len => quote!(""),
                }
            }
            TKind::Binary { op: BinOp::Add, .. } => {
                let parts = chain_operands(e).into_iter().map(|(_, e)| self.str_expr(e));
                quote!((&*__nv::concat(&[#(#parts),*])))
            }
            _ => quote!(""),
        }
    }

    fn str_or_json_str(&self, e: &TExpr) -> TokenStream {
        match e.ty {
            Ty::Json => {
                let j = self.json_expr(e);
                let p = path_text(self.p, e);
                quote!(__nv::json_str(#j, #p)?)
            }
            Ty::Choice(_) => {
                let x = self.expr(e);
                quote!(#x.as_str())
            }
            _ => self.str_expr(e),
        }
    }

    fn int_expr(&self, e: &TExpr) -> TokenStream {
        match &e.kind {
            TKind::Lit(Lit::Int(i)) => {
                let l = Literal::i64_unsuffixed(*i);
                quote!((#l))
            }
            TKind::Var(_) => self.expr(e),
            TKind::Builtin {
                func: Builtin::Len,
                arg,
            } => match &arg.ty {
                Ty::Json => {
                    let j = self.json_expr(arg);
                    let p = path_text(self.p, arg);
                    quote!(__nv::json_len(#j, #p)?)
                }
                Ty::List(_) => {
                    let n = match &arg.kind {
                        TKind::List(items) => items.len() as i64,
                        _ => 0,
                    };
                    quote!((#n))
                }
                _ => {
                    let s = self.str_expr(arg);
                    quote!(__nv::str_len(#s))
                }
            },
            TKind::Binary { .. } => {
                let parts = chain_operands(e);
                let first = self.int_expr(parts[0].1);
                let rest = parts[1..].iter().map(|(sub, e)| {
                    let x = self.int_expr(e);
                    quote!((#sub, #x))
                });
                let text = crate::canonical::expr(&to_ast_text(self.p, e));
                quote!(__nv::checked_sum(#first, &[#(#rest),*], #text)?)
            }
            _ => quote!(0i64),
        }
    }

    fn float_expr(&self, e: &TExpr) -> TokenStream {
        match (&e.kind, &e.ty) {
            (_, Ty::Int) => {
                let i = self.int_expr(e);
                quote!((#i as f64))
            }
            (TKind::Lit(Lit::Float(f)), _) => {
                let l = Literal::f64_unsuffixed(*f);
                quote!((#l))
            }
            (TKind::Var(_), _) => self.expr(e),
            (TKind::Binary { .. }, _) => {
                let parts = chain_operands(e);
                let terms = parts.iter().enumerate().map(|(i, (sub, e))| {
                    let x = self.float_expr(e);
                    match (i, sub) {
                        (0, _) => quote!(#x),
                        (_, true) => quote!(- #x),
                        (_, false) => quote!(+ #x),
                    }
                });
                quote!((#(#terms)*))
            }
            _ => quote!(0f64),
        }
    }

    fn json_expr(&self, e: &TExpr) -> TokenStream {
        match &e.kind {
            TKind::Var(v) => self.var_ref(*v),
            TKind::Field { base, name } => {
                let b = self.json_expr(base);
                let p = path_text(self.p, base);
                quote!(__nv::field(#b, #p, #name)?)
            }
            _ => {
                let nv = &self.nv;
                quote!((&#nv::Json::Null))
            }
        }
    }

    /// A numeric operand as `Num` (for comparisons involving json or mixed types).
    fn num(&self, e: &TExpr) -> TokenStream {
        let nv = &self.nv;
        let _ = nv;
        match e.ty {
            Ty::Json => {
                let j = self.json_expr(e);
                let p = path_text(self.p, e);
                quote!(__nv::json_num(#j, #p)?)
            }
            Ty::Int => {
                let i = self.int_expr(e);
                quote!(__nv::Num::I(#i))
            }
            _ => {
                let f = self.float_expr(e);
                quote!(__nv::Num::F(#f))
            }
        }
    }

    fn bool_expr(&self, e: &TExpr) -> TokenStream {
        match &e.kind {
            TKind::Lit(Lit::Bool(b)) => quote!(#b),
            TKind::Var(_) if e.ty == Ty::Bool => self.expr(e),
            TKind::Var(_) | TKind::Field { .. } => {
                let j = self.json_expr(e);
                let p = path_text(self.p, e);
                quote!(__nv::json_bool(#j, #p)?)
            }
            TKind::Not(x) => {
                let x = self.bool_expr(x);
                quote!((!#x))
            }
            TKind::Binary { op, lhs, rhs } => self.binary(e, *op, lhs, rhs),
            _ => quote!(false),
        }
    }

    fn binary(&self, whole: &TExpr, op: BinOp, l: &TExpr, r: &TExpr) -> TokenStream {
        let nv = &self.nv;
        match op {
            // A chain `a or b or c` is one flat Rust expression, not nested parentheses: long
            // chains must not turn into deep syntax trees for rustc, syn or prettyplease.
            BinOp::And | BinOp::Or => {
                let parts = chain_operands(whole)
                    .into_iter()
                    .map(|(_, e)| self.bool_expr(e));
                if op == BinOp::And {
                    quote!((#(#parts)&&*))
                } else {
                    quote!((#(#parts)||*))
                }
            }
            BinOp::Eq | BinOp::Ne => {
                let eq = self.equality(l, r);
                if op == BinOp::Eq { eq } else { quote!((!#eq)) }
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let sym = match op {
                    BinOp::Lt => quote!(<),
                    BinOp::Le => quote!(<=),
                    BinOp::Gt => quote!(>),
                    _ => quote!(>=),
                };
                match (&l.ty, &r.ty) {
                    (Ty::Int, Ty::Int) => {
                        let (a, b) = (self.int_expr(l), self.int_expr(r));
                        quote!((#a #sym #b))
                    }
                    (Ty::Int | Ty::Float, Ty::Int | Ty::Float) => {
                        let (a, b) = (self.float_expr(l), self.float_expr(r));
                        quote!((#a #sym #b))
                    }
                    _ => {
                        let (a, b) = (self.num(l), self.num(r));
                        let test = match op {
                            BinOp::Lt => quote!(is_lt),
                            BinOp::Le => quote!(is_le),
                            BinOp::Gt => quote!(is_gt),
                            _ => quote!(is_ge),
                        };
                        quote!(__nv::num_cmp(#a, #b).#test())
                    }
                }
            }
            BinOp::Contains | BinOp::StartsWith | BinOp::EndsWith => {
                let needle = self.str_or_json_str(r);
                if l.ty == Ty::Json && op == BinOp::Contains {
                    let j = self.json_expr(l);
                    let p = path_text(self.p, l);
                    return quote!(__nv::json_contains(#j, #p, #needle)?);
                }
                let hay = self.str_or_json_str(l);
                match op {
                    BinOp::Contains => quote!(#hay.contains(#needle)),
                    BinOp::StartsWith => quote!(#hay.starts_with(#needle)),
                    _ => quote!(#hay.ends_with(#needle)),
                }
            }
            BinOp::In => self.membership(l, r),
            BinOp::Add | BinOp::Sub => {
                let _ = nv;
                quote!(false)
            }
        }
    }

    fn equality(&self, l: &TExpr, r: &TExpr) -> TokenStream {
        let nv = &self.nv;
        match (&l.ty, &r.ty) {
            (Ty::Null, Ty::Null) => quote!(true),
            (Ty::Json, Ty::Null) => {
                let j = self.json_expr(l);
                quote!(#j.is_null())
            }
            (Ty::Null, Ty::Json) => self.equality(r, l),
            (Ty::Choice(c), Ty::Str) => {
                let x = self.expr(l);
                if let TKind::Lit(Lit::Str(s)) = &r.kind {
                    let e = choice_ident(&self.p.choices[*c].var);
                    let m = pascal_ident(s);
                    quote!((#x == #e::#m))
                } else {
                    let s = self.str_expr(r);
                    quote!((#x.as_str() == #s))
                }
            }
            (Ty::Str, Ty::Choice(_)) => self.equality(r, l),
            (Ty::Choice(_), Ty::Choice(_)) | (Ty::Bool, Ty::Bool) => {
                let (a, b) = (self.expr(l), self.expr(r));
                quote!((#a == #b))
            }
            (Ty::Str, Ty::Str) => {
                let (a, b) = (self.str_expr(l), self.str_expr(r));
                quote!((#a == #b))
            }
            (Ty::Int, Ty::Int) => {
                let (a, b) = (self.int_expr(l), self.int_expr(r));
                quote!((#a == #b))
            }
            (Ty::Int | Ty::Float, Ty::Int | Ty::Float) => {
                let (a, b) = (self.float_expr(l), self.float_expr(r));
                quote!((#a == #b))
            }
            (Ty::Json, Ty::Json) => {
                let (a, b) = (self.json_expr(l), self.json_expr(r));
                quote!((#a == #b))
            }
            (Ty::Json, other) | (other, Ty::Json) => {
                let (j, x) = if l.ty == Ty::Json { (l, r) } else { (r, l) };
                let jv = self.json_expr(j);
                let p = path_text(self.p, j);
                match other {
                    Ty::Str => {
                        let s = self.str_expr(x);
                        quote!((__nv::json_str(#jv, #p)? == #s))
                    }
                    Ty::Choice(_) => {
                        let c = self.expr(x);
                        quote!((__nv::json_str(#jv, #p)? == #c.as_str()))
                    }
                    Ty::Bool => {
                        let b = self.bool_expr(x);
                        quote!((__nv::json_bool(#jv, #p)? == #b))
                    }
                    Ty::Int | Ty::Float => {
                        let n = self.num(x);
                        quote!(__nv::num_cmp(__nv::json_num(#jv, #p)?, #n).is_eq())
                    }
                    _ => {
                        let _ = nv;
                        quote!(false)
                    }
                }
            }
            _ => quote!(false),
        }
    }

    fn membership(&self, l: &TExpr, r: &TExpr) -> TokenStream {
        let nv = &self.nv;
        let TKind::List(items) = &r.kind else {
            // `x in json_array`
            let hay = self.json_expr(r);
            let p = path_text(self.p, r);
            let needle = match &l.ty {
                Ty::Json => {
                    let j = self.json_expr(l);
                    quote!(#j)
                }
                Ty::Choice(_) => {
                    let c = self.expr(l);
                    quote!(&#nv::Json::from(#c.as_str()))
                }
                Ty::Str => {
                    let s = self.str_expr(l);
                    quote!(&#nv::Json::from(#s))
                }
                _ => {
                    let x = self.expr(l);
                    quote!(&#nv::Json::from(#x))
                }
            };
            return quote!(__nv::json_in(#needle, #hay, #p)?);
        };
        let lits: Vec<&Lit> = items
            .iter()
            .filter_map(|i| match &i.kind {
                TKind::Lit(l) => Some(l),
                _ => None,
            })
            .collect();
        match &l.ty {
            Ty::Choice(c) => {
                let e = choice_ident(&self.p.choices[*c].var);
                let x = self.expr(l);
                let ms = lits.iter().filter_map(|l| match l {
                    Lit::Str(s) => Some(pascal_ident(s)),
                    _ => None,
                });
                quote!(matches!(#x, #(#e::#ms)|*))
            }
            Ty::Str => {
                let x = self.str_expr(l);
                let ss = lits.iter().filter_map(|l| match l {
                    Lit::Str(s) => Some(s),
                    _ => None,
                });
                quote!(matches!(#x, #(#ss)|*))
            }
            Ty::Int if lits.iter().all(|l| matches!(l, Lit::Int(_))) => {
                let x = self.int_expr(l);
                let is = lits.iter().filter_map(|l| match l {
                    Lit::Int(i) => Some(*i),
                    _ => None,
                });
                quote!(matches!(#x, #(#is)|*))
            }
            Ty::Bool => {
                let x = self.bool_expr(l);
                let bs = lits.iter().filter_map(|l| match l {
                    Lit::Bool(b) => Some(*b),
                    _ => None,
                });
                quote!(matches!(#x, #(#bs)|*))
            }
            Ty::Json if lits.iter().all(|l| matches!(l, Lit::Str(_))) => {
                let j = self.json_expr(l);
                let p = path_text(self.p, l);
                let ss = lits.iter().filter_map(|l| match l {
                    Lit::Str(s) => Some(s),
                    _ => None,
                });
                quote!(matches!(__nv::json_str(#j, #p)?, #(#ss)|*))
            }
            Ty::Json if lits.iter().all(|l| matches!(l, Lit::Bool(_))) => {
                let j = self.json_expr(l);
                let p = path_text(self.p, l);
                let bs = lits.iter().filter_map(|l| match l {
                    Lit::Bool(b) => Some(*b),
                    _ => None,
                });
                quote!(matches!(__nv::json_bool(#j, #p)?, #(#bs)|*))
            }
            _ => {
                // Numbers (exact for ints, float otherwise), including json numbers.
                let x = self.num(l);
                let ns = lits.iter().filter_map(|l| match l {
                    Lit::Int(i) => Some(quote!(__nv::Num::I(#i))),
                    Lit::Float(f) => Some(quote!(__nv::Num::F(#f))),
                    _ => None,
                });
                quote!(__nv::num_in(#x, &[#(#ns),*]))
            }
        }
    }
}

/// The operands of a left-deep chain of one operator family (`and`; `or`; `+`/`-` of one
/// type), in order, each with `true` when it is subtracted. Iterative, so long chains cost no
/// stack, and flat in the output, so they cost none in rustc, syn or prettyplease either.
fn chain_operands(e: &TExpr) -> Vec<(bool, &TExpr)> {
    let TKind::Binary { op, .. } = &e.kind else {
        return vec![(false, e)];
    };
    let arith = matches!(op, BinOp::Add | BinOp::Sub);
    let mut parts = Vec::new();
    let mut cur = e;
    while let TKind::Binary { op: o, lhs, rhs } = &cur.kind {
        let same = if arith {
            matches!(o, BinOp::Add | BinOp::Sub) && cur.ty == e.ty
        } else {
            o == op
        };
        if !same {
            break;
        }
        parts.push((*o == BinOp::Sub, &**rhs));
        cur = lhs;
    }
    parts.push((false, cur));
    parts.reverse();
    parts
}

fn keyword(k: &StepKind) -> &'static str {
    match k {
        StepKind::Llm(_) => "llm",
        StepKind::Call(_) => "call",
        StepKind::Guard(_) => "guard",
        StepKind::Branch(_) => "branch",
        StepKind::Parallel(_) => "parallel",
        StepKind::Await(_) => "await",
        StepKind::End { .. } => "end",
    }
}

fn kind_tokens(nv: &TokenStream, k: &StepKind) -> TokenStream {
    let v = format_ident!("{}", pascal(keyword(k)));
    quote!(#nv::StepKind::#v)
}

fn step_retry(k: &StepKind) -> u32 {
    match k {
        StepKind::Llm(l) => l.retry,
        StepKind::Call(c) => c.retry,
        _ => 0,
    }
}

/// The path text of a json expression (`score.risk`), for run-time error messages.
fn path_text(p: &Program, e: &TExpr) -> String {
    match &e.kind {
        TKind::Var(v) => p.vars[*v].name.clone(),
        TKind::Field { base, name } => format!("{}.{name}", path_text(p, base)),
        _ => "value".into(),
    }
}

/// Rebuilds enough of an expression's text for overflow messages.
fn to_ast_text(p: &Program, e: &TExpr) -> crate::syntax::ast::Expr {
    use crate::syntax::ast::{Expr, ExprKind, Ident, Path};
    let kind = match &e.kind {
        TKind::Lit(l) => ExprKind::Lit(l.clone()),
        TKind::Var(_) | TKind::Field { .. } => ExprKind::Path(Path {
            segments: path_text(p, e)
                .split('.')
                .map(|s| Ident {
                    name: s.to_string(),
                    span: e.span,
                })
                .collect(),
            span: e.span,
        }),
        TKind::Not(x) => ExprKind::Not(Box::new(to_ast_text(p, x))),
        TKind::Binary { op, lhs, rhs } => ExprKind::Binary {
            op: *op,
            op_span: e.span,
            lhs: Box::new(to_ast_text(p, lhs)),
            rhs: Box::new(to_ast_text(p, rhs)),
        },
        TKind::Builtin { func, arg } => ExprKind::Builtin {
            func: *func,
            func_span: e.span,
            arg: Box::new(to_ast_text(p, arg)),
        },
        TKind::List(items) => ExprKind::List(items.iter().map(|i| to_ast_text(p, i)).collect()),
    };
    Expr { kind, span: e.span }
}

/// A stand-in module for a program that failed to compile: the same public names (`Input`,
/// `Tools`, `Program`, ...) with the declared inputs and tool signatures, so code that uses the
/// program still type-checks and the user sees only the real diagnostics, not a cascade of
/// "cannot find `Input`". It is never run: it only exists next to `compile_error!`s.
pub fn skeleton(p: &crate::syntax::ast::Program, opts: &Options) -> TokenStream {
    use std::collections::HashSet;
    let g = Gen::new_for_skeleton(opts);
    let private = &g.private;
    let valid = |n: &str| {
        syn::parse_str::<Ident>(n).is_ok()
            || !matches!(n, "self" | "super" | "crate" | "Self" | "_")
    };
    let name = if valid(&p.name.name) {
        snake_ident(&p.name.name)
    } else {
        format_ident!("invalid_program")
    };
    let mut seen = HashSet::new();
    let fields: Vec<TokenStream> = p
        .inputs()
        .filter(|f| valid(&f.name.name) && seen.insert(f.name.name.clone()))
        .map(|f| {
            let n = snake_ident(&f.name.name);
            let ty = g.rust_ty(&Ty::from_kind(&f.ty.kind));
            quote!(pub #n: #ty,)
        })
        .collect();
    let mut seen = HashSet::new();
    let methods: Vec<TokenStream> = p
        .tools()
        .filter(|t| valid(&t.name.name) && seen.insert(t.name.name.clone()))
        .map(|t| {
            let m = snake_ident(&t.name.name);
            let mut names = HashSet::new();
            let params = t
                .params
                .iter()
                .filter(|p| valid(&p.name.name) && names.insert(p.name.name.clone()))
                .map(|p| {
                    let n = snake_ident(&p.name.name);
                    let ty = g.param_ty(&Ty::from_kind(&p.ty.kind));
                    quote!(#n: #ty)
                });
            quote! {
                fn #m(&self, ctx: &__nv::ToolContext, #(#params),*)
                    -> impl ::core::future::Future<Output = Result<__nv::Json, __nv::ToolError>> + Send;
            }
        })
        .collect();
    quote! {
        #[allow(dead_code, unused_variables, unused_imports, missing_docs, clippy::all)]
        pub mod #name {
            use #private as __nv;
            pub const PROGRAM_HASH: [u8; 32] = [0; 32];
            pub const MERMAID: &str = "";
            #[derive(Clone, Debug)]
            pub struct Input { #(#fields)* }
            pub trait Tools: Send + Sync + 'static { #(#methods)* }
            pub trait ToolsDyn: Send + Sync + 'static {}
            impl<T: Tools> ToolsDyn for T {}
            #[derive(Clone, Debug)]
            pub enum Call {}
            impl __nv::ToolCall for Call {
                fn tool(&self) -> usize { match *self {} }
                fn args(&self) -> Vec<(&'static str, __nv::Datum)> { match *self {} }
            }
            #[derive(Clone, Debug)]
            pub struct State;
            #[derive(Clone, Copy, Debug, Default)]
            pub struct Program;
            impl __nv::Program for Program {
                type Input = Input;
                type State = State;
                type Tools = dyn ToolsDyn;
                type Call = Call;
                fn info() -> &'static __nv::ProgramInfo { unreachable!("the program did not compile") }
                fn record_input(input: &Input) -> Vec<__nv::Datum> { unreachable!() }
                fn restore(inputs: &[__nv::Datum]) -> Result<State, __nv::Fault> { unreachable!() }
                fn action(step: __nv::StepId, state: &State) -> Result<__nv::Action<Call>, __nv::Fault> { unreachable!() }
                fn transition(step: __nv::StepId, state: &mut State, outcome: __nv::Outcome<'_>) -> __nv::Next { unreachable!() }
                fn branch_action(step: __nv::StepId, branch: __nv::BranchId, state: &State) -> Result<__nv::Action<Call>, __nv::Fault> { unreachable!() }
                fn apply_branch(step: __nv::StepId, branch: __nv::BranchId, state: &mut State, outcome: __nv::Outcome<'_>) -> __nv::Next { unreachable!() }
                fn invoke(tools: &::std::sync::Arc<dyn ToolsDyn>, call: Call, ctx: __nv::ToolContext) -> __nv::BoxFuture<'static, Result<__nv::Json, __nv::ToolError>> { match call {} }
                fn outputs(state: &State) -> Vec<(&'static str, __nv::Json)> { unreachable!() }
            }
        }
    }
}

impl Gen<'static> {
    fn new_for_skeleton(opts: &Options) -> Self {
        static EMPTY: std::sync::OnceLock<Program> = std::sync::OnceLock::new();
        let p = EMPTY.get_or_init(|| Program {
            name: String::new(),
            doc: Vec::new(),
            hash: [0; 32],
            vars: Vec::new(),
            choices: Vec::new(),
            tools: Vec::new(),
            budget: Default::default(),
            steps: Vec::new(),
            start: 0,
        });
        Gen::new(p, opts)
    }
}
