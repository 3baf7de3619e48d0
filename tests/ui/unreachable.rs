nanovm::nano_program! {
    program p {
        input { q: string }
        llm ask { prompt: "{q}" into answer } -> done
        llm orphan { prompt: "{q}" into other } -> done
        end done: success
    }
}

fn main() {}
