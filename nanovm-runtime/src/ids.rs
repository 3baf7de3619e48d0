//! How run ids and effect ids are derived. These formulas are part of the trace format: a tool
//! that deduplicates by idempotency key relies on them staying put.

use std::sync::LazyLock;

use crate::canonical::Encoder;
use crate::program::{InputInfo, Name};
use crate::value::{Datum, Digest};

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
    let mut e = Encoder::with_capacity(256);
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
        }];
        assert_eq!(
            run_id_of(&Digest::ZERO, &names, &[Datum::Plain(json!(1))]),
            run_id(&Digest::ZERO, &args)
        );
    }
}
