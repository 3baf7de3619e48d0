nanovm::nano_program! {
    program p {
        input { amount: int  currency: string }
        guard g { when amount > currency -> done otherwise -> done }
        end done: success
    }
}

fn main() {}
