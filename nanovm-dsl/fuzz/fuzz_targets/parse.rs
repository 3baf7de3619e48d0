//! Feeds arbitrary bytes to the parser: it must never panic, overflow the stack or hang, and
//! its result must be consistent (a tree exactly when there is no error; every span inside the
//! source on character boundaries).
//!
//! Run with `cargo fuzz run parse -s none` from `nanovm-dsl/` (stable works without
//! sanitizers; nightly adds AddressSanitizer).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = match nanovm_dsl::parse_bytes(data) {
        Ok(parsed) => parsed,
        Err(d) => {
            assert_eq!(d.code, "E0003");
            assert!(std::str::from_utf8(data).is_err());
            return;
        }
    };
    let has_error = parsed.diagnostics.iter().any(|d| d.is_error());
    assert_eq!(parsed.file.is_some(), !has_error);
    if let Ok(src) = std::str::from_utf8(data) {
        for d in &parsed.diagnostics {
            for l in std::iter::once(&d.primary).chain(&d.secondary) {
                assert!(l.span.start <= l.span.end && l.span.end <= src.len());
                assert!(src.is_char_boundary(l.span.start) && src.is_char_boundary(l.span.end));
            }
        }
    }
});
