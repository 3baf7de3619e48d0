// A guard that decides nothing (W0405) is a warning; a crate that wants warnings of its
// programs to fail the build denies the `deprecated` lint, which is how a macro can warn.
#![deny(deprecated)]

nanovm::nano_program! {
    program decides_nothing {
        input { account: string }
        effect tool wire(to_account: string) -> json
        start g
        guard g { otherwise -> pay }
        call pay = wire(to_account: account) -> done
        end done: success
    }
}

fn main() {}
