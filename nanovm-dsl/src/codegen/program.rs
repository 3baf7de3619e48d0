//! `Program` and its implementation of the runtime's program trait: recording and restoring
//! inputs, outputs, and the entry points that map step ids to the generated functions.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Gen, ice, snake_ident};
use crate::check::Ty;

impl Gen<'_> {
    pub(super) fn program_impl(&self) -> TokenStream {
        let nv = &self.nv;
        let events: Vec<TokenStream> = self
            .p
            .steps
            .iter()
            .filter_map(|s| match &s.kind {
                crate::lower::StepKind::Await(a) => {
                    let (step, event, ty) = (&s.name, &a.event, a.ty.to_string());
                    let shape = if a.ty.is_composite() {
                        let s = self.shape(&a.ty);
                        quote!(Some(&#s))
                    } else {
                        quote!(None)
                    };
                    Some(quote!(#nv::EventInfo { step: #step, event: #event, ty: #ty, shape: #shape }))
                }
                _ => None,
            })
            .collect();
        let record: Vec<_> = self
            .p
            .vars
            .iter()
            .filter(|v| v.input)
            .map(|v| {
                let n = snake_ident(&v.name);
                match v.ty {
                    Ty::Secret(_) => quote!(#nv::Datum::secret(&input.#n)),
                    ref t if t.is_composite() => {
                        quote!(#nv::Datum::Plain(__nv::to_json(&input.#n)))
                    }
                    _ => quote!(#nv::plain(&input.#n)),
                }
            })
            .collect();
        let mut input_index = 0usize;
        let restore = self.p.vars.iter().map(|v| {
            let n = snake_ident(&v.name);
            let name = &v.name;
            if v.input {
                let i = super::num(input_index as u64);
                input_index += 1;
                match &v.ty {
                    Ty::Secret(_) => quote!(#n: __nv::secret_input(inputs, #i, #name)?,),
                    t if t.is_composite() => {
                        let shape = self.shape_ref(t);
                        quote!(#n: __nv::shaped_input(inputs, #i, #name, #shape)?,)
                    }
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
                    Ty::Json | Ty::Record(_) | Ty::List(_) | Ty::Optional(_) => quote!(x.clone()),
                    Ty::Str => quote!(#nv::Json::from(x.clone())),
                    Ty::Int | Ty::Float | Ty::Bool => quote!(#nv::Json::from(*x)),
                    Ty::Secret(_) | Ty::Null | Ty::Error => ice(format_args!(
                        "an output variable `{}` of type `{}`",
                        v.name, v.ty
                    )),
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
            let n = super::num(outputs.len() as u64);
            quote! {
                let mut out = Vec::with_capacity(#n);
                #(#outputs)*
                out
            }
        };
        let step_err =
            quote!(#nv::Fault::Input { name: "step", message: format!("no step has id {step}") });
        let record = quote!(vec![#(#record),*]);
        let restore = quote!(Ok(State { #(#restore)* }));
        // A program without inputs never reads `input` or `inputs`; one without outputs never
        // reads `state` here.
        // (Decided by the counts, not by looking for the names: a variable called `inputs` is a
        // field of `State` in `restore` without being a read of the parameter.)
        let has_inputs = self.p.vars.iter().any(|v| v.input);
        let input = super::named(has_inputs, "input");
        let inputs = super::named(has_inputs, "inputs");
        let state = super::named(!outputs.is_empty(), "state");
        // A program without `parallel` steps keeps the trait's defaults, which refuse branches.
        let branches = self.has_parallel().then(|| {
            quote! {
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
            }
        });
        // A program without replanning edges keeps the trait's default (none).
        let replans = (!self.p.replans.is_empty()).then(|| {
            let n = super::num(self.p.replans.len() as u64);
            let edges = self.p.replans.iter().map(|r| {
                let on = match r.on {
                    crate::syntax::ast::ReplanOn::BudgetExceeded => {
                        quote!(#nv::ReplanOn::BudgetExceeded)
                    }
                    crate::syntax::ast::ReplanOn::Stalled => quote!(#nv::ReplanOn::Stalled),
                };
                let to = super::num(r.target as u64);
                let count = super::num(u64::from(r.replans));
                let slice = super::info::budget_tokens(nv, &r.slice);
                quote!(#nv::ReplanInfo { on: #on, to: #to, replans: #count, slice: #slice })
            });
            quote! {
                fn replans() -> &'static [#nv::ReplanInfo] {
                    static REPLANS: [#nv::ReplanInfo; #n] = [#(#edges),*];
                    &REPLANS
                }
            }
        });
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

                fn semantics() -> &'static str {
                    SEMANTICS_VERSION
                }

                fn graph() -> Option<&'static str> {
                    Some(MERMAID)
                }

                fn events() -> &'static [#nv::EventInfo] {
                    &[#(#events),*]
                }

                fn record_input(#input: &Input) -> Vec<#nv::Datum> {
                    #record
                }

                fn restore(#inputs: &[#nv::Datum]) -> Result<State, #nv::Fault> {
                    #restore
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

                #branches

                fn invoke(
                    tools: &::std::sync::Arc<dyn ToolsDyn>,
                    call: Call,
                    ctx: #nv::ToolContext,
                ) -> #nv::BoxFuture<'static, Result<#nv::Json, #nv::ToolError>> {
                    ::std::sync::Arc::clone(tools).__invoke(call, ctx)
                }

                fn outputs(#state: &State) -> Vec<(&'static str, #nv::Json)> {
                    #outputs_body
                }

                #replans
            }
        }
    }
}
