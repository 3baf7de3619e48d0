//! Reading `.nvm` files and compiling them.
//!
//! A file is read up to one byte past the compiler's size limit, never more: `nanovm check
//! /dev/zero` or a stray multi-gigabyte file gets the compiler's own `E0002` at once instead of
//! filling memory. Bytes go to [`nanovm_dsl::compile_bytes`] as they are, so invalid UTF-8 is an
//! `E0003` diagnostic like any other.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use nanovm_dsl::Compilation;
use nanovm_dsl::syntax::limits::MAX_SOURCE_BYTES;

use crate::error::Error;

/// Reads and compiles one file. Only opening or reading it can fail; everything about its
/// contents is a diagnostic in the returned [`Compilation`].
pub fn compile_file(path: &Path) -> Result<Compilation, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let mut compilation = nanovm_dsl::compile_bytes(&path.display().to_string(), &bytes);
    if bytes.len() > MAX_SOURCE_BYTES {
        // The compiler saw only the bytes read, so its E0002 states that count as the size.
        // Say the real size where the file system knows it.
        let actual = std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file() && m.len() > MAX_SOURCE_BYTES as u64)
            .map_or_else(
                || format!("more than {MAX_SOURCE_BYTES}"),
                |m| m.len().to_string(),
            );
        let read = format!("is {} bytes", bytes.len());
        for d in &mut compilation.diagnostics {
            if d.code == "E0002" {
                d.message = d.message.replacen(&read, &format!("is {actual} bytes"), 1);
            }
        }
    }
    Ok(compilation)
}
