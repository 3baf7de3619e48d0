//! The syntax tree of a `.nvm` file.
//!
//! Every node carries the byte [`Span`] of the text it was parsed from, so every later phase
//! (checker, codegen, the proc macro) can point back at the exact source. The tree keeps the
//! program's items in source order and keeps what the user wrote even when it is wrong
//! (a guard without `otherwise`, two `start` lines): rejecting it is the checker's job, and the
//! checker can only explain what it can still see.

use std::fmt;

/// A half-open byte range `start..end` into the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub const fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    /// Length in bytes.
    pub fn len(self) -> usize {
        self.end - self.start
    }

    /// True for a zero-width span.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// A name as written, e.g. `analyze`, with its span.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ident {
    /// The text of the name.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// An integer literal with its span, e.g. the `3` of `retry 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntLit {
    /// The value.
    pub value: i64,
    /// Where it was written.
    pub span: Span,
}

/// A number literal with its span, e.g. the `0.9` of `min_confidence 0.9`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NumLit {
    /// The value.
    pub value: f64,
    /// Where it was written.
    pub span: Span,
}

/// A string literal with escapes already decoded, e.g. `"refund tool failed"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrLit {
    /// The decoded value.
    pub value: String,
    /// The span of the whole literal, quotes included.
    pub span: Span,
}

/// A whole `.nvm` file: one or more programs.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    /// The programs in source order.
    pub programs: Vec<Program>,
}

/// `program NAME { ... }`, preceded by optional `///` doc lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Doc comment lines (without the leading `///` and one following space).
    pub doc: Vec<String>,
    /// The program's name, e.g. `customer_refund`.
    pub name: Ident,
    /// The items in source order.
    pub items: Vec<Item>,
    /// The whole `program ... { ... }` text.
    pub span: Span,
}

impl Program {
    /// The steps, in source order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.items.iter().filter_map(|i| match i {
            Item::Step(s) => Some(s),
            _ => None,
        })
    }

    /// The declared tools, in source order.
    pub fn tools(&self) -> impl Iterator<Item = &ToolDecl> {
        self.items.iter().filter_map(|i| match i {
            Item::Tool(t) => Some(t),
            _ => None,
        })
    }

    /// The input fields of every `input` block, in source order.
    pub fn inputs(&self) -> impl Iterator<Item = &Field> {
        self.items
            .iter()
            .filter_map(|i| match i {
                Item::Input(b) => Some(b.fields.iter()),
                _ => None,
            })
            .flatten()
    }

    /// The first `budget` block, if any.
    pub fn budget(&self) -> Option<&BudgetBlock> {
        self.items.iter().find_map(|i| match i {
            Item::Budget(b) => Some(b),
            _ => None,
        })
    }

    /// The replanning edges, in source order.
    pub fn replans(&self) -> impl Iterator<Item = &ReplanDecl> {
        self.items.iter().filter_map(|i| match i {
            Item::Replan(r) => Some(r),
            _ => None,
        })
    }

    /// The declared record types, in source order.
    pub fn types(&self) -> impl Iterator<Item = &TypeDecl> {
        self.items.iter().filter_map(|i| match i {
            Item::Type(t) => Some(t),
            _ => None,
        })
    }

    /// The first `start` declaration, if any.
    pub fn start(&self) -> Option<&StartDecl> {
        self.items.iter().find_map(|i| match i {
            Item::Start(s) => Some(s),
            _ => None,
        })
    }
}

/// One item of a program body.
#[derive(Clone, Debug, PartialEq)]
// Items are built once per parse and matched everywhere; boxing steps would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Item {
    /// `input { name: type ... }`
    Input(InputBlock),
    /// `budget { max_steps: 20, max_duration: 30s }`
    Budget(BudgetBlock),
    /// `tool lookup(id: string) -> json` or `effect tool pay(...) -> json idempotent`
    Tool(ToolDecl),
    /// `start analyze`
    Start(StartDecl),
    /// `on budget_exceeded -> replan replans 2 budget { max_steps: 10 }`
    Replan(ReplanDecl),
    /// Any step: `llm`, `call`, `guard`, `branch`, `parallel`, `await`, `end`.
    Step(Step),
    /// `type Refund { id: string, amount: int }`: a record type.
    Type(TypeDecl),
}

/// `type NAME { field: type, ... }`: a record type the program's inputs, tool parameters and
/// results, event payloads and variables may use.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeDecl {
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// The type's name, e.g. `Refund`.
    pub name: Ident,
    /// The fields in declaration order (their types are never `secret`).
    pub fields: Vec<Field>,
    /// The whole declaration.
    pub span: Span,
}

/// What a replanning edge continues after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplanOn {
    /// A budget ran out (`budget_exceeded`, any budget but the stall budget).
    BudgetExceeded,
    /// The stall budget ran out (`stalled`).
    Stalled,
}

impl ReplanOn {
    /// The word as written.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplanOn::BudgetExceeded => "budget_exceeded",
            ReplanOn::Stalled => "stalled",
        }
    }
}

/// `on budget_exceeded -> replan replans 2 budget { max_steps: 10 }`: where a run continues
/// instead of ending when the interruption happens, how many times at most, and the budget
/// slice it gets each time.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplanDecl {
    /// What it continues after.
    pub on: ReplanOn,
    /// The `budget_exceeded` / `stalled` word.
    pub on_span: Span,
    /// Where the run continues.
    pub target: Target,
    /// `replans N`: how many times at most.
    pub replans: IntLit,
    /// The fresh budget slice each replan gets.
    pub slice: BudgetBlock,
    /// The whole declaration.
    pub span: Span,
}

/// `input { request: string  email: secret string }`
#[derive(Clone, Debug, PartialEq)]
pub struct InputBlock {
    /// The fields in source order.
    pub fields: Vec<Field>,
    /// The whole block.
    pub span: Span,
}

/// `name: type`, an input field or a tool parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The field's name.
    pub name: Ident,
    /// Its declared type.
    pub ty: Type,
    /// `name: type` as a whole.
    pub span: Span,
}

/// A type as written, e.g. `int` or `secret string`.
#[derive(Clone, Debug, PartialEq)]
pub struct Type {
    /// Which type.
    pub kind: TypeKind,
    /// Where it was written.
    pub span: Span,
}

/// The types of the language.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TypeKind {
    /// `string`
    String,
    /// `int`, a signed 64-bit integer
    Int,
    /// `float`, a 64-bit float
    Float,
    /// `bool`
    Bool,
    /// `json`, any JSON value; field access on it is checked at run time
    Json,
    /// `secret T`: the value lives in the vault; only tools may receive it
    Secret(Box<TypeKind>),
    /// The name of a declared record type, e.g. `Refund`
    Named(String),
    /// `list<T>`
    List(Box<TypeKind>),
    /// `T?`: a `T` or `null`
    Optional(Box<TypeKind>),
}

impl fmt::Display for TypeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeKind::String => f.write_str("string"),
            TypeKind::Int => f.write_str("int"),
            TypeKind::Float => f.write_str("float"),
            TypeKind::Bool => f.write_str("bool"),
            TypeKind::Json => f.write_str("json"),
            TypeKind::Secret(t) => write!(f, "secret {t}"),
            TypeKind::Named(n) => f.write_str(n),
            TypeKind::List(t) => write!(f, "list<{t}>"),
            TypeKind::Optional(t) => write!(f, "{t}?"),
        }
    }
}

/// `budget { max_steps: 20, max_duration: 30s }`
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetBlock {
    /// The entries in source order (unknown keys are kept; the checker rejects them).
    pub entries: Vec<BudgetEntry>,
    /// The whole block.
    pub span: Span,
}

/// One `key: value` of a budget block.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetEntry {
    /// The key, e.g. `max_steps`.
    pub key: Ident,
    /// The value.
    pub value: BudgetValue,
    /// `key: value` as a whole.
    pub span: Span,
}

/// The value of a budget entry.
#[derive(Clone, Debug, PartialEq)]
pub enum BudgetValue {
    /// A count, e.g. `20`.
    Int(IntLit),
    /// A duration, e.g. `30s`.
    Duration(DurationLit),
}

/// A duration literal: an integer and a unit, e.g. `500ms`, `30s`, `5m`, `24h`, `2d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationLit {
    /// The duration in milliseconds.
    pub millis: u64,
    /// Where it was written.
    pub span: Span,
}

/// `tool NAME(params) -> type` or `effect tool NAME(params) -> type [idempotent]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDecl {
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// The span of the `effect` keyword when the tool has side effects.
    pub effect: Option<Span>,
    /// The tool's name.
    pub name: Ident,
    /// Parameters in declaration order.
    pub params: Vec<Field>,
    /// The declared result type.
    pub ret: Type,
    /// The span of `idempotent` when present.
    pub idempotent: Option<Span>,
    /// The whole declaration.
    pub span: Span,
}

impl ToolDecl {
    /// True for `effect tool`.
    pub fn is_effect(&self) -> bool {
        self.effect.is_some()
    }
}

/// `start analyze`
#[derive(Clone, Debug, PartialEq)]
pub struct StartDecl {
    /// The entry step.
    pub target: Ident,
    /// The whole declaration.
    pub span: Span,
}

/// A named step, a node of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// The step's name.
    pub name: Ident,
    /// What the step does.
    pub kind: StepKind,
    /// The whole step.
    pub span: Span,
}

/// The step kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// `llm NAME { prompt: "..." choose d from [a, b] } -> next`
    Llm(LlmStep),
    /// `call NAME = tool(arg: expr) into v retry 3 on error -> s -> next`
    Call(CallStep),
    /// `guard NAME { when cond -> s  otherwise -> t }`: a guardrail.
    Guard(Decision),
    /// `branch NAME { when cond -> s  otherwise -> t }`: routing, not a guardrail.
    Branch(Decision),
    /// `parallel NAME max_concurrency 4 { call ...  llm ... } on error -> s -> next`
    Parallel(ParallelStep),
    /// `await NAME = event into v timeout 24h -> s -> next`
    Await(AwaitStep),
    /// `end NAME: success` or `end NAME: failure "message"`
    End(EndStep),
}

impl StepKind {
    /// The keyword that introduces the step, e.g. `"llm"`.
    pub fn keyword(&self) -> &'static str {
        match self {
            StepKind::Llm(_) => "llm",
            StepKind::Call(_) => "call",
            StepKind::Guard(_) => "guard",
            StepKind::Branch(_) => "branch",
            StepKind::Parallel(_) => "parallel",
            StepKind::Await(_) => "await",
            StepKind::End(_) => "end",
        }
    }
}

/// `-> name` (a successor edge), with the span of the whole arrow clause.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The named successor.
    pub name: Ident,
    /// `-> name` as written (or `on error -> name`, `timeout 24h -> name`).
    pub span: Span,
}

/// The body of an `llm` step. Clauses may come in any order; each at most once.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmStep {
    /// `prompt: "..."`
    pub prompt: Option<Template>,
    /// `system: "..."`
    pub system: Option<Template>,
    /// `model: "..."`
    pub model: Option<StrLit>,
    /// `max_tokens: N`
    pub max_tokens: Option<IntLit>,
    /// `min_confidence P` (with `choose`)
    pub min_confidence: Option<NumLit>,
    /// `choose VAR from [a, b]` or `into VAR`
    pub output: Option<LlmOutput>,
    /// `on invalid -> S`
    pub on_invalid: Option<Target>,
    /// `retry N`
    pub retry: Option<IntLit>,
    /// `on error -> S`
    pub on_error: Option<Target>,
    /// `after a, b` (only inside `parallel`)
    pub after: Vec<Ident>,
    /// The final `-> S` after the closing brace (absent inside `parallel`).
    pub next: Option<Target>,
}

/// What an `llm` step produces.
#[derive(Clone, Debug, PartialEq)]
pub enum LlmOutput {
    /// `choose decision from [yes, no]`: one of an admissible set.
    Choose {
        /// The variable that receives the choice.
        var: Ident,
        /// The admissible answers, in order.
        choices: Vec<Ident>,
        /// The whole clause.
        span: Span,
    },
    /// `into summary`: free text.
    Into {
        /// The variable that receives the text.
        var: Ident,
        /// The whole clause.
        span: Span,
    },
    /// `answer refund: Refund`: a value of a declared type; anything else is invalid.
    Answer {
        /// The variable that receives the value.
        var: Ident,
        /// The type asked for (boxed: most steps have none, and the step enum stays small).
        ty: Box<Type>,
        /// The whole clause.
        span: Span,
    },
}

impl LlmOutput {
    /// The variable the output is stored in.
    pub fn var(&self) -> &Ident {
        match self {
            LlmOutput::Choose { var, .. }
            | LlmOutput::Into { var, .. }
            | LlmOutput::Answer { var, .. } => var,
        }
    }
}

/// A `call` step: `call NAME = TOOL(arg: expr, ...) [into VAR] [retry N] [on error -> S] -> S`.
#[derive(Clone, Debug, PartialEq)]
pub struct CallStep {
    /// The tool called.
    pub tool: Ident,
    /// `arg: expr` pairs in source order.
    pub args: Vec<Arg>,
    /// The span of `(...)`, parentheses included.
    pub args_span: Span,
    /// `into VAR`
    pub into: Option<Ident>,
    /// `retry N`
    pub retry: Option<IntLit>,
    /// `on error -> S`
    pub on_error: Option<Target>,
    /// `after a, b` (only inside `parallel`)
    pub after: Vec<Ident>,
    /// The final `-> S` (absent inside `parallel`).
    pub next: Option<Target>,
}

/// `name: expr`, one argument of a call.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// The parameter named.
    pub name: Ident,
    /// The value passed (inside `trusted(...)`, the expression it wraps).
    pub value: Expr,
    /// `trusted(value, "reason")`, when the program vouches for the value.
    pub trust: Option<Trust>,
    /// `name: expr` as a whole.
    pub span: Span,
}

/// `trusted(EXPR, "reason")` around a call argument: the program states that the value may
/// reach the tool although it came from a model's free text or a tool's result, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Trust {
    /// The reason given (the checker requires a non-empty one).
    pub reason: Option<StrLit>,
    /// `trusted(...)` as a whole.
    pub span: Span,
}

/// The arms of a `guard` or `branch`. `otherwise` is optional in the tree so the checker can
/// report its absence.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// `when COND -> S` arms in source order.
    pub arms: Vec<Arm>,
    /// `otherwise -> S` clauses in source order (the checker wants exactly one, last).
    pub otherwise: Vec<Target>,
    /// The span of the `{ ... }` body.
    pub body_span: Span,
}

/// `when COND -> S`
#[derive(Clone, Debug, PartialEq)]
pub struct Arm {
    /// The condition.
    pub cond: Expr,
    /// Where it leads.
    pub target: Target,
    /// The whole arm.
    pub span: Span,
}

/// `parallel NAME [max_concurrency N] [retry N] { branches } [on error -> S] -> S`
#[derive(Clone, Debug, PartialEq)]
pub struct ParallelStep {
    /// `max_concurrency N`
    pub max_concurrency: Option<IntLit>,
    /// `retry N`: re-run the branches that did not succeed, up to N more times.
    pub retry: Option<IntLit>,
    /// The branches in declaration order; each is a `call` or `llm` step.
    pub branches: Vec<Step>,
    /// `on error -> S`
    pub on_error: Option<Target>,
    /// `-> S`
    pub next: Option<Target>,
}

/// `await NAME = EVENT [into VAR[: TYPE]] [timeout DURATION -> S] -> S`
#[derive(Clone, Debug, PartialEq)]
pub struct AwaitStep {
    /// The event name waited for.
    pub event: Ident,
    /// `into VAR`
    pub into: Option<Ident>,
    /// `: TYPE` after `into VAR` (defaults to `json`).
    pub ty: Option<Type>,
    /// `timeout DURATION -> S`
    pub timeout: Option<(DurationLit, Target)>,
    /// `-> S`
    pub next: Option<Target>,
}

/// `end NAME: success` / `end NAME: failure "message"`
#[derive(Clone, Debug, PartialEq)]
pub struct EndStep {
    /// True for `success`.
    pub success: bool,
    /// The failure message.
    pub message: Option<StrLit>,
}

/// A prompt or system string with `{var}` / `{var.field}` holes.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    /// The pieces in order.
    pub parts: Vec<TemplatePart>,
    /// The span of the whole string literal, quotes included.
    pub span: Span,
}

/// A piece of a [`Template`].
#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePart {
    /// Literal text, escapes (`\n`, `{{`, `}}`) decoded.
    Text(String),
    /// `{path}`: the span covers the path inside the braces, in the source text.
    Hole(Path),
}

/// A condition or argument expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What kind of expression.
    pub kind: ExprKind,
    /// Where it was written.
    pub span: Span,
}

/// Expression forms (docs/language.md, "Conditions and expressions").
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A literal, e.g. `"DE"`, `5000`, `0.5`, `true`, `null`.
    Lit(Literal),
    /// A variable or field path, e.g. `amount_cents`, `valid.ok`.
    Path(Path),
    /// `not e`
    Not(Box<Expr>),
    /// `a op b`
    Binary {
        /// The operator.
        op: BinOp,
        /// The span of the operator token.
        op_span: Span,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `lower(e)`, `upper(e)`, `trim(e)`, `len(e)`
    Builtin {
        /// Which builtin.
        func: Builtin,
        /// The span of the builtin's name.
        func_span: Span,
        /// Its argument.
        arg: Box<Expr>,
    },
    /// `[lit, lit, ...]`
    List(Vec<Expr>),
    /// `(e)`: kept so spans and pretty-printing stay faithful.
    Paren(Box<Expr>),
}

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `"text"`
    Str(String),
    /// `42`, `-7`
    Int(i64),
    /// `0.5`
    Float(f64),
    /// `true` / `false`
    Bool(bool),
    /// `null`
    Null,
}

/// `name.field.field`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    /// At least one segment; the first names a variable.
    pub segments: Vec<Ident>,
    /// The whole path.
    pub span: Span,
}

impl Path {
    /// The variable the path starts from.
    pub fn root(&self) -> &Ident {
        &self.segments[0]
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(&s.name)?;
        }
        Ok(())
    }
}

/// Binary operators, lowest precedence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `contains`
    Contains,
    /// `starts_with`
    StartsWith,
    /// `ends_with`
    EndsWith,
    /// `in`
    In,
    /// `+`
    Add,
    /// `-`
    Sub,
}

impl BinOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Contains => "contains",
            BinOp::StartsWith => "starts_with",
            BinOp::EndsWith => "ends_with",
            BinOp::In => "in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
        }
    }
}

/// Built-in functions of the condition language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `lower(s)`
    Lower,
    /// `upper(s)`
    Upper,
    /// `trim(s)`
    Trim,
    /// `len(s)` or `len(list)`
    Len,
}

impl Builtin {
    /// The builtin's name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Builtin::Lower => "lower",
            Builtin::Upper => "upper",
            Builtin::Trim => "trim",
            Builtin::Len => "len",
        }
    }
}
