//! The static `INFO` table (`ProgramInfo`): budgets, inputs, tools, steps and parallel
//! schedules, which the runtime reads instead of the graph.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Gen, ice, kind_tokens, num, step_retry};
use crate::check::Ty;
use crate::lower::StepKind;

impl Gen<'_> {
    pub(super) fn info(&self) -> TokenStream {
        let nv = &self.nv;
        let p = self.p;
        let budget = budget_tokens(nv, &p.budget);
        let name = &p.name;
        let inputs = p.vars.iter().filter(|v| v.input).map(|v| {
            let n = &v.name;
            let t = v.ty.to_string();
            let secret = matches!(v.ty, Ty::Secret(_));
            let shape = if v.ty.is_composite() {
                let s = self.shape(&v.ty);
                quote!(Some(&#s))
            } else {
                quote!(None)
            };
            quote!(#nv::InputInfo { name: #n, ty: #t, secret: #secret, shape: #shape })
        });
        let tools = p.tools.iter().map(|t| {
            let n = &t.name;
            let (e, i) = (t.effect, t.idempotent);
            quote!(#nv::ToolInfo { name: #n, effect: #e, idempotent: #i })
        });
        let steps = p.steps.iter().map(|s| {
            let n = &s.name;
            let kind = kind_tokens(nv, &s.kind);
            let retry = num(step_retry(&s.kind));
            let parallel = match &s.kind {
                StepKind::Parallel(par) => {
                    let branches = par.branches.iter().map(|b| {
                        let bn = &b.name;
                        let bk = kind_tokens(nv, &b.kind);
                        let br = num(step_retry(&b.kind));
                        let after = match &b.kind {
                            StepKind::Llm(crate::lower::Llm { after, .. })
                            | StepKind::Call(crate::lower::Call { after, .. }) => {
                                let after = after.iter().map(|&a| num(a as u64));
                                quote!(&[#(#after),*])
                            }
                            StepKind::Guard(_)
                            | StepKind::Branch(_)
                            | StepKind::Parallel(_)
                            | StepKind::Await(_)
                            | StepKind::End { .. } => ice(format_args!(
                                "a parallel branch that is neither `llm` nor `call` (branch `{}` of `parallel {}`)",
                                b.name, s.name
                            )),
                        };
                        quote!(#nv::BranchInfo { name: #bn, kind: #bk, retry: #br, after: #after })
                    });
                    let mc = match par.max_concurrency {
                        Some(m) => {
                            let m = num(m);
                            quote!(Some(#m))
                        }
                        None => quote!(None),
                    };
                    let r = num(par.retry);
                    quote!(Some(&#nv::ParallelInfo {
                        branches: &[#(#branches),*],
                        max_concurrency: #mc,
                        retry: #r,
                    }))
                }
                StepKind::Llm(_)
                | StepKind::Call(_)
                | StepKind::Guard(_)
                | StepKind::Branch(_)
                | StepKind::Await(_)
                | StepKind::End { .. } => quote!(None),
            };
            quote!(#nv::StepInfo { name: #n, kind: #kind, retry: #retry, parallel: #parallel })
        });
        let start = num(p.start as u64);
        quote! {
            static INFO: #nv::ProgramInfo = #nv::ProgramInfo {
                name: #name,
                hash: #nv::Digest(PROGRAM_HASH),
                budget: #budget,
                inputs: &[#(#inputs),*],
                tools: &[#(#tools),*],
                steps: &[#(#steps),*],
                start: #start,
            };
        }
    }
}

/// A `Budget` value: the program's budget, or a replan slice.
pub(super) fn budget_tokens(nv: &proc_macro2::Ident, b: &crate::lower::Budget) -> TokenStream {
    let opt = |v: Option<u64>| match v {
        Some(v) => {
            let v = num(v);
            quote!(Some(#v))
        }
        None => quote!(None),
    };
    let (ms, mt, mss, mtc) = (
        opt(b.max_steps),
        opt(b.max_tokens),
        opt(b.max_stalled_steps),
        opt(b.max_tool_calls),
    );
    let md = match b.max_duration_ms {
        Some(v) => {
            let v = num(v);
            quote!(Some(::core::time::Duration::from_millis(#v)))
        }
        None => quote!(None),
    };
    quote!(#nv::Budget {
        max_steps: #ms,
        max_tokens: #mt,
        max_stalled_steps: #mss,
        max_duration: #md,
        max_tool_calls: #mtc,
    })
}
