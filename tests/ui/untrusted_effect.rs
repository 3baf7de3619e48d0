// Issue 10 hole 4: the model's free text reaches an effect argument with no guard reading it
// and no `trusted(...)`: E0309 at the argument, inside the macro as a compile error.
nanovm::nano_program! {
    program untrusted {
        input { request: string  amount: int }
        effect tool wire(to_account: string, amount: int) -> json
        llm ask { prompt: "Which account gets {amount} cents? {request}" into account } -> policy
        guard policy { when amount <= 5000 -> pay otherwise -> done }
        call pay = wire(to_account: account, amount: amount) -> done
        end done: success
    }
}

fn main() {}
