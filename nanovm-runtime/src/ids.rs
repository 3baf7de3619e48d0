//! How run ids and effect ids are derived. These formulas are part of the trace format: a tool
//! that deduplicates by idempotency key relies on them staying put.

use crate::canonical::Encoder;
use crate::program::Name;
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
    let mut hex = Digest::of(e.bytes()).to_hex();
    hex.truncate(32);
    hex
}

/// The idempotency key of a tool call:
/// `blake3(run_id, step, branch or "", visit, canonical(args))`, each string length-prefixed.
///
/// `visit` is 1 the first time the step runs in this run, 2 when a cycle brings the run back,
/// and so on. The attempt number is deliberately not part of it: every retry of the same
/// logical call carries the same key, so a tool that honours the key performs the effect at
/// most once. For `effect` tools it is the effect id of the `tool_intent` event.
pub fn effect_id(
    run_id: &str,
    step: &str,
    branch: Option<&str>,
    visit: u32,
    args: &[(Name, Datum)],
) -> Digest {
    effect_id_with(&mut Encoder::new(), run_id, step, branch, visit, args)
}

/// [`effect_id`] with a reusable scratch buffer.
pub(crate) fn effect_id_with(
    e: &mut Encoder,
    run_id: &str,
    step: &str,
    branch: Option<&str>,
    visit: u32,
    args: &[(Name, Datum)],
) -> Digest {
    e.clear();
    e.str(run_id)
        .str(step)
        .str(branch.unwrap_or(""))
        .u32(visit)
        .fields(args);
    Digest::of(e.bytes())
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
        assert_eq!(run_id(&Digest::ZERO, &args).len(), 32);
    }
}
