//! The catalogue of diagnostic codes: every code the compiler can emit, with its severity and
//! the one-line summary `docs/diagnostics.md` gives for it.
//!
//! A [`Code`] can only be made here, so an emission site names a constant of this module
//! (`codes::E0102`) and cannot invent a code. The test `catalogue_matches_the_docs` in
//! `nanovm-dsl/tests/check.rs` keeps this list and the tables of `docs/diagnostics.md` in step:
//! every code documented with the same summary and severity, and no documented code missing here.

use std::fmt;

/// How bad it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; the program still compiles.
    Warning,
    /// The program is rejected.
    Error,
}

impl Severity {
    /// `"error"` or `"warning"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// A stable diagnostic code (`E0102`), its severity and its summary.
///
/// Two codes are equal when their ids are; codes order by id. `Display` and `Debug` print the id.
#[derive(Clone, Copy)]
pub struct Code {
    id: &'static str,
    severity: Severity,
    summary: &'static str,
}

impl Code {
    const fn error(id: &'static str, summary: &'static str) -> Self {
        Code {
            id,
            severity: Severity::Error,
            summary,
        }
    }

    const fn warning(id: &'static str, summary: &'static str) -> Self {
        Code {
            id,
            severity: Severity::Warning,
            summary,
        }
    }

    /// The code as users see it, e.g. `"E0102"`.
    pub fn id(self) -> &'static str {
        self.id
    }

    /// Whether a diagnostic with this code rejects the program.
    pub fn severity(self) -> Severity {
        self.severity
    }

    /// What the rule is about, as in the tables of `docs/diagnostics.md` (Markdown).
    pub fn summary(self) -> &'static str {
        self.summary
    }

    /// The code with this id, if the catalogue has one.
    pub fn lookup(id: &str) -> Option<Code> {
        ALL.iter().copied().find(|c| c.id == id)
    }
}

impl PartialEq for Code {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Code {}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.id == *other
    }
}

impl PartialEq<Code> for &str {
    fn eq(&self, other: &Code) -> bool {
        *self == other.id
    }
}

impl PartialOrd for Code {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Code {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(other.id)
    }
}

impl std::hash::Hash for Code {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id)
    }
}

/// syntax error; the message lists the expected tokens in the language's words and the caret sits where the problem is (at the end of the previous token when something is missing)
pub const E0001: Code = Code::error(
    "E0001",
    "syntax error; the message lists the expected tokens in the language's words and the caret sits where the problem is (at the end of the previous token when something is missing)",
);

/// an input limit was exceeded: file over 1 MiB, nesting deeper than 64, an expression deeper than 256, a name longer than 256 bytes, more than 10,000 steps in a program
pub const E0002: Code = Code::error(
    "E0002",
    "an input limit was exceeded: file over 1 MiB, nesting deeper than 64, an expression deeper than 256, a name longer than 256 bytes, more than 10,000 steps in a program",
);

/// the file is not valid UTF-8 (points at the first bad byte)
pub const E0003: Code = Code::error(
    "E0003",
    "the file is not valid UTF-8 (points at the first bad byte)",
);

/// the file holds no program (empty, or only comments)
pub const E0004: Code = Code::error(
    "E0004",
    "the file holds no program (empty, or only comments)",
);

/// a clause given twice in one step (`prompt:` twice, two `retry`, `choose` and `into` together)
pub const E0005: Code = Code::error(
    "E0005",
    "a clause given twice in one step (`prompt:` twice, two `retry`, `choose` and `into` together)",
);

/// an invalid literal: integer out of range, unknown duration unit, bad escape, bad template hole (`{ }`, unclosed `{`)
pub const E0006: Code = Code::error(
    "E0006",
    "an invalid literal: integer out of range, unknown duration unit, bad escape, bad template hole (`{ }`, unclosed `{`)",
);

/// a reserved keyword used as a name
pub const E0007: Code = Code::error("E0007", "a reserved keyword used as a name");

/// duplicate names: steps and parallel branches share one namespace; tools, inputs, parameters, arguments, choices and budget keys must be unique; one `start`, one `budget`; names that would collide in generated Rust (`step_1`/`step1`)
pub const E0101: Code = Code::error(
    "E0101",
    "duplicate names: steps and parallel branches share one namespace; tools, inputs, parameters, arguments, choices and budget keys must be unique; one `start`, one `budget`; names that would collide in generated Rust (`step_1`/`step1`)",
);

/// a target (`-> x`, `start x`, `after x`) names no step; `did you mean`; a note when it names a parallel branch
pub const E0102: Code = Code::error(
    "E0102",
    "a target (`-> x`, `start x`, `after x`) names no step; `did you mean`; a note when it names a parallel branch",
);

/// a step no path from `start` reaches (reported once per dead region, with the steps behind it in a note)
pub const E0103: Code = Code::error(
    "E0103",
    "a step no path from `start` reaches (reported once per dead region, with the steps behind it in a note)",
);

/// a cycle no `end` can be reached from (a trap), reported at the cycle; an `end` nothing reaches is named as the likely missing exit
pub const E0104: Code = Code::error(
    "E0104",
    "a cycle no `end` can be reached from (a trap), reported at the cycle; an `end` nothing reaches is named as the likely missing exit",
);

/// a cycle in a program without `max_steps`
pub const E0105: Code = Code::error("E0105", "a cycle in a program without `max_steps`");

/// an `effect` call reachable from `start` along a path with no `guard`; the note shows one such path; the help suggests turning a `branch` on the path into a `guard`
pub const E0106: Code = Code::error(
    "E0106",
    "an `effect` call reachable from `start` along a path with no `guard`; the note shows one such path; the help suggests turning a `branch` on the path into a `guard`",
);

/// a `guard`/`branch` without `otherwise`, with two, or with a `when` after it
pub const E0107: Code = Code::error(
    "E0107",
    "a `guard`/`branch` without `otherwise`, with two, or with a `when` after it",
);

/// a name that is not snake_case, or is `self`/`super`/`crate`
pub const E0108: Code = Code::error(
    "E0108",
    "a name that is not snake_case, or is `self`/`super`/`crate`",
);

/// an unknown budget key (`did you mean`), a count where a duration belongs or vice versa, a zero limit
pub const E0109: Code = Code::error(
    "E0109",
    "an unknown budget key (`did you mean`), a count where a duration belongs or vice versa, a zero limit",
);

/// a program without steps
pub const E0110: Code = Code::error("E0110", "a program without steps");

/// parallel branches with their own `on error`/`on invalid`, `after` naming no sibling, a branch after itself, `after` cycles, an empty parallel block
pub const E0111: Code = Code::error(
    "E0111",
    "parallel branches with their own `on error`/`on invalid`, `after` naming no sibling, a branch after itself, `after` cycles, an empty parallel block",
);

/// an `llm` step without `prompt`, `on invalid` without `choose` or `answer`, a count out of range (`retry` 0..=100, `max_concurrency` 1..=1024, `max_tokens` ≥ 1, timeouts > 0)
pub const E0112: Code = Code::error(
    "E0112",
    "an `llm` step without `prompt`, `on invalid` without `choose` or `answer`, a count out of range (`retry` 0..=100, `max_concurrency` 1..=1024, `max_tokens` ≥ 1, timeouts > 0)",
);

/// two branches of one parallel step assign the same variable
pub const E0113: Code = Code::error(
    "E0113",
    "two branches of one parallel step assign the same variable",
);

/// `min_confidence` outside (0, 1], without `choose`, without `on invalid`, or on a parallel branch
pub const E0114: Code = Code::error(
    "E0114",
    "`min_confidence` outside (0, 1], without `choose`, without `on invalid`, or on a parallel branch",
);

/// a replanning edge that is malformed: two for one interruption, `replans` outside 1..=100, a target that is an `end`, a slice that leaves out a budget the program declares
pub const E0115: Code = Code::error(
    "E0115",
    "a replanning edge that is malformed: two for one interruption, `replans` outside 1..=100, a target that is an `end`, a slice that leaves out a budget the program declares",
);

/// a replanning edge whose target reaches an `effect` call along a path with no `guard`
pub const E0116: Code = Code::error(
    "E0116",
    "a replanning edge whose target reaches an `effect` call along a path with no `guard`",
);

/// a call of an undeclared tool (`did you mean`)
pub const E0201: Code = Code::error("E0201", "a call of an undeclared tool (`did you mean`)");

/// a call missing arguments (lists them with their types)
pub const E0202: Code = Code::error(
    "E0202",
    "a call missing arguments (lists them with their types)",
);

/// an argument the tool has no parameter for (`did you mean`)
pub const E0203: Code = Code::error(
    "E0203",
    "an argument the tool has no parameter for (`did you mean`)",
);

/// an argument of the wrong type (`int` widens to `float`; anything non-secret fits `json`; a choice fits `string`)
pub const E0204: Code = Code::error(
    "E0204",
    "an argument of the wrong type (`int` widens to `float`; anything non-secret fits `json`; a choice fits `string`)",
);

/// `idempotent` on a read-only tool; a tool declared to return a `secret`
pub const E0206: Code = Code::error(
    "E0206",
    "`idempotent` on a read-only tool; a tool declared to return a `secret`",
);

/// an unknown variable (`did you mean`)
pub const E0301: Code = Code::error("E0301", "an unknown variable (`did you mean`)");

/// a variable read where it is not assigned on every path from `start` (must-assigned data flow over edges: `into` is not assigned along `on error`, `choose` not along `on invalid`; inside a parallel block a branch sees its `after` predecessors' variables); the note shows a path where it is unassigned
pub const E0302: Code = Code::error(
    "E0302",
    "a variable read where it is not assigned on every path from `start` (must-assigned data flow over edges: `into` is not assigned along `on error`, `choose` not along `on invalid`; inside a parallel block a branch sees its `after` predecessors' variables); the note shows a path where it is unassigned",
);

/// type errors in conditions: incomparable operands, fields of non-`json` values, a condition that is not a `bool`, ordering of non-numbers, arithmetic on `json`
pub const E0303: Code = Code::error(
    "E0303",
    "type errors in conditions: incomparable operands, fields of non-`json` values, a condition that is not a `bool`, ordering of non-numbers, arithmetic on `json`",
);

/// a choice variable compared with a literal outside its set (`decision == "yse"`), with `did you mean`
pub const E0304: Code = Code::error(
    "E0304",
    "a choice variable compared with a literal outside its set (`decision == \"yse\"`), with `did you mean`",
);

/// a `secret` interpolated into a `prompt` or `system` template
pub const E0305: Code = Code::error(
    "E0305",
    "a `secret` interpolated into a `prompt` or `system` template",
);

/// one variable assigned values of different types
pub const E0306: Code = Code::error("E0306", "one variable assigned values of different types");

/// an input assigned by a step
pub const E0307: Code = Code::error("E0307", "an input assigned by a step");

/// a `secret` read by a condition, used inside an expression, or passed to a parameter not declared `secret`
pub const E0308: Code = Code::error(
    "E0308",
    "a `secret` read by a condition, used inside an expression, or passed to a parameter not declared `secret`",
);

/// a model's free text (`llm ... into x`) or a tool's result (`call ... into x`, and its fields) passed to an argument of an `effect` tool without a `guard` that reads it on every path from where it was assigned, and without `trusted(x, "reason")`; a `trusted` without a reason
pub const E0309: Code = Code::error(
    "E0309",
    "a model's free text (`llm ... into x`) or a tool's result (`call ... into x`, and its fields) passed to an argument of an `effect` tool without a `guard` that reads it on every path from where it was assigned, and without `trusted(x, \"reason\")`; a `trusted` without a reason",
);

/// an unknown type name in a declaration (`did you mean`)
pub const E0310: Code = Code::error(
    "E0310",
    "an unknown type name in a declaration (`did you mean`)",
);

/// a field read through a record that its type does not declare (`refund.amout`), with `did you mean`
pub const E0311: Code = Code::error(
    "E0311",
    "a field read through a record that its type does not declare (`refund.amout`), with `did you mean`",
);

/// a record type declared twice or named like a generated Rust type, a record with two fields of one name, or a record type that contains itself
pub const E0312: Code = Code::error(
    "E0312",
    "a record type declared twice or named like a generated Rust type, a record with two fields of one name, or a record type that contains itself",
);

/// `secret` around a record, list or optional type
pub const E0313: Code = Code::error("E0313", "`secret` around a record, list or optional type");

/// an `effect` call inside a cycle (it may fire more than once; each trip is a new effect id)
pub const W0401: Code = Code::warning(
    "W0401",
    "an `effect` call inside a cycle (it may fire more than once; each trip is a new effect id)",
);

/// an `llm` step's free-text output (`into`) decides a `guard` (use `choose`)
pub const W0402: Code = Code::warning(
    "W0402",
    "an `llm` step's free-text output (`into`) decides a `guard` (use `choose`)",
);

/// an input no step reads
pub const W0403: Code = Code::warning("W0403", "an input no step reads");

/// a tool no step calls
pub const W0404: Code = Code::warning("W0404", "a tool no step calls");

/// a `guard` that decides nothing: no `when` arm, no `when` condition that reads a variable, or every arm to the same step before an effect; names the effects it stands before
pub const W0405: Code = Code::warning(
    "W0405",
    "a `guard` that decides nothing: no `when` arm, no `when` condition that reads a variable, or every arm to the same step before an effect; names the effects it stands before",
);

/// a `trusted(...)` that vouches for nothing: an argument of a read-only tool, or no untrusted value reaches it unchecked
pub const W0406: Code = Code::warning(
    "W0406",
    "a `trusted(...)` that vouches for nothing: an argument of a read-only tool, or no untrusted value reaches it unchecked",
);

/// Every code, in order.
pub const ALL: &[Code] = &[
    E0001, E0002, E0003, E0004, E0005, E0006, E0007, E0101, E0102, E0103, E0104, E0105, E0106,
    E0107, E0108, E0109, E0110, E0111, E0112, E0113, E0114, E0115, E0116, E0201, E0202, E0203,
    E0204, E0206, E0301, E0302, E0303, E0304, E0305, E0306, E0307, E0308, E0309, E0310, E0311,
    E0312, E0313, W0401, W0402, W0403, W0404, W0405, W0406,
];
