nanovm::nano_program! {
    program choice_typo {
        input { q: string }
        llm ask { prompt: "{q}" choose decision from [yes, no] } -> g
        guard g { when decision == "yse" -> a otherwise -> b }
        end a: success
        end b: success
    }
}

fn main() {}
