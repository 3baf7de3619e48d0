//! Types of the language and type inference for expressions (conditions and arguments).
//!
//! `infer` is shared by the checker (which reports what it finds) and lowering (which keeps
//! the typed tree for codegen). It reports only type errors proper (E0303). Unknown variables
//! and secrets have rules of their own, so here they just poison the expression with
//! [`Ty::Error`], which every operator accepts silently: one mistake, one diagnostic.

use std::fmt;

use super::{ChoiceSet, Var};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{BinOp, Builtin, Expr, ExprKind, Literal, Span, TypeDecl, TypeKind};

/// A type as the checker sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// `string`
    Str,
    /// `int`
    Int,
    /// `float`
    Float,
    /// `bool`
    Bool,
    /// `json`: any JSON value; operations on it are checked at run time.
    Json,
    /// The literal `null`.
    Null,
    /// `secret T`
    Secret(Box<Ty>),
    /// The answer of a `choose`: index into the program's choice sets.
    Choice(usize),
    /// A list literal `[a, b]` (only after `in`), or a declared `list<T>`.
    List(Box<Ty>),
    /// A declared record type, by name (an undeclared name is reported by
    /// `check_type_names` and then behaves like [`Ty::Error`]).
    Record(String),
    /// `T?`: a `T` or `null`.
    Optional(Box<Ty>),
    /// An expression that already has a reported error.
    Error,
}

impl Ty {
    /// The type a declaration names.
    pub fn from_kind(kind: &TypeKind) -> Ty {
        match kind {
            TypeKind::String => Ty::Str,
            TypeKind::Int => Ty::Int,
            TypeKind::Float => Ty::Float,
            TypeKind::Bool => Ty::Bool,
            TypeKind::Json => Ty::Json,
            TypeKind::Secret(inner) => Ty::Secret(Box::new(Ty::from_kind(inner))),
            TypeKind::Named(name) => Ty::Record(name.clone()),
            TypeKind::List(inner) => Ty::List(Box::new(Ty::from_kind(inner))),
            TypeKind::Optional(inner) => Ty::Optional(Box::new(Ty::from_kind(inner))),
        }
    }

    /// True for the types issue 16 added (records, `list<T>`, `T?`): values held as checked
    /// JSON at run time, typed Rust values at the host's boundary.
    pub fn is_composite(&self) -> bool {
        matches!(self, Ty::Record(_) | Ty::List(_) | Ty::Optional(_))
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Float)
    }

    /// The type as users write it, with choice sets spelled out.
    pub(crate) fn describe(&self, choices: &[ChoiceSet<'_>]) -> String {
        match self {
            Ty::Choice(c) => match choices.get(*c) {
                Some(set) => format!(
                    "a choice of `{}` ({})",
                    set.var,
                    set.members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "a choice".into(),
            },
            Ty::Secret(t) => format!("`secret {}`", t.describe(choices).trim_matches('`')),
            Ty::List(t) => format!("a list of {}", t.describe(choices)),
            other => format!("`{other}`"),
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Str => f.write_str("string"),
            Ty::Int => f.write_str("int"),
            Ty::Float => f.write_str("float"),
            Ty::Bool => f.write_str("bool"),
            Ty::Json => f.write_str("json"),
            Ty::Null => f.write_str("null"),
            Ty::Secret(t) => write!(f, "secret {t}"),
            Ty::Choice(_) => f.write_str("choice"),
            Ty::List(t) => write!(f, "list<{t}>"),
            Ty::Record(n) => f.write_str(n),
            Ty::Optional(t) => write!(f, "{t}?"),
            Ty::Error => f.write_str("{error}"),
        }
    }
}

/// A typed expression.
#[derive(Clone, Debug, PartialEq)]
pub struct TExpr {
    /// The form.
    pub kind: TKind,
    /// Its type.
    pub ty: Ty,
    /// The source text it came from.
    pub span: Span,
}

/// Typed expression forms (parentheses are gone; the tree shape keeps the grouping).
#[derive(Clone, Debug, PartialEq)]
pub enum TKind {
    /// A literal.
    Lit(Literal),
    /// A whole variable (index into the program's variables).
    Var(usize),
    /// A field of a `json` value.
    Field {
        /// The value.
        base: Box<TExpr>,
        /// The field's name.
        name: String,
    },
    /// `not e`
    Not(Box<TExpr>),
    /// `a op b`
    Binary {
        /// The operator.
        op: BinOp,
        /// Left.
        lhs: Box<TExpr>,
        /// Right.
        rhs: Box<TExpr>,
    },
    /// `lower(e)` and friends.
    Builtin {
        /// Which.
        func: Builtin,
        /// Argument.
        arg: Box<TExpr>,
    },
    /// `[a, b]`
    List(Vec<TExpr>),
}

/// What [`infer`] needs to know.
pub(crate) struct Scope<'s, 'a> {
    /// The program's variables.
    pub(crate) vars: &'s [Var<'a>],
    /// Name -> variable.
    pub(crate) index: &'s std::collections::HashMap<&'a str, usize>,
    /// Choice sets.
    pub(crate) choices: &'s [ChoiceSet<'a>],
    /// The declared record types.
    pub(crate) types: &'s [&'a TypeDecl],
    /// Record type name -> its declaration.
    pub(crate) type_index: &'s std::collections::HashMap<&'a str, usize>,
}

impl Scope<'_, '_> {
    /// True when the type names a record type the program does not declare (reported once,
    /// by `check_type_names`; other rules stay quiet about it).
    pub(crate) fn unknown_record(&self, ty: &Ty) -> bool {
        match ty {
            Ty::Record(r) => !self.type_index.contains_key(r.as_str()),
            Ty::List(t) | Ty::Optional(t) | Ty::Secret(t) => self.unknown_record(t),
            _ => false,
        }
    }

    /// The declared type of `record.field`, if the record type and the field exist.
    pub(crate) fn field_ty(&self, record: &str, field: &str) -> Option<Ty> {
        let &t = self.type_index.get(record)?;
        self.types[t]
            .fields
            .iter()
            .find(|f| f.name.name == field)
            .map(|f| Ty::from_kind(&f.ty.kind))
    }
}

/// Infers the type of `expr`, pushing type errors (E0303) to `diags`.
pub(crate) fn infer(expr: &Expr, scope: &Scope<'_, '_>, diags: &mut Vec<Diagnostic>) -> TExpr {
    let (kind, ty) = match &expr.kind {
        ExprKind::Paren(inner) => return infer(inner, scope, diags),
        ExprKind::Lit(lit) => {
            let ty = match lit {
                Literal::Str(_) => Ty::Str,
                Literal::Int(_) => Ty::Int,
                Literal::Float(_) => Ty::Float,
                Literal::Bool(_) => Ty::Bool,
                Literal::Null => Ty::Null,
            };
            (TKind::Lit(lit.clone()), ty)
        }
        ExprKind::Path(path) => {
            let root = path.root();
            let Some(&var) = scope.index.get(root.name.as_str()) else {
                return TExpr {
                    kind: TKind::Lit(Literal::Null),
                    ty: Ty::Error,
                    span: expr.span,
                };
            };
            let mut cur = TExpr {
                kind: TKind::Var(var),
                ty: scope.vars[var].ty.clone(),
                span: root.span,
            };
            for field in &path.segments[1..] {
                let ty = match &cur.ty {
                    Ty::Json => Ty::Json,
                    Ty::Error | Ty::Secret(_) => Ty::Error,
                    // An unknown field (or type) has its own rule, `check_record_fields`.
                    Ty::Record(r) => scope.field_ty(r, &field.name).unwrap_or(Ty::Error),
                    other => {
                        let mut d = Diagnostic::error(
                            codes::E0303,
                            format!(
                                "`{}` is {}; only records and `json` values have fields",
                                path_prefix(path, field),
                                other.describe(scope.choices)
                            ),
                            field.span,
                        )
                        .with_label(format!("no field `{}`", field.name));
                        if let Ty::Optional(_) = other {
                            d = d.with_help(
                                "a `T?` may be `null`: compare it with `null`, or declare the field without `?`",
                            );
                        }
                        diags.push(d);
                        Ty::Error
                    }
                };
                let span = cur.span.to(field.span);
                cur = TExpr {
                    kind: TKind::Field {
                        base: Box::new(cur),
                        name: field.name.clone(),
                    },
                    ty,
                    span,
                };
            }
            return cur;
        }
        ExprKind::Not(inner) => {
            let t = infer(inner, scope, diags);
            expect_bool(&t, "`not`", scope, diags);
            (TKind::Not(Box::new(t)), Ty::Bool)
        }
        ExprKind::Binary {
            op,
            op_span,
            lhs,
            rhs,
        } => {
            let l = infer(lhs, scope, diags);
            let r = infer(rhs, scope, diags);
            let ty = binary_type(*op, *op_span, &l, &r, scope, diags);
            (
                TKind::Binary {
                    op: *op,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                },
                ty,
            )
        }
        ExprKind::Builtin {
            func,
            func_span,
            arg,
        } => {
            let a = infer(arg, scope, diags);
            let ty = match (func, &a.ty) {
                (_, Ty::Error | Ty::Secret(_)) => Ty::Error,
                (Builtin::Len, Ty::Str | Ty::Json | Ty::List(_)) => Ty::Int,
                (Builtin::Lower | Builtin::Upper | Builtin::Trim, Ty::Str | Ty::Json) => Ty::Str,
                (f, other) => {
                    let wants = if *f == Builtin::Len {
                        "a `string`, a `json` value or a list"
                    } else {
                        "a `string`"
                    };
                    diags.push(
                        Diagnostic::error(
                            codes::E0303,
                            format!(
                                "`{}` takes {wants}, not {}",
                                f.as_str(),
                                other.describe(scope.choices)
                            ),
                            *func_span,
                        )
                        .with_secondary(a.span, other.describe(scope.choices)),
                    );
                    Ty::Error
                }
            };
            (
                TKind::Builtin {
                    func: *func,
                    arg: Box::new(a),
                },
                ty,
            )
        }
        ExprKind::List(items) => {
            let typed: Vec<TExpr> = items.iter().map(|i| infer(i, scope, diags)).collect();
            let elem = typed.first().map_or(Ty::Error, |t| t.ty.clone());
            for t in &typed[1..] {
                if !compatible(&elem, &t.ty) {
                    diags.push(
                        Diagnostic::error(
                            codes::E0303,
                            format!(
                                "list items must have one type: this is {}, the first is {}",
                                t.ty.describe(scope.choices),
                                elem.describe(scope.choices)
                            ),
                            t.span,
                        )
                        .with_label("different type"),
                    );
                }
            }
            (TKind::List(typed), Ty::List(Box::new(elem)))
        }
    };
    TExpr {
        kind,
        ty,
        span: expr.span,
    }
}

/// The text of `path` up to (not including) `field`, e.g. `order.items` before `.qty`.
fn path_prefix(path: &crate::syntax::ast::Path, field: &crate::syntax::ast::Ident) -> String {
    path.segments
        .iter()
        .take_while(|s| !std::ptr::eq(*s, field))
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// Checks that a condition yields a `bool` (or a `json` value, checked at run time).
pub(crate) fn expect_condition(t: &TExpr, scope: &Scope<'_, '_>, diags: &mut Vec<Diagnostic>) {
    if matches!(t.ty, Ty::List(_)) {
        diags.push(
            Diagnostic::error(codes::E0303, "a condition cannot be a list", t.span)
                .with_label("a list")
                .with_help("did you mean `x in [...]`?"),
        );
        return;
    }
    expect_bool(t, "a condition", scope, diags);
}

fn expect_bool(t: &TExpr, what: &str, scope: &Scope<'_, '_>, diags: &mut Vec<Diagnostic>) {
    if !matches!(t.ty, Ty::Bool | Ty::Json | Ty::Error | Ty::Secret(_)) {
        diags.push(
            Diagnostic::error(
                codes::E0303,
                format!(
                    "{what} needs a `bool`, found {}",
                    t.ty.describe(scope.choices)
                ),
                t.span,
            )
            .with_label(format!("this is {}", t.ty.describe(scope.choices))),
        );
    }
}

/// Whether values of the two types can be compared for equality.
fn compatible(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        (Ty::Error, _) | (_, Ty::Error) => true,
        (Ty::Secret(_), _) | (_, Ty::Secret(_)) => true, // reported by the secrets rule
        (Ty::Json, t) | (t, Ty::Json) => !matches!(t, Ty::List(_)),
        (x, y) if x.is_numeric() && y.is_numeric() => true,
        // A `T?` compares with `null` and with another `T?` of a compatible `T`; comparing it
        // with a plain value is refused (it may be `null`; there is no narrowing yet).
        (Ty::Optional(a), Ty::Optional(b)) => compatible(a, b),
        (Ty::Optional(_), Ty::Null) | (Ty::Null, Ty::Optional(_)) => true,
        (Ty::Choice(_), Ty::Str) | (Ty::Str, Ty::Choice(_)) => true,
        (x, y) => x == y,
    }
}

fn is_poison(t: &Ty) -> bool {
    matches!(t, Ty::Error | Ty::Secret(_))
}

fn binary_type(
    op: BinOp,
    op_span: Span,
    l: &TExpr,
    r: &TExpr,
    scope: &Scope<'_, '_>,
    diags: &mut Vec<Diagnostic>,
) -> Ty {
    let d = |l: &TExpr, r: &TExpr| (l.ty.describe(scope.choices), r.ty.describe(scope.choices));
    let mut fail = |message: String, help: Option<&str>| {
        let (ld, rd) = d(l, r);
        let mut diag = Diagnostic::error(codes::E0303, message, op_span)
            .with_secondary(l.span, ld)
            .with_secondary(r.span, rd);
        if let Some(h) = help {
            diag = diag.with_help(h);
        }
        diags.push(diag);
    };
    let poisoned = is_poison(&l.ty) || is_poison(&r.ty);
    match op {
        BinOp::Or | BinOp::And => {
            for side in [l, r] {
                expect_bool(side, &format!("`{}`", op.as_str()), scope, diags);
            }
            Ty::Bool
        }
        BinOp::Eq | BinOp::Ne => {
            let list = matches!(l.ty, Ty::List(_)) || matches!(r.ty, Ty::List(_));
            let null_ok = match (&l.ty, &r.ty) {
                (Ty::Null, t) | (t, Ty::Null) => {
                    matches!(t, Ty::Json | Ty::Null | Ty::Error | Ty::Optional(_))
                }
                _ => true,
            };
            if list {
                fail(
                    format!("`{}` cannot compare with a list", op.as_str()),
                    Some("to test membership write `x in [a, b]`"),
                );
            } else if !null_ok && !poisoned {
                let (ld, rd) = d(l, r);
                fail(
                    format!("cannot compare {ld} with {rd}"),
                    Some("only `json` values and optional (`T?`) values can be `null`"),
                );
            } else if !compatible(&l.ty, &r.ty) {
                let (ld, rd) = d(l, r);
                let optional = matches!(l.ty, Ty::Optional(_)) || matches!(r.ty, Ty::Optional(_));
                fail(
                    format!("cannot compare {ld} with {rd}"),
                    optional.then_some(
                        "a `T?` may be `null`: compare it with `null`, or declare it without `?`",
                    ),
                );
            }
            Ty::Bool
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ok = |t: &Ty| t.is_numeric() || matches!(t, Ty::Json | Ty::Error | Ty::Secret(_));
            if !(ok(&l.ty) && ok(&r.ty)) {
                let (ld, rd) = d(l, r);
                fail(
                    format!("`{}` compares numbers, not {ld} and {rd}", op.as_str()),
                    None,
                );
            }
            Ty::Bool
        }
        BinOp::Contains if matches!(l.ty, Ty::List(_)) => {
            // `tags contains "x"`: only a list of strings (what the run-time test compares).
            let Ty::List(elem) = &l.ty else {
                return Ty::Bool;
            };
            let ok = matches!(**elem, Ty::Str | Ty::Error)
                && matches!(r.ty, Ty::Str | Ty::Choice(_) | Ty::Error | Ty::Secret(_));
            if !ok {
                let (ld, rd) = d(l, r);
                fail(
                    format!("`contains` looks for a string in a list of strings, not {rd} in {ld}"),
                    Some("to look for any other value write `x in list`"),
                );
            }
            Ty::Bool
        }
        BinOp::Contains | BinOp::StartsWith | BinOp::EndsWith => {
            let ok = |t: &Ty| matches!(t, Ty::Str | Ty::Json | Ty::Error | Ty::Secret(_));
            if !(ok(&l.ty) && ok(&r.ty)) {
                let (ld, rd) = d(l, r);
                fail(
                    format!("`{}` works on strings, not {ld} and {rd}", op.as_str()),
                    None,
                );
            }
            Ty::Bool
        }
        BinOp::In => {
            match &r.ty {
                Ty::List(elem) => {
                    if !compatible(&l.ty, elem) {
                        let (ld, rd) = d(l, r);
                        fail(format!("cannot look for {ld} in {rd}"), None);
                    }
                }
                Ty::Json | Ty::Error | Ty::Secret(_) => {}
                _ => {
                    let (_, rd) = d(l, r);
                    fail(
                        format!("`in` needs a list after it, found {rd}"),
                        Some("write `x in [\"a\", \"b\"]`"),
                    );
                }
            }
            Ty::Bool
        }
        BinOp::Add | BinOp::Sub => match (&l.ty, &r.ty) {
            _ if poisoned => Ty::Error,
            _ if reads_record(l) || reads_record(r) => {
                fail(
                    format!(
                        "`{}` on a field of a record is not supported yet",
                        op.as_str()
                    ),
                    Some("compare the fields directly, e.g. `refund.amount > limit`"),
                );
                Ty::Error
            }
            (Ty::Int, Ty::Int) => Ty::Int,
            (a, b) if a.is_numeric() && b.is_numeric() => Ty::Float,
            (Ty::Str, Ty::Str) if op == BinOp::Add => Ty::Str,
            (Ty::Json, _) | (_, Ty::Json) => {
                fail(
                    format!("`{}` is not defined on `json` values", op.as_str()),
                    Some("compare the field directly, e.g. `score.risk < 70`"),
                );
                Ty::Error
            }
            _ => {
                let (ld, rd) = d(l, r);
                fail(
                    format!("cannot apply `{}` to {ld} and {rd}", op.as_str()),
                    None,
                );
                Ty::Error
            }
        },
    }
}

/// True when the typed expression reads a field of a record (held as checked JSON at run
/// time, so arithmetic on it has no code yet).
fn reads_record(e: &TExpr) -> bool {
    match &e.kind {
        TKind::Field { base, .. } => matches!(base.ty, Ty::Record(_)) || reads_record(base),
        _ => false,
    }
}

/// Whether a value of type `value` may be passed where `param` is declared.
pub(crate) fn assignable(value: &Ty, param: &Ty) -> bool {
    match (value, param) {
        (Ty::Error, _) => true,
        (v, p) if v == p => true,
        (Ty::Null, Ty::Optional(_)) => true,
        (v, Ty::Optional(p)) => assignable(v, p),
        (Ty::Int, Ty::Float) => true,
        (Ty::Choice(_), Ty::Str) => true,
        (v, Ty::Json) => !matches!(v, Ty::Secret(_)),
        _ => false,
    }
}
