//! The program every compiler benchmark compiles, shared by the criterion and instruction-count
//! benchmarks so both measure the same text.

/// A program of `n` steps mixing every step kind that runs in sequence: llm (choose), guard,
/// call with retry and on error, branch on a json field, ending in `end`.
pub fn program(n: usize) -> String {
    let mut s = String::from(
        "program bench {\n    input { text: string  limit: int }\n    budget { max_steps: 100000 }\n    tool lookup(q: string) -> json\n    effect tool act(q: string, n: int) -> json idempotent\n",
    );
    for i in 0..n {
        let next = format!("s{}", i + 1);
        let step = match i % 4 {
            0 => format!(
                "    llm s{i} {{ prompt: \"Classify {{text}} ({i})\" choose c{i} from [yes, no] on invalid -> failed }} -> {next}\n"
            ),
            1 => format!(
                "    guard s{i} {{ when c{} == \"yes\" and limit <= 5000 -> {next} otherwise -> failed }}\n",
                i - 1
            ),
            2 => format!(
                "    call s{i} = act(q: text, n: limit) into r{i} retry 2 on error -> failed -> {next}\n"
            ),
            _ => format!(
                "    branch s{i} {{ when r{}.ok == true -> {next} otherwise -> failed }}\n",
                i - 1
            ),
        };
        s.push_str(&step);
    }
    s.push_str(&format!(
        "    end s{n}: success\n    end failed: failure \"stopped\"\n}}\n"
    ));
    s
}
