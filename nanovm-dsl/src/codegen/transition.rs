//! The `transition` function (outcome -> state change and successor), the `decide_*`
//! functions of guards and branches, and the per-branch functions of parallel steps.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use super::{Gen, choice_ident, ice, pascal_ident, snake_ident, step_site};
use crate::lower::{Await, Call, Decision, LlmOut, Parallel, StepKind};

impl Gen<'_> {
    pub(super) fn transition_fn(&self) -> TokenStream {
        let nv = &self.nv;
        let out_of_range = out_of_range();
        let mut arms = Vec::new();
        for (i, s) in self.p.steps.iter().enumerate() {
            let v = self.step_variant(i);
            let fail = |what: &str| {
                let msg = format!("{what} `{}` failed and has no `on error` edge", s.name);
                quote!(#nv::Next::Fail(String::from(#msg)))
            };
            self.at(step_site(s), || match &s.kind {
                StepKind::Llm(l) => {
                    let go = self.go_next(l.next);
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
                                    None => #nv::Next::Reject(format!(#out_of_range)),
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
                        LlmOut::Answer { var, ty } => {
                            let f = snake_ident(&self.p.vars[*var].name);
                            let shape = self.shape_ref(ty);
                            let invalid = match l.on_invalid {
                                Some(t) => self.go(t),
                                None => quote!(#nv::Next::Stall),
                            };
                            // A reply that is not a value of the type is an invalid answer,
                            // exactly like a `choose` miss: `on invalid`, else the step again.
                            arms.push(quote! {
                                (Step::#v, #nv::Outcome::Text(t)) => match __nv::answer(t, #shape) {
                                    Some(x) => {
                                        state.#f = Some(x);
                                        #go
                                    }
                                    None => #invalid,
                                },
                            });
                            arms.push(quote!((Step::#v, #nv::Outcome::Invalid) => #invalid,));
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
                    let go = self.go_next(c.next);
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
            });
        }
        let state = super::param(&arms, "state");
        quote! {
            /// The compiled transition function: applies the outcome of `step` to the variables
            /// and names the successor.
            pub fn transition(step: Step, #state: &mut State, outcome: #nv::Outcome<'_>) -> #nv::Next {
                match (step, outcome) {
                    #(#arms)*
                    (step, outcome) => __nv::unexpected(step.name(), &outcome),
                }
            }
        }
    }

    pub(super) fn go(&self, to: usize) -> TokenStream {
        let nv = &self.nv;
        let v = self.step_variant(to);
        quote!(#nv::Next::Go(Step::#v.id()))
    }

    /// The `-> S` of a top-level llm or call step (only parallel branches have none).
    fn go_next(&self, next: Option<usize>) -> TokenStream {
        match next {
            Some(to) => self.go(to),
            None => ice(format_args!(
                "a step without a successor (`-> S`) in {}",
                self.site()
            )),
        }
    }

    /// Decodes a tool result against the declared type, stores it if the call has `into`.
    pub(super) fn accept_tool(&self, c: &Call, go: &TokenStream) -> TokenStream {
        let nv = &self.nv;
        let tool = &self.p.tools[c.tool];
        let ty = self.rust_ty(&tool.ret);
        let what = format!("tool `{}`", tool.name);
        if tool.ret.is_composite() {
            let shape = self.shape_ref(&tool.ret);
            return match c.into {
                Some(var) => {
                    let f = snake_ident(&self.p.vars[var].name);
                    quote! {
                        match __nv::decode_shape(value, #shape, #what) {
                            Ok(x) => {
                                state.#f = Some(x);
                                #go
                            }
                            Err(message) => #nv::Next::Reject(message),
                        }
                    }
                }
                None => quote! {
                    match __nv::check_shape(value, #shape, #what) {
                        Ok(()) => #go,
                        Err(message) => #nv::Next::Reject(message),
                    }
                },
            };
        }
        match c.into {
            Some(var) => {
                let f = snake_ident(&self.p.vars[var].name);
                quote! {
                    match __nv::decode::<#ty>(value, #what) {
                        Ok(x) => {
                            state.#f = Some(x);
                            #go
                        }
                        Err(message) => #nv::Next::Reject(message),
                    }
                }
            }
            // Not stored, but still checked against the declared type (without a copy).
            None => quote! {
                match __nv::check::<#ty>(value, #what) {
                    Ok(()) => #go,
                    Err(message) => #nv::Next::Reject(message),
                }
            },
        }
    }

    pub(super) fn await_arms(&self, v: &Ident, a: &Await) -> TokenStream {
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
        let decode = if a.ty.is_composite() {
            let shape = self.shape_ref(&a.ty);
            quote!(__nv::decode_shape(value, #shape, #what))
        } else {
            quote!(__nv::decode::<#ty>(value, #what))
        };
        quote! {
            (Step::#v, #nv::Outcome::Event(value)) => match #decode {
                #accept
                Err(message) => #nv::Next::Reject(message),
            },
            #timeout
        }
    }

    pub(super) fn decision_fns(&self) -> TokenStream {
        let nv = &self.nv;
        let fns = self.p.steps.iter().filter_map(|s| {
            let (StepKind::Guard(d) | StepKind::Branch(d)) = &s.kind else {
                return None;
            };
            Some(self.at(step_site(s), || self.decision_fn(&s.name, d, nv)))
        });
        quote!(#(#fns)*)
    }

    pub(super) fn decision_fn(&self, name: &str, d: &Decision, nv: &Ident) -> TokenStream {
        let f = format_ident!("decide_{}", name);
        let doc = format!(" The arms of `{name}`, first true `when` wins.");
        let arms: Vec<TokenStream> = d
            .arms
            .iter()
            .enumerate()
            .map(|(i, (cond, to))| {
                let c = self.bool_expr(cond);
                let to = self.step_variant(*to);
                let i = super::num(i as u64);
                quote! {
                    if #c {
                        return Ok((Some(#i), Step::#to));
                    }
                }
            })
            .collect();
        let otherwise = self.step_variant(d.otherwise);
        let state = super::param(&arms, "state");
        quote! {
            #[doc = #doc]
            fn #f(#state: &State) -> Result<(Option<u32>, Step), #nv::Fault> {
                #(#arms)*
                Ok((None, Step::#otherwise))
            }
        }
    }

    /// `branch_action` and `apply_branch`; nothing for a program without `parallel` steps (the
    /// runtime trait's defaults refuse every branch).
    pub(super) fn branch_fns(&self) -> TokenStream {
        let nv = &self.nv;
        let out_of_range = out_of_range();
        if !self.has_parallel() {
            return TokenStream::new();
        }
        let mut action_arms = Vec::new();
        let mut apply_arms = Vec::new();
        for s in &self.p.steps {
            let StepKind::Parallel(Parallel { branches, .. }) = &s.kind else {
                continue;
            };
            let v = pascal_ident(&s.name);
            for (b, branch) in branches.iter().enumerate() {
                let b = super::num(b as u64);
                let accepted = quote!(#nv::Next::Go(Step::#v.id()));
                let site = format!("branch `{}` of `parallel {}`", branch.name, s.name);
                self.at(site, || match &branch.kind {
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
                                        None => #nv::Next::Reject(format!(#out_of_range)),
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
                            LlmOut::Answer { var, ty } => {
                                let f = snake_ident(&self.p.vars[*var].name);
                                let shape = self.shape_ref(ty);
                                let msg = format!(
                                    "branch `{}` got an answer that is not a `{ty}`",
                                    branch.name
                                );
                                apply_arms.push(quote! {
                                    (Step::#v, #b, #nv::Outcome::Text(t)) => match __nv::answer(t, #shape) {
                                        Some(x) => {
                                            state.#f = Some(x);
                                            #accepted
                                        }
                                        None => #nv::Next::Reject(String::from(#msg)),
                                    },
                                });
                                apply_arms.push(quote!((Step::#v, #b, #nv::Outcome::Invalid) => #nv::Next::Reject(String::from(#msg)),));
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
                    StepKind::Guard(_)
                    | StepKind::Branch(_)
                    | StepKind::Parallel(_)
                    | StepKind::Await(_)
                    | StepKind::End { .. } => {
                        let ice = ice(format_args!(
                            "a parallel branch that is neither `llm` nor `call` in {}",
                            self.site()
                        ));
                        action_arms.push(quote!((Step::#v, #b) => #ice,));
                    }
                });
            }
        }
        let action_state = super::param(&action_arms, "state");
        let apply_state = super::param(&apply_arms, "state");
        quote! {
            /// What branch `branch` of the parallel step `step` asks for.
            pub fn branch_action(step: Step, branch: u16, #action_state: &State) -> Result<#nv::Action<Call>, #nv::Fault> {
                match (step, branch) {
                    #(#action_arms)*
                    (step, branch) => Err(#nv::Fault::Input {
                        name: "branch",
                        message: format!("step `{}` has no branch {branch}", step.name()),
                    }),
                }
            }

            /// Applies a branch's outcome; `Next::Go` (with the parallel step's id) accepts it.
            pub fn apply_branch(step: Step, branch: u16, #apply_state: &mut State, outcome: #nv::Outcome<'_>) -> #nv::Next {
                match (step, branch, outcome) {
                    #(#apply_arms)*
                    (step, _, outcome) => __nv::unexpected(step.name(), &outcome),
                }
            }
        }
    }
}

/// The format string of a choice index the model's adapter reported out of range, as a literal
/// token (`quote` would parse it from text if it were written in the template, per step).
fn out_of_range() -> Literal {
    Literal::string("choice index {i} out of range")
}
