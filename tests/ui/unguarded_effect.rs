nanovm::nano_program! {
    program unguarded {
        input { amount: int }
        effect tool charge_card(amount: int) -> json
        llm ask { prompt: "Charge {amount}?" choose ok from [yes, no] } -> route
        branch route { when ok == "yes" -> charge otherwise -> stop }
        call charge = charge_card(amount: amount) -> stop
        end stop: success
    }
}

fn main() {}
