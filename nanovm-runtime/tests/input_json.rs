//! Issue 13, item 1: typed JSON at the boundary.
//!
//! A run's inputs arrive as one JSON object of plaintext values (from HTTP, from an MCP agent).
//! Attacks: an unknown field (a typo, or an attempt to set something the program does not
//! declare), a missing field, a wrong type (a string where an integer is declared, a float for
//! an integer, an integer out of range), not an object at all: each is refused with the field
//! named, and nothing is stored (no secret reaches the vault). A valid object's `secret` field
//! goes to the vault and only there: the run's trace holds the commitment, never the plaintext.
//! The JSON Schema describes exactly what the check accepts.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nanovm_runtime::vault::{MemoryVault, Reveal, RevealRecord, SecretSource, Vault, VaultError};
use nanovm_runtime::{
    BoxFuture, Digest, FieldError, InputError, Json, RunOptions, RunStatus, ToolError, VaultId,
    input_from_json, input_schema,
};
use serde_json::json;

use support::customer_refund as cr;
use support::{Host, block_on, setup_with};

/// A vault that counts what is put into it.
#[derive(Default)]
struct Counting {
    inner: MemoryVault,
    puts: AtomicUsize,
}

impl SecretSource for Counting {
    fn reveal(&self, reveal: Reveal) -> BoxFuture<'_, Result<Json, ToolError>> {
        self.inner.reveal(reveal)
    }
}

impl Vault for Counting {
    fn put(&self, value: Json) -> BoxFuture<'_, Result<(VaultId, Digest), VaultError>> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        Vault::put(&self.inner, value)
    }
    fn erase(&self, id: VaultId) -> BoxFuture<'_, Result<(), VaultError>> {
        Vault::erase(&self.inner, id)
    }
    fn value(&self, id: VaultId, commitment: Digest) -> BoxFuture<'_, Result<Json, VaultError>> {
        Vault::value(&self.inner, id, commitment)
    }
    fn reveals(&self, id: VaultId) -> BoxFuture<'_, Result<Vec<RevealRecord>, VaultError>> {
        Vault::reveals(&self.inner, id)
    }
}

fn good() -> Json {
    json!({
        "request": "It arrived broken.",
        "order_id": "o-1",
        "amount_cents": 1200,
        "email": "cy@example.com",
    })
}

/// Decodes `json`; on refusal, asserts that nothing reached the vault.
fn refused(json: Json) -> InputError {
    let vault = Counting::default();
    let err = block_on(input_from_json::<cr::Program>(&vault, &json))
        .expect_err("the input must be refused");
    assert_eq!(
        vault.puts.load(Ordering::SeqCst),
        0,
        "a refused input stored a secret"
    );
    err
}

fn with(field: &str, value: Json) -> Json {
    let mut j = good();
    j[field] = value;
    j
}

#[test]
fn an_unknown_field_is_refused_by_name() {
    let mut j = good();
    j["amount"] = json!(5);
    let err = refused(j);
    assert_eq!(
        err.fields(),
        [FieldError::Unknown {
            field: "amount".into()
        }]
    );
    assert!(err.to_string().contains("unknown field `amount`"), "{err}");
}

#[test]
fn a_missing_field_is_refused_by_name() {
    let mut j = good();
    j.as_object_mut().unwrap().remove("email");
    let err = refused(j);
    assert_eq!(err.fields().len(), 1);
    assert_eq!(err.fields()[0].field(), "email");
    assert!(
        err.to_string()
            .contains("missing field `email` (declared `secret string`)"),
        "{err}"
    );
}

#[test]
fn wrong_types_are_refused_by_name() {
    for (value, found) in [
        (json!("1200"), "a string"),
        (json!(12.5), "a number with a fraction or exponent"),
        (json!(1e3), "a number with a fraction or exponent"),
        (json!(u64::MAX), "an integer out of range"),
        (json!(null), "null"),
    ] {
        let err = refused(with("amount_cents", value.clone()));
        assert_eq!(err.fields().len(), 1, "{value}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("field `amount_cents`: expected an integer (i64)") && msg.contains(found),
            "{value}: {msg}"
        );
    }
    // A secret is type-checked like any field, before it goes anywhere.
    let err = refused(with("email", json!({"address": "x"})));
    assert_eq!(err.fields()[0].field(), "email");
    let err = refused(with("email", json!(7)));
    assert!(
        err.to_string().ends_with(
            "field `email`: expected a string (declared `secret string`), found an integer"
        ),
        "{err}"
    );
}

#[test]
fn every_wrong_field_is_listed_at_once() {
    let mut j = with("amount_cents", json!("ten"));
    j.as_object_mut().unwrap().remove("order_id");
    j["extra"] = json!(true);
    let err = refused(j);
    let fields: Vec<&str> = err.fields().iter().map(FieldError::field).collect();
    assert_eq!(fields, ["order_id", "amount_cents", "extra"]);
}

#[test]
fn not_an_object_is_refused() {
    for j in [json!([1, 2]), json!("x"), json!(null)] {
        let err = refused(j);
        assert!(matches!(err, InputError::NotAnObject { .. }), "{err:?}");
    }
}

#[test]
fn a_secret_goes_to_the_vault_and_never_into_the_trace() {
    let (rt, vault, _clock) = setup_with("no", nanovm_runtime::store::MemoryStore::new());
    let input =
        block_on(input_from_json::<cr::Program>(rt.vault().as_ref(), &good())).expect("valid");
    // The Input holds a handle whose plaintext is in the vault.
    let stored = MemoryVault::value(&vault, input.email.id(), input.email.commitment())
        .expect("the secret is in the vault");
    assert_eq!(stored, json!("cy@example.com"));
    // Serialized, the Input shows the handle, not the plaintext, and reads back.
    let ser = serde_json::to_value(&input).unwrap();
    assert!(!ser.to_string().contains("cy@example.com"), "{ser}");
    let back: cr::Input = serde_json::from_value(ser.clone()).unwrap();
    assert_eq!(back.email, input.email);
    // The derived Deserialize refuses unknown fields too.
    let mut extra = ser;
    extra["surprise"] = json!(1);
    let e = serde_json::from_value::<cr::Input>(extra).unwrap_err();
    assert!(e.to_string().contains("unknown field `surprise`"), "{e}");
    // A rejection run reveals the email to the mailer; its trace never holds the plaintext.
    let host = Host::new();
    let exec = block_on(rt.run::<cr::Program>(
        input,
        Arc::new(host.clone()),
        RunOptions::new().run_id("json-1"),
    ))
    .expect("runs");
    assert_eq!(exec.status, RunStatus::Success);
    let jsonl = exec.trace.to_jsonl();
    assert!(!jsonl.contains("cy@example.com"), "plaintext in the trace");
}

#[test]
fn the_schema_describes_what_the_check_accepts() {
    let schema = input_schema(<cr::Program as nanovm_runtime::__private_v0_1::Program>::info());
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(
        schema["required"],
        json!(["request", "order_id", "amount_cents", "email"])
    );
    assert_eq!(schema["properties"]["amount_cents"]["type"], "integer");
    assert_eq!(schema["properties"]["request"]["type"], "string");
    assert_eq!(schema["properties"]["email"]["type"], "string");
    assert_eq!(schema["properties"]["email"]["writeOnly"], true);
    // Event payloads: the await's declared type.
    let events = <cr::Program as nanovm_runtime::__private_v0_1::Program>::events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].step, events[0].event, events[0].ty),
        ("manual_review", "approval", "json")
    );
    assert_eq!(nanovm_runtime::value_schema("int")["type"], "integer");
    assert_eq!(nanovm_runtime::value_schema("json"), json!({}));
}
