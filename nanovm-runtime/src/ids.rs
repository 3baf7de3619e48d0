//! How run ids and effect ids are derived. These formulas are part of the trace format: a tool
//! that deduplicates by idempotency key relies on them staying put.

use std::sync::LazyLock;

use crate::canonical::Encoder;
use crate::program::{InputInfo, Name};
use crate::value::{Datum, Digest};

/// The longest run id accepted, in bytes.
pub const MAX_RUN_ID_BYTES: usize = 256;

/// Why a caller-chosen run id is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunIdError {
    /// The id is empty.
    #[error("a run id cannot be empty")]
    Empty,
    /// The id is longer than [`MAX_RUN_ID_BYTES`].
    #[error("a run id is at most {MAX_RUN_ID_BYTES} bytes; this one is {len}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id holds a character that is not printable: a control character (terminal escape
    /// sequences start with one), whitespace, or an invisible formatting character (bidi
    /// overrides, zero-width characters).
    #[error("a run id holds only printable characters without spaces; {found} at byte {at} is not")]
    NotPrintable {
        /// The character, escaped (`\u{1b}`).
        found: String,
        /// Its byte offset.
        at: usize,
    },
}

/// Checks a caller-chosen run id: 1 to [`MAX_RUN_ID_BYTES`] bytes of printable characters, no
/// whitespace, no control or invisible formatting characters. Run ids end up in stores, traces,
/// logs and terminals; the derived ids of [`run_id`] always pass.
pub fn validate_run_id(id: &str) -> Result<(), RunIdError> {
    if id.is_empty() {
        return Err(RunIdError::Empty);
    }
    if id.len() > MAX_RUN_ID_BYTES {
        return Err(RunIdError::TooLong { len: id.len() });
    }
    match id.char_indices().find(|(_, c)| !printable(*c)) {
        None => Ok(()),
        Some((at, c)) => Err(RunIdError::NotPrintable {
            found: c.escape_unicode().to_string(),
            at,
        }),
    }
}

/// Not control, not whitespace, not an invisible format character (Unicode `Cf` in the ranges
/// that matter for display: soft hyphen, zero-width and joiner characters, bidi marks,
/// embeddings, overrides and isolates, word joiner and invisible operators, BOM).
fn printable(c: char) -> bool {
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c,
            '\u{ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'))
}

/// The default run id: the first 32 hex digits of
/// `blake3(program_hash || canonical(inputs))`, where `inputs` are the recorded inputs as
/// `RunStarted` lists them (`Encoder::fields`).
///
/// The same program started twice with the same recorded inputs gets the same id, so a
/// duplicated request is recognisable. Secret inputs are recorded as their vault id and salted
/// commitment, which are fresh for every `put`.
pub fn run_id(program_hash: &Digest, inputs: &[(Name, Datum)]) -> String {
    let mut e = Encoder::new();
    e.digest(program_hash).fields(inputs);
    hex16(&Digest::of(e.bytes()))
}

/// The first 16 bytes of `d` as 32 lowercase hex digits.
fn hex16(d: &Digest) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(&d.0) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// [`run_id`] from the program's input declarations and the recorded values, without
/// building the named list first (the same bytes as `Encoder::fields` over their zip).
pub(crate) fn run_id_of(program_hash: &Digest, names: &[InputInfo], inputs: &[Datum]) -> String {
    run_id_with(
        &mut Encoder::with_capacity(256),
        program_hash,
        names,
        inputs,
    )
}

/// [`run_id_of`] encoding into `e` (cleared first), so a run being set up reuses its scratch
/// buffer instead of allocating one.
pub(crate) fn run_id_with(
    e: &mut Encoder,
    program_hash: &Digest,
    names: &[InputInfo],
    inputs: &[Datum],
) -> String {
    e.clear();
    e.digest(program_hash)
        .u64(names.len().min(inputs.len()) as u64);
    for (n, d) in names.iter().zip(inputs) {
        e.str(n.name).datum(d);
    }
    hex16(&Digest::of(e.bytes()))
}

/// Domain separation for effect ids.
static EFFECT_DOMAIN: LazyLock<[u8; 32]> =
    LazyLock::new(|| *blake3::hash(b"nanovm effect id v1").as_bytes());

/// The key every effect id of run `run_id` is hashed with:
/// `blake3::keyed_hash(blake3("nanovm effect id v1"), run_id)`.
pub(crate) fn effect_key(run_id: &str) -> [u8; 32] {
    *blake3::keyed_hash(&EFFECT_DOMAIN, run_id.as_bytes()).as_bytes()
}

/// The idempotency key of a tool call:
/// `blake3::keyed_hash(effect_key(run_id), canonical(step, branch or "", visit, args))`, where
/// the canonical encoding length-prefixes each string and writes `visit` as a `u64`.
///
/// That is a blake3 hash of the run id, the step, the branch, the visit and the arguments, in
/// keyed form so the run id is hashed once per run rather than once per call.
/// `visit` is 1 the first time the step runs in this run, 2 when a cycle brings the run back,
/// and so on. The attempt number is deliberately not part of it: every retry of the same
/// logical call carries the same key, so a tool that honours the key performs the effect at
/// most once. For `effect` tools it is the effect id of the `tool_intent` event; read-only
/// tools get the same formula as a call id.
pub fn effect_id(
    run_id: &str,
    step: &str,
    branch: Option<&str>,
    visit: u32,
    args: &[(Name, Datum)],
) -> Digest {
    effect_id_with(
        &mut Encoder::new(),
        &effect_key(run_id),
        step,
        branch,
        visit,
        args,
    )
}

/// [`effect_id`] with the run's key computed once and a reusable scratch buffer.
pub(crate) fn effect_id_with(
    e: &mut Encoder,
    key: &[u8; 32],
    step: &str,
    branch: Option<&str>,
    visit: u32,
    args: &[(Name, Datum)],
) -> Digest {
    e.clear();
    e.str(step)
        .str(branch.unwrap_or(""))
        .u32(visit)
        .fields(args);
    Digest(*blake3::keyed_hash(key, e.bytes()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_ids_are_bounded_and_printable() {
        for ok in [
            "r1",
            "order-17-refund",
            "a/b:c@d",
            "注文-17",
            &"x".repeat(256),
        ] {
            assert_eq!(validate_run_id(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_run_id(""), Err(RunIdError::Empty));
        assert_eq!(
            validate_run_id(&"x".repeat(65_536)),
            Err(RunIdError::TooLong { len: 65_536 })
        );
        assert_eq!(
            validate_run_id(&"é".repeat(129)),
            Err(RunIdError::TooLong { len: 258 })
        );
        for (bad, at) in [
            ("run\u{1b}[2J", 3),
            ("a b", 1),
            ("tab\t", 3),
            ("new\nline", 3),
            ("x\u{202e}gnp.exe", 1),
            ("zero\u{200b}width", 4),
            ("\u{7f}", 0),
        ] {
            match validate_run_id(bad) {
                Err(RunIdError::NotPrintable { at: got, found }) => {
                    assert_eq!(got, at, "{bad:?}");
                    assert!(found.starts_with("\\u{"), "{found}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let derived = run_id(&Digest::ZERO, &[]);
        assert_eq!(validate_run_id(&derived), Ok(()));
    }

    #[test]
    fn effect_id_depends_on_every_part() {
        let args = vec![(Name::Borrowed("a"), Datum::Plain(json!(1)))];
        let base = effect_id("r", "s", None, 1, &args);
        assert_eq!(base, effect_id("r", "s", Some(""), 1, &args));
        assert_ne!(base, effect_id("r2", "s", None, 1, &args));
        assert_ne!(base, effect_id("r", "t", None, 1, &args));
        assert_ne!(base, effect_id("r", "s", Some("b"), 1, &args));
        assert_ne!(base, effect_id("r", "s", None, 2, &args));
        assert_ne!(base, effect_id("r", "s", None, 1, &[]));
        let id = run_id(&Digest::ZERO, &args);
        assert_eq!(id.len(), 32);
        let mut e = Encoder::new();
        e.digest(&Digest::ZERO).fields(&args);
        assert_eq!(id, Digest::of(e.bytes()).to_hex()[..32]);
        let names = [InputInfo {
            name: "a",
            ty: "int",
            secret: false,
            shape: None,
        }];
        assert_eq!(
            run_id_of(&Digest::ZERO, &names, &[Datum::Plain(json!(1))]),
            run_id(&Digest::ZERO, &args)
        );
    }
}
