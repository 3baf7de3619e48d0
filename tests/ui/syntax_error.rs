nanovm::nano_program! {
    program p {
        input { q: string }
        llm ask { prompt: "{q}" choose ok from [yes, no] } policy
        end policy: success
    }
}

fn main() {}
