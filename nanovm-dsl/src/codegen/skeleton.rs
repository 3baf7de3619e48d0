//! The stand-in module emitted next to the diagnostics of a program that failed to compile.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::{Gen, Options, snake_ident};
use crate::check::Ty;
use crate::lower::Program;

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
        #[allow(
            dead_code,
            unused_variables,
            unused_imports,
            missing_docs,
            clippy::all,
            reason = "a stand-in next to compile errors, never run: only its names matter"
        )]
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
            types: Vec::new(),
            budget: Default::default(),
            steps: Vec::new(),
            start: 0,
            replans: Vec::new(),
        });
        Gen::new(p, opts)
    }
}
