// A misspelled field of a record is a compile error on the field's exact tokens, with the
// did-you-mean of the checker (E0311), when the program is compiled by `nano_program!`.
nanovm::nano_program! {
    program p {
        type Refund { id: string, amount: int }
        input { refund: Refund }
        guard g { when refund.amout > 10 -> done otherwise -> done }
        end done: success
    }
}

fn main() {}
