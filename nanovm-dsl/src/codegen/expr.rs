//! Typed expressions: conditions, arguments and template holes as Rust expressions.
//!
//! Each typed expression compiles to a Rust expression of a fixed shape per type:
//! `string` -> `&str`, `int` -> `i64`, `float` -> `f64`, `bool` -> `bool`, `json` -> `&Json`,
//! a choice -> the choice enum (by value). Faults propagate with `?`, so these expressions
//! live inside functions returning `Result<_, Fault>`.
//!
//! Each function accepts exactly the forms and types the checker lets through for it;
//! anything else becomes an internal compiler error in place of the value, never a guess.
//! Parentheses are emitted where Rust's precedence needs them and nowhere else ([`Prec`]).

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::{Gen, choice_ident, ice, pascal_ident, snake_ident};
use crate::check::Ty;
use crate::lower::{Program, TExpr, TKind};
use crate::syntax::ast::{BinOp, Builtin, Literal as Lit};

/// How tightly a generated Rust expression binds, loosest first: a consumer wraps an operand
/// in parentheses only when it binds more loosely than its position needs, so the output has
/// the parentheses Rust needs and no others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Prec {
    /// `a || b`
    Or,
    /// `a && b`
    And,
    /// `a == b`, `a < b`
    Cmp,
    /// `a + b - c` (floats; int sums are `checked_sum(..)` calls)
    Sum,
    /// `!a`, `*a`, `&a`, `-1`
    Unary,
    /// Literals, paths, calls, method calls, `?`, macros, parenthesised casts.
    Atom,
}

/// A generated expression and how tightly it binds.
struct Rx {
    tokens: TokenStream,
    prec: Prec,
}

impl Rx {
    fn new(prec: Prec, tokens: TokenStream) -> Self {
        Rx { tokens, prec }
    }

    fn atom(tokens: TokenStream) -> Self {
        Rx::new(Prec::Atom, tokens)
    }

    /// The tokens, parenthesised if they bind more loosely than `min`.
    fn at(self, min: Prec) -> TokenStream {
        let t = self.tokens;
        if self.prec >= min { t } else { quote!((#t)) }
    }

    /// The tokens for a position that takes any expression (an argument, a condition).
    fn any(self) -> TokenStream {
        self.tokens
    }
}

/// An integer literal: negative ones are unary minus for Rust's precedence.
fn int_lit(i: i64) -> Rx {
    let l = Literal::i64_unsuffixed(i);
    Rx::new(if i < 0 { Prec::Unary } else { Prec::Atom }, quote!(#l))
}

fn float_lit(f: f64) -> Rx {
    let l = Literal::f64_unsuffixed(f);
    Rx::new(
        if f.is_sign_negative() {
            Prec::Unary
        } else {
            Prec::Atom
        },
        quote!(#l),
    )
}

impl Gen<'_> {
    /// An internal compiler error for an expression the generator cannot compile as `want`
    /// (`"an `int` expression of type `string` (a variable) in `guard policy`"`).
    fn ice_expr(&self, want: &str, e: &TExpr) -> Rx {
        Rx::atom(ice(format_args!(
            "{want} expression of type `{}` ({}) in {}",
            e.ty,
            form(e),
            self.site()
        )))
    }

    // ----- variables -----

    fn var_ref_rx(&self, var: usize) -> Rx {
        let v = &self.p.vars[var];
        let n = snake_ident(&v.name);
        let name = &v.name;
        if v.input {
            Rx::new(Prec::Unary, quote!(&state.#n))
        } else {
            Rx::atom(quote!(__nv::get(&state.#n, #name)?))
        }
    }

    fn var_value_rx(&self, var: usize) -> Rx {
        let v = &self.p.vars[var];
        let n = snake_ident(&v.name);
        let name = &v.name;
        if v.input {
            Rx::atom(quote!(state.#n))
        } else {
            Rx::new(Prec::Unary, quote!(*__nv::get(&state.#n, #name)?))
        }
    }

    /// An expression borrowing a variable (type `&T`): `&state.x` for inputs,
    /// `__nv::get(&state.x, "x")?` for assigned variables.
    pub(super) fn var_ref(&self, var: usize) -> TokenStream {
        self.var_ref_rx(var).any()
    }

    /// A variable of a `Copy` type by value.
    pub(super) fn var_value(&self, var: usize) -> TokenStream {
        self.var_value_rx(var).any()
    }

    /// A variable as a place whose methods can be called (`state.x`, `__nv::get(..)?`).
    pub(super) fn var_place(&self, var: usize) -> TokenStream {
        let v = &self.p.vars[var];
        let n = snake_ident(&v.name);
        let name = &v.name;
        if v.input {
            quote!(state.#n)
        } else {
            quote!(__nv::get(&state.#n, #name)?)
        }
    }

    /// A choice's member name (`&'static str`): `state.c.as_str()`.
    pub(super) fn choice_str(&self, e: &TExpr) -> TokenStream {
        match (&e.kind, &e.ty) {
            (TKind::Var(v), Ty::Choice(_)) => {
                let place = self.var_place(*v);
                quote!(#place.as_str())
            }
            _ => self.ice_expr("a choice", e).any(),
        }
    }

    // ----- entry points for argument positions (any precedence will do) -----

    /// Any expression, in the shape of its own type.
    pub(super) fn expr(&self, e: &TExpr) -> TokenStream {
        self.expr_rx(e).any()
    }

    /// A `string` expression as `&str`.
    pub(super) fn str_expr(&self, e: &TExpr) -> TokenStream {
        self.str_rx(e).any()
    }

    /// An `int` expression as `i64`.
    pub(super) fn int_expr(&self, e: &TExpr) -> TokenStream {
        self.int_rx(e).any()
    }

    /// An `int` or `float` expression as `f64`.
    pub(super) fn float_expr(&self, e: &TExpr) -> TokenStream {
        self.float_rx(e).any()
    }

    /// A `json` expression (a variable or a field path) as `&Json`.
    pub(super) fn json_expr(&self, e: &TExpr) -> TokenStream {
        self.json_rx(e).any()
    }

    /// A condition as `bool` (a `json` value must be a bool at run time).
    pub(super) fn bool_expr(&self, e: &TExpr) -> TokenStream {
        self.bool_rx(e).any()
    }

    // ----- by type -----

    fn expr_rx(&self, e: &TExpr) -> Rx {
        match (&e.kind, &e.ty) {
            (TKind::Var(v), ty) => match ty {
                Ty::Str => {
                    let place = self.var_place(*v);
                    Rx::atom(quote!(#place.as_str()))
                }
                Ty::Int | Ty::Float | Ty::Bool | Ty::Choice(_) => self.var_value_rx(*v),
                Ty::Json => self.var_ref_rx(*v),
                Ty::Null
                | Ty::Secret(_)
                | Ty::List(_)
                | Ty::Record(_)
                | Ty::Optional(_)
                | Ty::Error => self.ice_expr("a plain", e),
            },
            (TKind::Field { .. }, _) => self.json_rx(e),
            (_, Ty::Str) => self.str_rx(e),
            (_, Ty::Int) => self.int_rx(e),
            (_, Ty::Float) => self.float_rx(e),
            (_, Ty::Bool) => self.bool_rx(e),
            (TKind::Lit(Lit::Null), Ty::Null) => {
                let nv = &self.nv;
                Rx::new(Prec::Unary, quote!(&#nv::Json::Null))
            }
            (_, Ty::Json) => self.json_rx(e),
            _ => self.ice_expr("a plain", e),
        }
    }

    fn str_rx(&self, e: &TExpr) -> Rx {
        if let Some(owned) = self.string_call(e) {
            return Rx::atom(quote!(#owned.as_str()));
        }
        match (&e.kind, &e.ty) {
            (TKind::Lit(Lit::Str(s)), Ty::Str) => Rx::atom(quote!(#s)),
            (TKind::Var(_), Ty::Str) => self.expr_rx(e),
            (TKind::Field { .. }, Ty::Json) => self.json_str(e),
            (
                TKind::Builtin {
                    func: Builtin::Trim,
                    arg,
                },
                Ty::Str,
            ) => {
                let a = self.str_or_json_str(arg).at(Prec::Atom);
                Rx::atom(quote!(#a.trim()))
            }
            _ => self.ice_expr("a `string`", e),
        }
    }

    /// The `String`-valued call behind `lower(..)`, `upper(..)` and `a + b`; `None` for every
    /// other form.
    fn string_call(&self, e: &TExpr) -> Option<TokenStream> {
        match (&e.kind, &e.ty) {
            (
                TKind::Builtin {
                    func: func @ (Builtin::Lower | Builtin::Upper),
                    arg,
                },
                Ty::Str,
            ) => {
                let a = self.str_or_json_str(arg).any();
                Some(if *func == Builtin::Lower {
                    quote!(__nv::lower(#a))
                } else {
                    quote!(__nv::upper(#a))
                })
            }
            (TKind::Binary { op: BinOp::Add, .. }, Ty::Str) => {
                let parts = chain_operands(e)
                    .into_iter()
                    .map(|(_, e)| self.str_rx(e).any());
                Some(quote!(__nv::concat(&[#(#parts),*])))
            }
            _ => None,
        }
    }

    /// A `json` value that must be a string at run time.
    fn json_str(&self, e: &TExpr) -> Rx {
        let j = self.json_rx(e).any();
        let p = path_text(self.p, e);
        Rx::atom(quote!(__nv::json_str(#j, #p)?))
    }

    /// A `string` or `json` (a string at run time) expression as `&str`; a choice as its name.
    fn str_or_json_str(&self, e: &TExpr) -> Rx {
        match e.ty {
            Ty::Json => self.json_str(e),
            Ty::Choice(_) => Rx::atom(self.choice_str(e)),
            _ => self.str_rx(e),
        }
    }

    fn int_rx(&self, e: &TExpr) -> Rx {
        if e.ty != Ty::Int {
            return self.ice_expr("an `int`", e);
        }
        match &e.kind {
            TKind::Lit(Lit::Int(i)) => int_lit(*i),
            TKind::Var(_) => self.expr_rx(e),
            TKind::Builtin {
                func: Builtin::Len,
                arg,
            } => match (&arg.ty, &arg.kind) {
                (Ty::Json, _) => {
                    let j = self.json_expr(arg);
                    let p = path_text(self.p, arg);
                    Rx::atom(quote!(__nv::json_len(#j, #p)?))
                }
                (Ty::List(_), TKind::List(items)) => int_lit(items.len() as i64),
                (Ty::Str, _) => {
                    let s = self.str_expr(arg);
                    Rx::atom(quote!(__nv::str_len(#s)))
                }
                _ => self.ice_expr("a `len` argument", arg),
            },
            TKind::Binary {
                op: BinOp::Add | BinOp::Sub,
                ..
            } => {
                let parts = chain_operands(e);
                let first = self.int_expr(parts[0].1);
                let rest = parts[1..].iter().map(|(sub, e)| {
                    let x = self.int_expr(e);
                    quote!((#sub, #x))
                });
                let text = crate::canonical::expr(&to_ast_text(self.p, e));
                Rx::atom(quote!(__nv::checked_sum(#first, &[#(#rest),*], #text)?))
            }
            _ => self.ice_expr("an `int`", e),
        }
    }

    fn float_rx(&self, e: &TExpr) -> Rx {
        match (&e.kind, &e.ty) {
            (_, Ty::Int) => match const_int(e) {
                // A constant where a float is needed is a float literal (the same conversion).
                Some(i) => float_lit(i as f64),
                // Parenthesised: `x as f64 < y` would read `f64<` as generics.
                None => {
                    let i = self.int_rx(e).at(Prec::Unary);
                    Rx::atom(quote!((#i as f64)))
                }
            },
            (TKind::Lit(Lit::Float(f)), Ty::Float) => float_lit(*f),
            (TKind::Var(_), Ty::Float) => self.expr_rx(e),
            (
                TKind::Binary {
                    op: BinOp::Add | BinOp::Sub,
                    ..
                },
                Ty::Float,
            ) => {
                // Left-associative: the first term may be a sum, later ones are grouped (float
                // addition is not associative, so `a + (b + c)` keeps its parentheses).
                let parts = chain_operands(e);
                let terms = parts.iter().enumerate().map(|(i, (sub, e))| {
                    let x = self.float_rx(e);
                    match (i, sub) {
                        (0, _) => x.at(Prec::Sum),
                        (_, true) => {
                            let x = x.at(Prec::Unary);
                            quote!(- #x)
                        }
                        (_, false) => {
                            let x = x.at(Prec::Unary);
                            quote!(+ #x)
                        }
                    }
                });
                Rx::new(Prec::Sum, quote!(#(#terms)*))
            }
            _ => self.ice_expr("a `float`", e),
        }
    }

    fn json_rx(&self, e: &TExpr) -> Rx {
        match (&e.kind, &e.ty) {
            (TKind::Var(v), Ty::Json) => self.var_ref_rx(*v),
            (TKind::Field { base, name }, Ty::Json) => {
                let b = self.json_expr(base);
                let p = path_text(self.p, base);
                Rx::atom(quote!(__nv::field(#b, #p, #name)?))
            }
            _ => self.ice_expr("a `json`", e),
        }
    }

    /// A `json` value whose methods are called: `state.j.is_null()`, not `(&state.j).is_null()`.
    fn json_receiver(&self, e: &TExpr) -> TokenStream {
        match (&e.kind, &e.ty) {
            (TKind::Var(v), Ty::Json) => self.var_place(*v),
            _ => self.json_rx(e).at(Prec::Atom),
        }
    }

    /// A `json` value as a place of type `Json` (`state.j`, `*__nv::get(..)?`), for `==`
    /// between two of them without references on both sides.
    fn json_value(&self, e: &TExpr) -> Rx {
        match (&e.kind, &e.ty) {
            (TKind::Var(v), Ty::Json) => self.var_value_rx(*v),
            _ => {
                let j = self.json_rx(e).at(Prec::Unary);
                Rx::new(Prec::Unary, quote!(*#j))
            }
        }
    }

    /// A numeric operand as `Num` (for comparisons involving json or mixed types).
    fn num(&self, e: &TExpr) -> TokenStream {
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
            Ty::Float => {
                let f = self.float_expr(e);
                quote!(__nv::Num::F(#f))
            }
            _ => self.ice_expr("a numeric", e).any(),
        }
    }

    fn bool_rx(&self, e: &TExpr) -> Rx {
        match (&e.kind, &e.ty) {
            (TKind::Lit(Lit::Bool(b)), Ty::Bool) => Rx::atom(quote!(#b)),
            (TKind::Var(_), Ty::Bool) => self.expr_rx(e),
            (TKind::Var(_) | TKind::Field { .. }, Ty::Json) => {
                let j = self.json_expr(e);
                let p = path_text(self.p, e);
                Rx::atom(quote!(__nv::json_bool(#j, #p)?))
            }
            (TKind::Not(x), Ty::Bool) => not(self.bool_rx(x)),
            (TKind::Binary { op, lhs, rhs }, Ty::Bool) => self.binary(e, *op, lhs, rhs),
            _ => self.ice_expr("a `bool`", e),
        }
    }

    /// A `bool`-valued binary expression.
    fn binary(&self, whole: &TExpr, op: BinOp, l: &TExpr, r: &TExpr) -> Rx {
        match op {
            // A chain `a or b or c` is one flat Rust expression, not nested parentheses: long
            // chains must not turn into deep syntax trees for rustc, syn or prettyplease.
            BinOp::And => {
                let parts = chain_operands(whole)
                    .into_iter()
                    .map(|(_, e)| self.bool_rx(e).at(Prec::And));
                Rx::new(Prec::And, quote!(#(#parts)&&*))
            }
            BinOp::Or => {
                let parts = chain_operands(whole)
                    .into_iter()
                    .map(|(_, e)| self.bool_rx(e).at(Prec::Or));
                Rx::new(Prec::Or, quote!(#(#parts)||*))
            }
            BinOp::Eq => self.equality(l, r, false),
            BinOp::Ne => self.equality(l, r, true),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let sym = match op {
                    BinOp::Lt => quote!(<),
                    BinOp::Le => quote!(<=),
                    BinOp::Gt => quote!(>),
                    _ => quote!(>=),
                };
                match (&l.ty, &r.ty) {
                    (Ty::Int, Ty::Int) => {
                        let (a, b) = (self.int_rx(l).at(Prec::Sum), self.int_rx(r).at(Prec::Sum));
                        Rx::new(Prec::Cmp, quote!(#a #sym #b))
                    }
                    (Ty::Int | Ty::Float, Ty::Int | Ty::Float) => {
                        let (a, b) = (
                            self.float_rx(l).at(Prec::Sum),
                            self.float_rx(r).at(Prec::Sum),
                        );
                        Rx::new(Prec::Cmp, quote!(#a #sym #b))
                    }
                    // At least one side is `json` (anything else is an ICE in `num`).
                    _ => {
                        let (a, b) = (self.num(l), self.num(r));
                        let test = match op {
                            BinOp::Lt => quote!(is_lt),
                            BinOp::Le => quote!(is_le),
                            BinOp::Gt => quote!(is_gt),
                            _ => quote!(is_ge),
                        };
                        Rx::atom(quote!(__nv::num_cmp(#a, #b).#test()))
                    }
                }
            }
            BinOp::Contains | BinOp::StartsWith | BinOp::EndsWith => {
                let needle = self.str_or_json_str(r).any();
                if l.ty == Ty::Json && op == BinOp::Contains {
                    let j = self.json_expr(l);
                    let p = path_text(self.p, l);
                    return Rx::atom(quote!(__nv::json_contains(#j, #p, #needle)?));
                }
                let hay = self.str_or_json_str(l).at(Prec::Atom);
                Rx::atom(match op {
                    BinOp::Contains => quote!(#hay.contains(#needle)),
                    BinOp::StartsWith => quote!(#hay.starts_with(#needle)),
                    _ => quote!(#hay.ends_with(#needle)),
                })
            }
            BinOp::In => self.membership(l, r),
            BinOp::Add | BinOp::Sub => self.ice_expr("a `bool`", whole),
        }
    }

    /// `l == r` (or `l != r` when `ne`) as `bool`.
    fn equality(&self, l: &TExpr, r: &TExpr, ne: bool) -> Rx {
        let op = if ne { quote!(!=) } else { quote!(==) };
        let cmp = |a: Rx, b: Rx| {
            let (a, b) = (a.at(Prec::Sum), b.at(Prec::Sum));
            Rx::new(Prec::Cmp, quote!(#a #op #b))
        };
        // `x == true` is `x`, `x == false` is `!x` (and `!=` the other way round).
        let with_bool = |x: Rx, lit: bool| if lit != ne { x } else { not(x) };
        let bool_lit = |e: &TExpr| match &e.kind {
            TKind::Lit(Lit::Bool(b)) => Some(*b),
            _ => None,
        };
        match (&l.ty, &r.ty) {
            (Ty::Null, Ty::Null) => Rx::atom(if ne { quote!(false) } else { quote!(true) }),
            (Ty::Json, Ty::Null) => {
                let j = self.json_receiver(l);
                let is_null = Rx::atom(quote!(#j.is_null()));
                if ne { not(is_null) } else { is_null }
            }
            (Ty::Null, Ty::Json) => self.equality(r, l, ne),
            (Ty::Choice(c), Ty::Str) => {
                if let TKind::Lit(Lit::Str(s)) = &r.kind {
                    let e = choice_ident(&self.p.choices[*c].var);
                    let m = pascal_ident(s);
                    cmp(self.expr_rx(l), Rx::atom(quote!(#e::#m)))
                } else {
                    cmp(Rx::atom(self.choice_str(l)), self.str_rx(r))
                }
            }
            (Ty::Str, Ty::Choice(_)) => self.equality(r, l, ne),
            (Ty::Bool, Ty::Bool) => match (bool_lit(l), bool_lit(r)) {
                (_, Some(b)) => with_bool(self.bool_rx(l), b),
                (Some(b), None) => with_bool(self.bool_rx(r), b),
                (None, None) => cmp(self.bool_rx(l), self.bool_rx(r)),
            },
            (Ty::Choice(_), Ty::Choice(_)) => cmp(self.expr_rx(l), self.expr_rx(r)),
            (Ty::Str, Ty::Str) => match (&l.kind, &r.kind) {
                (TKind::Lit(_), TKind::Lit(_)) => cmp(self.str_rx(l), self.str_rx(r)),
                // `s == ""` is `s.is_empty()`.
                (_, TKind::Lit(Lit::Str(e))) if e.is_empty() => self.is_empty(l, ne),
                (TKind::Lit(Lit::Str(e)), _) if e.is_empty() => self.is_empty(r, ne),
                _ => cmp(self.str_rx(l), self.str_rx(r)),
            },
            (Ty::Int, Ty::Int) => cmp(self.int_rx(l), self.int_rx(r)),
            (Ty::Int | Ty::Float, Ty::Int | Ty::Float) => cmp(self.float_rx(l), self.float_rx(r)),
            (Ty::Json, Ty::Json) => cmp(self.json_value(l), self.json_value(r)),
            (Ty::Json, _) | (_, Ty::Json) => {
                let (j, x) = if l.ty == Ty::Json { (l, r) } else { (r, l) };
                let jv = self.json_expr(j);
                let p = path_text(self.p, j);
                match &x.ty {
                    Ty::Str => cmp(self.json_str(j), self.str_rx(x)),
                    Ty::Choice(_) => cmp(self.json_str(j), Rx::atom(self.choice_str(x))),
                    Ty::Bool => {
                        let jb = Rx::atom(quote!(__nv::json_bool(#jv, #p)?));
                        match bool_lit(x) {
                            Some(b) => with_bool(jb, b),
                            None => cmp(jb, self.bool_rx(x)),
                        }
                    }
                    Ty::Int | Ty::Float => {
                        let n = self.num(x);
                        let test = if ne { quote!(is_ne) } else { quote!(is_eq) };
                        Rx::atom(quote!(__nv::num_cmp(__nv::json_num(#jv, #p)?, #n).#test()))
                    }
                    _ => self.ice_expr("an equality operand", x),
                }
            }
            (a, b) => Rx::atom(ice(format_args!(
                "an equality of `{a}` and `{b}` in {}",
                self.site()
            ))),
        }
    }

    /// `s.is_empty()` (or its negation).
    fn is_empty(&self, s: &TExpr, ne: bool) -> Rx {
        // A `String` is asked directly (`state.s.is_empty()`, not `state.s.as_str().is_empty()`).
        let s = match (&s.kind, &s.ty, self.string_call(s)) {
            (_, _, Some(owned)) => owned,
            (TKind::Var(v), Ty::Str, None) => self.var_place(*v),
            _ => self.str_rx(s).at(Prec::Atom),
        };
        let test = Rx::atom(quote!(#s.is_empty()));
        if ne { not(test) } else { test }
    }

    /// `l in r`: a list literal or a `json` array.
    fn membership(&self, l: &TExpr, r: &TExpr) -> Rx {
        let nv = &self.nv;
        let TKind::List(items) = &r.kind else {
            // `x in json_array`
            let hay = self.json_expr(r);
            let p = path_text(self.p, r);
            let needle = match &l.ty {
                Ty::Json => self.json_expr(l),
                Ty::Null => quote!(&#nv::Json::Null),
                Ty::Choice(_) => {
                    let c = self.choice_str(l);
                    quote!(&#nv::Json::from(#c))
                }
                Ty::Str => {
                    let s = self.str_expr(l);
                    quote!(&#nv::Json::from(#s))
                }
                Ty::Int | Ty::Float | Ty::Bool => {
                    let x = self.expr(l);
                    quote!(&#nv::Json::from(#x))
                }
                Ty::Secret(_) | Ty::List(_) | Ty::Record(_) | Ty::Optional(_) | Ty::Error => {
                    return self.ice_expr("an `in` needle", l);
                }
            };
            return Rx::atom(quote!(__nv::json_in(#needle, #hay, #p)?));
        };
        // Every item must be a literal of the kind the arm matches on: one that is not would be
        // silently dropped from the pattern, so it is an internal error instead. Repeated items
        // are dropped (`x in [a, a]` is `x in [a]`), so no pattern is unreachable.
        let lits = |pick: &dyn Fn(&Lit) -> Option<TokenStream>| -> Result<Vec<TokenStream>, Rx> {
            let mut out: Vec<TokenStream> = Vec::new();
            for i in items {
                let t = match &i.kind {
                    TKind::Lit(lit) => pick(lit),
                    _ => None,
                };
                let Some(t) = t else {
                    return Err(Rx::atom(ice(format_args!(
                        "an `in` list of type `{}` for a needle of type `{}` in {}",
                        r.ty,
                        l.ty,
                        self.site()
                    ))));
                };
                if !out.iter().any(|o| o.to_string() == t.to_string()) {
                    out.push(t);
                }
            }
            Ok(out)
        };
        let all = |f: fn(&Lit) -> bool| {
            items
                .iter()
                .all(|i| matches!(&i.kind, TKind::Lit(lit) if f(lit)))
        };
        let pattern = |x: TokenStream, pick: &dyn Fn(&Lit) -> Option<TokenStream>| match lits(pick)
        {
            Ok(ps) => Rx::atom(quote!(matches!(#x, #(#ps)|*))),
            Err(ice) => ice,
        };
        let str_lit = |lit: &Lit| match lit {
            Lit::Str(s) => Some(quote!(#s)),
            _ => None,
        };
        let bool_lit = |lit: &Lit| match lit {
            Lit::Bool(b) => Some(quote!(#b)),
            _ => None,
        };
        // `b in [true]` is `b`, `b in [false]` is `!b`; with both members it still evaluates
        // `b` (which may fault on a json value) and matches.
        let bools = |x: Rx| match lits(&bool_lit) {
            Ok(ps) => match ps
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .as_slice()
            {
                [one] if one == "true" => x,
                [one] if one == "false" => not(x),
                _ => {
                    let x = x.any();
                    Rx::atom(quote!(matches!(#x, #(#ps)|*)))
                }
            },
            Err(ice) => ice,
        };
        match &l.ty {
            Ty::Choice(c) => {
                let e = choice_ident(&self.p.choices[*c].var);
                pattern(self.expr(l), &|lit| match lit {
                    Lit::Str(s) => {
                        let m = pascal_ident(s);
                        Some(quote!(#e::#m))
                    }
                    _ => None,
                })
            }
            Ty::Str => pattern(self.str_expr(l), &str_lit),
            Ty::Int if all(|lit| matches!(lit, Lit::Int(_))) => {
                pattern(self.int_expr(l), &|lit| match lit {
                    Lit::Int(i) => Some(int_lit(*i).any()),
                    _ => None,
                })
            }
            Ty::Bool => bools(self.bool_rx(l)),
            Ty::Json if all(|lit| matches!(lit, Lit::Str(_))) => {
                pattern(self.json_str(l).any(), &str_lit)
            }
            Ty::Json if all(|lit| matches!(lit, Lit::Bool(_))) => {
                let j = self.json_expr(l);
                let p = path_text(self.p, l);
                bools(Rx::atom(quote!(__nv::json_bool(#j, #p)?)))
            }
            // `x in [null]` is `x == null` (the checker accepts it, the items can only be null).
            Ty::Json if all(|lit| matches!(lit, Lit::Null)) => {
                let j = self.json_receiver(l);
                Rx::atom(quote!(#j.is_null()))
            }
            Ty::Null if all(|lit| matches!(lit, Lit::Null)) => Rx::atom(quote!(true)),
            // Numbers (exact for ints, float otherwise), including json numbers.
            Ty::Int | Ty::Float | Ty::Json => match lits(&|lit| match lit {
                Lit::Int(i) => {
                    let i = int_lit(*i).any();
                    Some(quote!(__nv::Num::I(#i)))
                }
                Lit::Float(f) => {
                    let f = float_lit(*f).any();
                    Some(quote!(__nv::Num::F(#f)))
                }
                _ => None,
            }) {
                Ok(ns) => {
                    let x = self.num(l);
                    Rx::atom(quote!(__nv::num_in(#x, &[#(#ns),*])))
                }
                Err(ice) => ice,
            },
            Ty::Null
            | Ty::Secret(_)
            | Ty::List(_)
            | Ty::Record(_)
            | Ty::Optional(_)
            | Ty::Error => self.ice_expr("an `in` needle", l),
        }
    }
}

/// The value of an `int` known at compile time: a literal, or the length of a list literal.
fn const_int(e: &TExpr) -> Option<i64> {
    match &e.kind {
        TKind::Lit(Lit::Int(i)) => Some(*i),
        TKind::Builtin {
            func: Builtin::Len,
            arg,
        } => match &arg.kind {
            TKind::List(items) => Some(items.len() as i64),
            _ => None,
        },
        _ => None,
    }
}

/// `!x`.
fn not(x: Rx) -> Rx {
    let x = x.at(Prec::Unary);
    Rx::new(Prec::Unary, quote!(!#x))
}

/// What kind of expression `e` is, for internal error messages.
fn form(e: &TExpr) -> String {
    match &e.kind {
        TKind::Lit(_) => "a literal".into(),
        TKind::Var(_) => "a variable".into(),
        TKind::Field { .. } => "a field access".into(),
        TKind::Not(_) => "a `not`".into(),
        TKind::Binary { op, .. } => format!("a `{}`", op.as_str()),
        TKind::Builtin { func, .. } => format!("a `{}(...)` call", func.as_str()),
        TKind::List(_) => "a list".into(),
    }
}

/// The operands of a left-deep chain of one operator family (`and`; `or`; `+`/`-` of one
/// type), in order, each with `true` when it is subtracted. Iterative, so long chains cost no
/// stack, and flat in the output, so they cost none in rustc, syn or prettyplease either.
pub(super) fn chain_operands(e: &TExpr) -> Vec<(bool, &TExpr)> {
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

/// The path text of a json expression (`score.risk`), for run-time error messages.
pub(super) fn path_text(p: &Program, e: &TExpr) -> String {
    match &e.kind {
        TKind::Var(v) => p.vars[*v].name.clone(),
        TKind::Field { base, name } => format!("{}.{name}", path_text(p, base)),
        _ => "value".into(),
    }
}

/// Rebuilds enough of an expression's text for overflow messages.
pub(super) fn to_ast_text(p: &Program, e: &TExpr) -> crate::syntax::ast::Expr {
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
