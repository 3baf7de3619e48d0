// Checker warnings are real rustc warnings at the tokens at fault, with their code and message:
// W0401 (an effect inside a cycle) inline, W0403/W0404 from an included file at its path literal.
// rustc only prints warnings of a crate that otherwise compiles this far, so `main` holds one
// deliberate type error to make this a compile-fail test whose .stderr shows them.
nanovm::nano_program! {
    program retry_charge {
        input { id: string }
        budget { max_steps: 30 }
        effect tool charge(id: string) -> json
        guard g { when id != "" -> pay otherwise -> done }
        call pay = charge(id: id) into r -> again
        branch again { when r.retry == true -> g otherwise -> done }
        end done: success
    }
}

nanovm::include_program!("warnings.nvm");

fn main() {
    let _: u8 = "the warnings above are what this test is about";
}
