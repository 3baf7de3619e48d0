// Errors in an external .nvm file are reported at the path literal, with the file's own line,
// column and snippet.
nanovm::include_program!("../../examples/workflows/broken/unguarded_effect.nvm");

fn main() {}
