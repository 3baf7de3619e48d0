nanovm::nano_program! {
    program typo {
        input { text: string }
        llm classify { prompt: "{text}" choose label from [spam, ham] } -> reviw
        guard review { when label == "spam" -> drop otherwise -> keep }
        end drop: success
        end keep: success
    }
}

fn main() {}
