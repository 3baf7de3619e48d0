nanovm::nano_program! {
    program leak {
        input { card_number: secret string }
        llm ask { prompt: "Is {card_number} valid?" choose ok from [yes, no] } -> done
        end done: success
    }
}

fn main() {}
