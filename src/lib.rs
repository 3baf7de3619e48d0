pub use nanovm_runtime::*;
