//! Feeds arbitrary bytes through the whole compiler (parse -> check -> lower -> codegen): it
//! must never panic, overflow the stack or hang; whatever it accepts must become Rust that
//! parses, and every diagnostic must point inside the source.
//!
//! Run with `cargo fuzz run compile -s none` from `nanovm-dsl/` (stable works without
//! sanitizers; nightly adds AddressSanitizer).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = nanovm_dsl::compile_bytes("fuzz.nvm", data);
    match std::str::from_utf8(data) {
        Ok(src) => {
            for d in &c.diagnostics {
                for l in std::iter::once(&d.primary).chain(&d.secondary) {
                    assert!(l.span.start <= l.span.end && l.span.end <= src.len(), "{d:?}");
                    assert!(src.is_char_boundary(l.span.start) && src.is_char_boundary(l.span.end));
                }
            }
        }
        Err(_) => {
            assert_eq!(c.diagnostics.len(), 1);
            assert_eq!(c.diagnostics[0].code, "E0003");
        }
    }
    let _ = c.render();
    if let Some(code) = c.to_rust(&nanovm_dsl::codegen::Options::default()) {
        syn::parse_file(&code).expect("generated code parses");
    }
});
