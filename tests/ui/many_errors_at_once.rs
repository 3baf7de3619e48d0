// Every error of the program is reported in one compilation, each at its own tokens.
nanovm::nano_program! {
    program p {
        input { q: string  n: int }
        llm ask { prompt: "{q}" choose d from [yes, no] } -> g
        guard g { when d == "yse" -> nowhere when n == "3" -> done otherwise -> done }
        end done: success
    }
}

fn main() {}
