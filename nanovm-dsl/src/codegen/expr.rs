//! Typed expressions: conditions, arguments and template holes as Rust expressions.
//!
//! Each typed expression compiles to a Rust expression of a fixed shape per type:
//! `string` -> `&str`, `int` -> `i64`, `float` -> `f64`, `bool` -> `bool`, `json` -> `&Json`,
//! a choice -> the choice enum (by value). Faults propagate with `?`, so these expressions
//! live inside functions returning `Result<_, Fault>`.
//!
//! Each function accepts exactly the forms and types the checker lets through for it;
//! anything else becomes an internal compiler error in place of the value, never a guess.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::{Gen, choice_ident, ice, pascal_ident, snake_ident};
use crate::check::Ty;
use crate::lower::{Program, TExpr, TKind};
use crate::syntax::ast::{BinOp, Builtin, Literal as Lit};

impl Gen<'_> {
    /// An internal compiler error for an expression the generator cannot compile as `want`
    /// (`"an `int` expression of type `string` (a variable) in `guard policy`"`).
    fn ice_expr(&self, want: &str, e: &TExpr) -> TokenStream {
        ice(format_args!(
            "{want} expression of type `{}` ({}) in {}",
            e.ty,
            form(e),
            self.site()
        ))
    }

    /// An expression borrowing a variable (type `&T`): `&state.x` for inputs,
    /// `__nv::get(&state.x, "x")?` for assigned variables.
    pub(super) fn var_ref(&self, var: usize) -> TokenStream {
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
    pub(super) fn var_value(&self, var: usize) -> TokenStream {
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

    /// Any expression, in the shape of its own type.
    pub(super) fn expr(&self, e: &TExpr) -> TokenStream {
        match (&e.kind, &e.ty) {
            (TKind::Var(v), ty) => match ty {
                Ty::Str => {
                    let place = self.var_place(*v);
                    quote!(#place.as_str())
                }
                Ty::Int | Ty::Float | Ty::Bool | Ty::Choice(_) => self.var_value(*v),
                Ty::Json => self.var_ref(*v),
                Ty::Null | Ty::Secret(_) | Ty::List(_) | Ty::Error => self.ice_expr("a plain", e),
            },
            (TKind::Field { .. }, _) => self.json_expr(e),
            (_, Ty::Str) => self.str_expr(e),
            (_, Ty::Int) => self.int_expr(e),
            (_, Ty::Float) => self.float_expr(e),
            (_, Ty::Bool) => self.bool_expr(e),
            (TKind::Lit(Lit::Null), Ty::Null) => {
                let nv = &self.nv;
                quote!((&#nv::Json::Null))
            }
            (_, Ty::Json) => self.json_expr(e),
            _ => self.ice_expr("a plain", e),
        }
    }

    /// A `string` expression as `&str`.
    pub(super) fn str_expr(&self, e: &TExpr) -> TokenStream {
        match (&e.kind, &e.ty) {
            (TKind::Lit(Lit::Str(s)), Ty::Str) => quote!(#s),
            (TKind::Var(_), Ty::Str) => self.expr(e),
            (TKind::Field { .. }, Ty::Json) => {
                let j = self.json_expr(e);
                let p = path_text(self.p, e);
                quote!(__nv::json_str(#j, #p)?)
            }
            (
                TKind::Builtin {
                    func: func @ (Builtin::Lower | Builtin::Upper | Builtin::Trim),
                    arg,
                },
                Ty::Str,
            ) => {
                let a = self.str_or_json_str(arg);
                match func {
                    Builtin::Lower => quote!((&*__nv::lower(#a))),
                    Builtin::Upper => quote!((&*__nv::upper(#a))),
                    _ => quote!(#a.trim()),
                }
            }
            (TKind::Binary { op: BinOp::Add, .. }, Ty::Str) => {
                let parts = chain_operands(e).into_iter().map(|(_, e)| self.str_expr(e));
                quote!((&*__nv::concat(&[#(#parts),*])))
            }
            _ => self.ice_expr("a `string`", e),
        }
    }

    /// A `string` or `json` (a string at run time) expression as `&str`; a choice as its name.
    pub(super) fn str_or_json_str(&self, e: &TExpr) -> TokenStream {
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

    /// An `int` expression as `i64`.
    pub(super) fn int_expr(&self, e: &TExpr) -> TokenStream {
        if e.ty != Ty::Int {
            return self.ice_expr("an `int`", e);
        }
        match &e.kind {
            TKind::Lit(Lit::Int(i)) => {
                let l = Literal::i64_unsuffixed(*i);
                quote!((#l))
            }
            TKind::Var(_) => self.expr(e),
            TKind::Builtin {
                func: Builtin::Len,
                arg,
            } => match (&arg.ty, &arg.kind) {
                (Ty::Json, _) => {
                    let j = self.json_expr(arg);
                    let p = path_text(self.p, arg);
                    quote!(__nv::json_len(#j, #p)?)
                }
                (Ty::List(_), TKind::List(items)) => {
                    let n = items.len() as i64;
                    quote!((#n))
                }
                (Ty::Str, _) => {
                    let s = self.str_expr(arg);
                    quote!(__nv::str_len(#s))
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
                quote!(__nv::checked_sum(#first, &[#(#rest),*], #text)?)
            }
            _ => self.ice_expr("an `int`", e),
        }
    }

    /// An `int` or `float` expression as `f64`.
    pub(super) fn float_expr(&self, e: &TExpr) -> TokenStream {
        match (&e.kind, &e.ty) {
            (_, Ty::Int) => {
                let i = self.int_expr(e);
                quote!((#i as f64))
            }
            (TKind::Lit(Lit::Float(f)), Ty::Float) => {
                let l = Literal::f64_unsuffixed(*f);
                quote!((#l))
            }
            (TKind::Var(_), Ty::Float) => self.expr(e),
            (
                TKind::Binary {
                    op: BinOp::Add | BinOp::Sub,
                    ..
                },
                Ty::Float,
            ) => {
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
            _ => self.ice_expr("a `float`", e),
        }
    }

    /// A `json` expression (a variable or a field path) as `&Json`.
    pub(super) fn json_expr(&self, e: &TExpr) -> TokenStream {
        match (&e.kind, &e.ty) {
            (TKind::Var(v), Ty::Json) => self.var_ref(*v),
            (TKind::Field { base, name }, Ty::Json) => {
                let b = self.json_expr(base);
                let p = path_text(self.p, base);
                quote!(__nv::field(#b, #p, #name)?)
            }
            _ => self.ice_expr("a `json`", e),
        }
    }

    /// A numeric operand as `Num` (for comparisons involving json or mixed types).
    pub(super) fn num(&self, e: &TExpr) -> TokenStream {
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
            _ => self.ice_expr("a numeric", e),
        }
    }

    /// A condition as `bool` (a `json` value must be a bool at run time).
    pub(super) fn bool_expr(&self, e: &TExpr) -> TokenStream {
        match (&e.kind, &e.ty) {
            (TKind::Lit(Lit::Bool(b)), Ty::Bool) => quote!(#b),
            (TKind::Var(_), Ty::Bool) => self.expr(e),
            (TKind::Var(_) | TKind::Field { .. }, Ty::Json) => {
                let j = self.json_expr(e);
                let p = path_text(self.p, e);
                quote!(__nv::json_bool(#j, #p)?)
            }
            (TKind::Not(x), Ty::Bool) => {
                let x = self.bool_expr(x);
                quote!((!#x))
            }
            (TKind::Binary { op, lhs, rhs }, Ty::Bool) => self.binary(e, *op, lhs, rhs),
            _ => self.ice_expr("a `bool`", e),
        }
    }

    /// A `bool`-valued binary expression.
    fn binary(&self, whole: &TExpr, op: BinOp, l: &TExpr, r: &TExpr) -> TokenStream {
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
                    // At least one side is `json` (anything else is an ICE in `num`).
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
            BinOp::Add | BinOp::Sub => self.ice_expr("a `bool`", whole),
        }
    }

    /// `l == r` as `bool`.
    fn equality(&self, l: &TExpr, r: &TExpr) -> TokenStream {
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
            (Ty::Json, _) | (_, Ty::Json) => {
                let (j, x) = if l.ty == Ty::Json { (l, r) } else { (r, l) };
                let jv = self.json_expr(j);
                let p = path_text(self.p, j);
                match &x.ty {
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
                    _ => ice(format_args!(
                        "an equality of `json` and `{}` in {}",
                        x.ty,
                        self.site()
                    )),
                }
            }
            (a, b) => ice(format_args!(
                "an equality of `{a}` and `{b}` in {}",
                self.site()
            )),
        }
    }

    /// `l in r`: a list literal or a `json` array.
    fn membership(&self, l: &TExpr, r: &TExpr) -> TokenStream {
        let nv = &self.nv;
        let TKind::List(items) = &r.kind else {
            // `x in json_array`
            let hay = self.json_expr(r);
            let p = path_text(self.p, r);
            let needle = match &l.ty {
                Ty::Json => self.json_expr(l),
                Ty::Null => quote!(&#nv::Json::Null),
                Ty::Choice(_) => {
                    let c = self.expr(l);
                    quote!(&#nv::Json::from(#c.as_str()))
                }
                Ty::Str => {
                    let s = self.str_expr(l);
                    quote!(&#nv::Json::from(#s))
                }
                Ty::Int | Ty::Float | Ty::Bool => {
                    let x = self.expr(l);
                    quote!(&#nv::Json::from(#x))
                }
                Ty::Secret(_) | Ty::List(_) | Ty::Error => {
                    return self.ice_expr("an `in` needle", l);
                }
            };
            return quote!(__nv::json_in(#needle, #hay, #p)?);
        };
        // Every item must be a literal of the kind the arm matches on: one that is not would be
        // silently dropped from the pattern, so it is an internal error instead.
        let lits =
            |pick: &dyn Fn(&Lit) -> Option<TokenStream>| -> Result<Vec<TokenStream>, TokenStream> {
                items
                    .iter()
                    .map(|i| match &i.kind {
                        TKind::Lit(lit) => pick(lit).ok_or(()),
                        _ => Err(()),
                    })
                    .collect::<Result<Vec<_>, ()>>()
                    .map_err(|()| {
                        ice(format_args!(
                            "an `in` list of type `{}` for a needle of type `{}` in {}",
                            r.ty,
                            l.ty,
                            self.site()
                        ))
                    })
            };
        let all = |f: fn(&Lit) -> bool| {
            items
                .iter()
                .all(|i| matches!(&i.kind, TKind::Lit(lit) if f(lit)))
        };
        let pattern = |x: TokenStream, pick: &dyn Fn(&Lit) -> Option<TokenStream>| match lits(pick)
        {
            Ok(ps) => quote!(matches!(#x, #(#ps)|*)),
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
            Ty::Str => pattern(self.str_expr(l), &|lit| match lit {
                Lit::Str(s) => Some(quote!(#s)),
                _ => None,
            }),
            Ty::Int if all(|lit| matches!(lit, Lit::Int(_))) => {
                pattern(self.int_expr(l), &|lit| match lit {
                    Lit::Int(i) => Some(quote!(#i)),
                    _ => None,
                })
            }
            Ty::Bool => pattern(self.bool_expr(l), &|lit| match lit {
                Lit::Bool(b) => Some(quote!(#b)),
                _ => None,
            }),
            Ty::Json if all(|lit| matches!(lit, Lit::Str(_))) => {
                let j = self.json_expr(l);
                let p = path_text(self.p, l);
                pattern(quote!(__nv::json_str(#j, #p)?), &|lit| match lit {
                    Lit::Str(s) => Some(quote!(#s)),
                    _ => None,
                })
            }
            Ty::Json if all(|lit| matches!(lit, Lit::Bool(_))) => {
                let j = self.json_expr(l);
                let p = path_text(self.p, l);
                pattern(quote!(__nv::json_bool(#j, #p)?), &|lit| match lit {
                    Lit::Bool(b) => Some(quote!(#b)),
                    _ => None,
                })
            }
            // `x in [null]` is `x == null` (the checker accepts it, the items can only be null).
            Ty::Json if all(|lit| matches!(lit, Lit::Null)) => {
                let j = self.json_expr(l);
                quote!(#j.is_null())
            }
            Ty::Null if all(|lit| matches!(lit, Lit::Null)) => quote!(true),
            // Numbers (exact for ints, float otherwise), including json numbers.
            Ty::Int | Ty::Float | Ty::Json => match lits(&|lit| match lit {
                Lit::Int(i) => Some(quote!(__nv::Num::I(#i))),
                Lit::Float(f) => Some(quote!(__nv::Num::F(#f))),
                _ => None,
            }) {
                Ok(ns) => {
                    let x = self.num(l);
                    quote!(__nv::num_in(#x, &[#(#ns),*]))
                }
                Err(ice) => ice,
            },
            Ty::Null | Ty::Secret(_) | Ty::List(_) | Ty::Error => {
                self.ice_expr("an `in` needle", l)
            }
        }
    }
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
