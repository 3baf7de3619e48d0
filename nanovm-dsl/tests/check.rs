//! Every rule of the checker: at least one failing program per rule, with its rendered
//! diagnostics snapshotted (code, message, the caret on the exact text, notes and help), and a
//! passing near-miss for each, so a rule that starts firing too eagerly is caught as surely as
//! one that stops firing.

use nanovm_dsl::compile;

/// Renders everything the compiler says about `src`.
fn report(name: &str, src: &str) -> String {
    compile(&format!("{name}.nvm"), src).render()
}

/// Asserts that `src` compiles without errors; returns the codes of any warnings.
fn clean(name: &str, src: &str) -> Vec<&'static str> {
    let c = compile(&format!("{name}.nvm"), src);
    assert!(!c.has_errors(), "{name} should compile:\n{}", c.render());
    c.diagnostics.iter().map(|d| d.code.id()).collect()
}

/// The codes of all errors.
fn codes(src: &str) -> Vec<&'static str> {
    compile("x.nvm", src)
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.code.id())
        .collect()
}

macro_rules! failing {
    ($name:ident, $codes:expr, $src:expr) => {
        #[test]
        fn $name() {
            let src = $src;
            assert_eq!(codes(src), $codes, "codes of {}", stringify!($name));
            insta::assert_snapshot!(stringify!($name), report(stringify!($name), src));
        }
    };
}

macro_rules! passing {
    ($name:ident, $warnings:expr, $src:expr) => {
        #[test]
        fn $name() {
            let expected: &[&str] = &$warnings;
            assert_eq!(clean(stringify!($name), $src), expected);
        }
    };
}

// ---- E0101 duplicate names -------------------------------------------------------------------

failing!(
    e0101_duplicate_step,
    ["E0101"],
    r#"
program p {
    input { q: string }
    llm ask { prompt: "{q}" into a } -> done
    llm ask { prompt: "{q} again" into a } -> done
    end done: success
}
"#
);

failing!(
    e0101_duplicate_tool_input_choice_arg,
    ["E0101", "E0101", "E0101", "E0101"],
    r#"
program p {
    input { q: string  q: int }
    tool t(x: int) -> json
    tool t(y: int) -> json
    llm ask { prompt: "{q}" choose c from [yes, no, yes] } -> g
    guard g { when c == "yes" -> call_t otherwise -> done }
    call call_t = t(x: 1, x: 2) -> done
    end done: success
}
"#
);

failing!(
    e0101_two_starts_and_budgets,
    ["E0101", "E0101"],
    r#"
program p {
    budget { max_steps: 5 }
    budget { max_tokens: 5 }
    start done
    start done
    end done: success
}
"#
);

failing!(
    e0101_names_that_collide_in_rust,
    ["E0101"],
    r#"
program p {
    start step_1
    branch step_1 { otherwise -> step1 }
    branch step1 { otherwise -> done }
    end done: success
}
"#
);

passing!(
    e0101_near_miss_same_name_in_other_namespaces,
    ["W0404"],
    r#"
program p {
    input { order: string }
    tool order(order: string) -> json
    llm order_step { prompt: "{order}" into order_text } -> done
    end done: success
}
"#
);

// ---- E0102 unknown targets --------------------------------------------------------------------

failing!(
    e0102_typo_target,
    ["E0102", "E0103"],
    r#"
program typo {
    input { text: string }
    llm classify { prompt: "{text}" choose label from [spam, ham] } -> reviw
    guard review { when label == "spam" -> drop otherwise -> keep }
    end drop: success
    end keep: success
}
"#
);

failing!(
    e0102_target_is_a_branch_and_start_unknown,
    ["E0102", "E0102"],
    r#"
program p {
    input { id: string }
    budget { max_steps: 10 }
    tool a(id: string) -> json
    start beginning
    parallel both { call x = a(id: id)  call y = a(id: id) } -> x
    end done: success
}
"#
);

passing!(
    e0102_near_miss_targets_resolve,
    [],
    r#"
program p {
    input { text: string }
    llm classify { prompt: "{text}" choose label from [spam, ham] } -> review
    guard review { when label == "spam" -> drop otherwise -> keep }
    end drop: success
    end keep: success
}
"#
);

// ---- E0103 unreachable ------------------------------------------------------------------------

failing!(
    e0103_unreachable_region,
    ["E0103"],
    r#"
program p {
    input { q: string }
    llm ask { prompt: "{q}" into a } -> done
    llm orphan { prompt: "{q}" into b } -> also_orphan
    end also_orphan: success
    end done: success
}
"#
);

passing!(
    e0103_near_miss_reachable_only_through_on_error,
    [],
    r#"
program p {
    input { q: string }
    llm ask { prompt: "{q}" into a on error -> failed } -> done
    end done: success
    end failed: failure "model unavailable"
}
"#
);

// ---- E0104 traps ------------------------------------------------------------------------------

failing!(
    e0104_trap_cycle,
    ["E0104"],
    r#"
program trap {
    input { id: string }
    budget { max_steps: 50 }
    tool status(id: string) -> json
    call poll = status(id: id) -> wait
    branch wait { otherwise -> poll }
    end done: success
}
"#
);

failing!(
    e0104_self_loop_behind_a_step,
    ["E0104"],
    r#"
program p {
    input { id: string }
    budget { max_steps: 50 }
    tool status(id: string) -> json
    call first = status(id: id) on error -> done -> spin
    call spin = status(id: id) -> spin
    end done: success
}
"#
);

passing!(
    e0104_near_miss_cycle_with_an_exit,
    [],
    r#"
program poll_until_ready {
    input { id: string }
    budget { max_steps: 50 }
    tool status(id: string) -> json
    call poll = status(id: id) into s -> check
    branch check { when s.ready == true -> done otherwise -> poll }
    end done: success
}
"#
);

// ---- E0105 cycles without max_steps -----------------------------------------------------------

failing!(
    e0105_cycle_without_max_steps,
    ["E0105"],
    r#"
program p {
    input { id: string }
    budget { max_tokens: 100 }
    tool status(id: string) -> json
    call poll = status(id: id) into s -> check
    branch check { when s.ready == true -> done otherwise -> poll }
    end done: success
}
"#
);

passing!(
    e0105_near_miss_cycle_with_max_steps,
    [],
    r#"
program p {
    input { id: string }
    budget { max_steps: 20 }
    tool status(id: string) -> json
    call poll = status(id: id) into s -> check
    branch check { when s.ready == true -> done otherwise -> poll }
    end done: success
}
"#
);

// ---- E0106 unguarded effects -----------------------------------------------------------------

failing!(
    e0106_unguarded_effect,
    ["E0106"],
    r#"
program unguarded {
    input { amount: int }
    effect tool charge_card(amount: int) -> json
    llm ask { prompt: "Charge {amount}?" choose ok from [yes, no] } -> route
    branch route { when ok == "yes" -> charge otherwise -> stop }
    call charge = charge_card(amount: amount) -> stop
    end stop: success
}
"#
);

failing!(
    e0106_one_unguarded_path_is_enough,
    ["E0106"],
    r#"
program p {
    input { amount: int }
    effect tool charge_card(amount: int) -> json
    llm ask { prompt: "Charge {amount}?" choose ok from [yes, no] on invalid -> charge } -> policy
    guard policy { when ok == "yes" -> charge otherwise -> stop }
    call charge = charge_card(amount: amount) -> stop
    end stop: success
}
"#
);

failing!(
    e0106_unguarded_parallel_branch,
    ["E0106"],
    r#"
program p {
    input { id: string }
    tool read(id: string) -> json
    effect tool notify(id: string) -> json
    parallel fan { call r = read(id: id)  call n = notify(id: id) } -> done
    end done: success
}
"#
);

passing!(
    e0106_near_miss_guard_on_every_path,
    [],
    r#"
program p {
    input { amount: int }
    effect tool charge_card(amount: int) -> json
    llm ask { prompt: "Charge {amount}?" choose ok from [yes, no] on invalid -> stop } -> policy
    guard policy { when ok == "yes" and amount < 100 -> charge otherwise -> stop }
    call charge = charge_card(amount: amount) -> stop
    end stop: success
}
"#
);

// ---- E0107 otherwise --------------------------------------------------------------------------

failing!(
    e0107_missing_otherwise,
    ["E0107"],
    r#"
program p {
    input { n: int }
    guard g { when n > 1 -> done }
    end done: success
}
"#
);

failing!(
    e0107_two_otherwise_and_a_dead_arm,
    ["E0107", "E0107"],
    r#"
program p {
    input { n: int }
    guard g { otherwise -> done when n > 1 -> done otherwise -> done }
    end done: success
}
"#
);

passing!(
    e0107_near_miss_otherwise_only,
    [],
    r#"
program p {
    input { n: int }
    guard g { when n > 1 -> done otherwise -> done }
    end done: success
}
"#
);

// ---- E0108 name style -------------------------------------------------------------------------

failing!(
    e0108_names,
    ["E0108", "E0108", "E0108"],
    r#"
program p {
    input { orderId: string }
    llm Ask { prompt: "{orderId}" choose self from [a, b] } -> done
    end done: success
}
"#
);

// ---- E0109 budgets ----------------------------------------------------------------------------

failing!(
    e0109_budget_entries,
    ["E0109", "E0109", "E0109", "E0109"],
    r#"
program p {
    budget { max_step: 5, max_tokens: 10s, max_duration: 30, max_tool_calls: 0 }
    end done: success
}
"#
);

// ---- E0110 successors -------------------------------------------------------------------------

// A missing `-> S` is caught by the grammar, with a help text.
failing!(
    e0110_no_successor_is_a_syntax_error,
    ["E0001"],
    r#"
program p {
    input { q: string }
    llm ask { prompt: "{q}" into a }
    end done: success
}
"#
);

failing!(
    e0110_no_steps,
    ["E0110"],
    r#"
program empty {
    input { q: string }
}
"#
);

// ---- E0111 / E0113 parallel --------------------------------------------------------------------

failing!(
    e0111_parallel_shapes,
    ["E0111", "E0111", "E0111"],
    r#"
program p {
    input { id: string }
    tool t(id: string) -> json
    parallel fan {
        call a = t(id: id) on error -> done after b
        call b = t(id: id) after a
        call c = t(id: id) after c
    } -> done
    end done: success
}
"#
);

// `after` outside a parallel block is caught by the grammar, with a help text.
failing!(
    e0111_after_outside_parallel_is_a_syntax_error,
    ["E0001"],
    r#"
program p {
    input { id: string }
    tool t(id: string) -> json
    call a = t(id: id) after b -> done
    end done: success
}
"#
);

failing!(
    e0113_branches_assign_one_variable,
    ["E0113"],
    r#"
program p {
    input { id: string }
    tool t(id: string) -> json
    parallel fan { call a = t(id: id) into r  call b = t(id: id) into r } -> done
    end done: success
}
"#
);

// ---- E0112 llm and counts ---------------------------------------------------------------------

failing!(
    e0112_llm_shapes_and_counts,
    ["E0112", "E0112", "E0112"],
    r#"
program p {
    input { q: string }
    llm ask { into a on invalid -> done retry 1000 } -> done
    end done: success
}
"#
);

// ---- E0114 min_confidence ---------------------------------------------------------------------

failing!(
    e0114_min_confidence_shapes,
    ["E0114", "E0114", "E0114", "E0114", "E0114"],
    r#"
program p {
    input { q: string }
    budget { max_steps: 10 }
    llm over { prompt: "{q}" choose a from [yes, no] min_confidence 1.5 on invalid -> done } -> zero
    llm zero { prompt: "{q}" choose b from [yes, no] min_confidence: 0 on invalid -> done } -> free
    llm free { prompt: "{q}" into c min_confidence 0.9 } -> nowhere
    llm nowhere { prompt: "{q}" choose d from [yes, no] min_confidence 0.9 } -> fan
    parallel fan { llm e { prompt: "{q}" choose e from [yes, no] min_confidence 0.5 } } -> done
    end done: success
}
"#
);

passing!(
    e0114_min_confidence_with_choose_and_on_invalid,
    [],
    r#"
program p {
    input { q: string }
    llm ask {
        prompt: "{q}"
        choose decision from [yes, no] min_confidence 0.9
        on invalid -> review
    } -> done
    end done: success
    end review: success
}
"#
);

// ---- E0201..E0206 tools and calls ------------------------------------------------------------

failing!(
    e0201_undeclared_tool,
    ["E0201"],
    r#"
program p {
    input { id: string }
    tool lookup_order(id: string) -> json
    call c = lookup_ordr(id: id) -> done
    end done: success
}
"#
);

failing!(
    e0202_e0203_arguments,
    ["E0202", "E0203"],
    r#"
program p {
    input { id: string  amount: int }
    tool refund(order_id: string, amount_cents: int) -> json
    call c = refund(order_id: id, amount: amount) -> done
    end done: success
}
"#
);

failing!(
    e0204_mistyped_argument,
    ["E0204", "E0204"],
    r#"
program p {
    input { id: string  amount: int  email: string }
    tool refund(order_id: string, amount_cents: int, email: secret string) -> json
    call c = refund(order_id: id, amount_cents: id, email: email) -> done
    end done: success
}
"#
);

passing!(
    e0204_near_miss_int_widens_to_float_and_anything_to_json,
    [],
    r#"
program p {
    input { n: int  s: string }
    tool t(ratio: float, data: json, label: string) -> json
    llm ask { prompt: "{s}" choose c from [a, b] } -> call_t
    call call_t = t(ratio: n + 1, data: [1, 2], label: c) -> done
    end done: success
}
"#
);

failing!(
    e0206_tool_declarations,
    ["E0206", "E0206"],
    r#"
program p {
    input { id: string }
    tool t(id: string) -> secret string idempotent
    call c = t(id: id) -> done
    end done: success
}
"#
);

// ---- E0301..E0308 variables, types, secrets ---------------------------------------------------

failing!(
    e0301_unknown_variable,
    ["E0301", "E0301"],
    r#"
program p {
    input { request: string }
    llm ask { prompt: "{reqest}" choose d from [yes, no] } -> g
    guard g { when decison == "yes" -> done otherwise -> done }
    end done: success
}
"#
);

failing!(
    e0302_not_assigned_on_every_path,
    ["E0302"],
    r#"
program p {
    input { id: string }
    budget { max_steps: 10 }
    tool fetch(id: string) -> json
    call load = fetch(id: id) into invoice on error -> report -> report
    llm report { prompt: "Invoice status: {invoice.status}" into summary } -> done
    end done: success
}
"#
);

failing!(
    e0302_sibling_branch_not_awaited,
    ["E0302"],
    r#"
program p {
    input { id: string }
    tool fetch(id: string) -> json
    tool score(data: json) -> json
    parallel fan {
        call a = fetch(id: id) into raw
        call b = score(data: raw)
    } -> done
    end done: success
}
"#
);

passing!(
    e0302_near_miss_assigned_on_every_path,
    [],
    r#"
program p {
    input { id: string }
    tool fetch(id: string) -> json
    tool score(data: json) -> json
    parallel fan {
        call a = fetch(id: id) into raw
        call b = score(data: raw) after a
    } -> report
    llm report { prompt: "Data: {raw.status}" into summary } -> done
    end done: success
}
"#
);

failing!(
    e0303_type_errors,
    ["E0303", "E0303", "E0303", "E0303", "E0303"],
    r#"
program p {
    input { n: int  s: string  data: json }
    guard g {
        when n == "5" -> done
        when s.length > 3 -> done
        when n + 1 -> done
        when s < "b" -> done
        when data.count + 1 > 2 -> done
        otherwise -> done
    }
    end done: success
}
"#
);

failing!(
    e0303_field_of_a_string_in_a_template,
    ["E0303"],
    r#"
program p {
    input { request: string  data: json }
    llm ask { prompt: "{request.length} and {data.length}" into a } -> done
    end done: success
}
"#
);

passing!(
    e0303_near_miss_json_is_checked_at_run_time,
    [],
    r#"
program p {
    input { data: json  n: int  f: float  tags: json }
    guard g {
        when data.ok == true and data.risk < 70 and data.country in ["DE", "FR"] -> done
        when n <= f and not (len(data.name) > 3) -> done
        when lower(trim(data.name)) starts_with "a" or "x" in tags -> done
        otherwise -> done
    }
    end done: success
}
"#
);

failing!(
    e0304_choice_typo,
    ["E0304", "E0304"],
    r#"
program choice_typo {
    input { q: string }
    llm ask { prompt: "{q}" choose decision from [yes, no] } -> g
    guard g { when decision == "yse" -> a when decision in ["no", "maybe"] -> a otherwise -> b }
    end a: success
    end b: success
}
"#
);

passing!(
    e0304_near_miss_members,
    [],
    r#"
program p {
    input { q: string }
    llm ask { prompt: "{q}" choose decision from [yes, no, maybe] } -> g
    guard g { when decision == "yes" -> a when decision in ["no", "maybe"] -> b otherwise -> b }
    end a: success
    end b: success
}
"#
);

failing!(
    e0305_secret_in_prompt_and_system,
    ["E0305", "E0305"],
    r#"
program leak {
    input { card_number: secret string }
    llm ask {
        system: "Card on file: {card_number}"
        prompt: "Is {card_number} valid?"
        choose ok from [yes, no]
    } -> done
    end done: success
}
"#
);

failing!(
    e0306_e0307_assignments,
    ["E0306", "E0307"],
    r#"
program p {
    input { q: string }
    tool t(q: string) -> int
    llm ask { prompt: "{q}" into answer } -> compute
    call compute = t(q: q) into answer -> overwrite
    llm overwrite { prompt: "{q}" into q } -> done
    end done: success
}
"#
);

failing!(
    e0308_secrets_in_conditions_and_plain_parameters,
    ["E0308", "E0308"],
    r#"
program p {
    input { email: secret string }
    effect tool send(to: string) -> json
    guard g { when email == "a@b.c" -> mail otherwise -> done }
    call mail = send(to: email) -> done
    end done: success
}
"#
);

passing!(
    e0308_near_miss_secret_to_secret_parameter,
    [],
    r#"
program p {
    input { email: secret string  ok: bool }
    effect tool send(to: secret string) -> json
    guard g { when ok -> mail otherwise -> done }
    call mail = send(to: email) -> done
    end done: success
}
"#
);

// ---- E0309 untrusted data reaching an effect -------------------------------------------------

failing!(
    e0309_free_text_reaches_an_effect,
    ["E0309"],
    // The issue's program: the model's free text becomes the account money is wired to; the
    // guard before the effect reads only the amount.
    r#"
program p {
    input { request: string  amount: int }
    effect tool wire(to_account: string, amount: int) -> json
    llm ask { prompt: "Which account gets {amount} cents? {request}" into account } -> policy
    guard policy { when amount <= 5000 -> pay otherwise -> done }
    call pay = wire(to_account: account, amount: amount) -> done
    end done: success
}
"#
);

failing!(
    e0309_tool_result_field_the_guard_does_not_read,
    ["E0309"],
    // The guard reads the record's status, not the account the money goes to.
    r#"
program p {
    input { customer: string  amount: int }
    tool find_account(customer: string) -> json
    effect tool wire(to_account: json, amount: int) -> json
    call lookup = find_account(customer: customer) into rec -> policy
    guard policy { when rec.status == "open" and amount <= 5000 -> pay otherwise -> done }
    call pay = wire(to_account: rec.account, amount: amount) -> done
    end done: success
}
"#
);

failing!(
    e0309_one_path_skips_the_guard_that_reads_it,
    ["E0309"],
    // `policy` reads `rec.account`, but the run can also reach `pay` through `fast`, which
    // does not.
    r#"
program p {
    input { customer: string  amount: int }
    tool find_account(customer: string) -> json
    effect tool wire(to_account: json, amount: int) -> json
    call lookup = find_account(customer: customer) into rec -> route
    guard route { when amount < 100 -> fast otherwise -> policy }
    guard policy { when rec.account != null -> pay otherwise -> done }
    guard fast { when amount > 0 -> pay otherwise -> done }
    call pay = wire(to_account: rec.account, amount: amount) -> done
    end done: success
}
"#
);

failing!(
    e0309_sibling_branch_result_inside_parallel,
    ["E0309"],
    r#"
program p {
    input { customer: string  amount: int }
    tool find_account(customer: string) -> json
    effect tool wire(to_account: json, amount: int) -> json
    guard policy { when amount <= 5000 -> both otherwise -> done }
    parallel both {
        call lookup = find_account(customer: customer) into rec
        call pay = wire(to_account: rec, amount: amount) after lookup
    } -> done
    end done: success
}
"#
);

failing!(
    e0309_trusted_needs_a_reason,
    ["E0309", "E0309"],
    r#"
program p {
    input { request: string  amount: int }
    effect tool wire(to_account: string, amount: int) -> json
    effect tool note(text: string) -> json
    llm ask { prompt: "Which account? {request}" into account } -> policy
    guard policy { when amount <= 5000 -> pay otherwise -> done }
    call pay = wire(to_account: trusted(account), amount: amount) -> log
    call log = note(text: trusted(account, "")) -> done
    end done: success
}
"#
);

failing!(
    e0309_reassigned_after_the_guard_read_it,
    ["E0309"],
    // The guard read the first result; a second call replaced it before the effect.
    r#"
program p {
    input { customer: string }
    tool find_account(customer: string) -> json
    effect tool wire(to_account: json) -> json
    call lookup = find_account(customer: customer) into rec -> policy
    guard policy { when rec.account != null -> again otherwise -> done }
    call again = find_account(customer: customer) into rec -> pay
    call pay = wire(to_account: rec.account) -> done
    end done: success
}
"#
);

passing!(
    e0309_near_miss_an_awaited_value_replaces_the_result,
    [],
    // The awaited event (delivered by the application) overwrites the tool's result on the only
    // path to the effect.
    r#"
program p {
    input { customer: string  amount: int }
    tool find_account(customer: string) -> json
    effect tool wire(to_account: json) -> json
    call lookup = find_account(customer: customer) into rec -> confirm
    await confirm = account_confirmed into rec -> policy
    guard policy { when amount <= 5000 -> pay otherwise -> done }
    call pay = wire(to_account: rec.account) -> done
    end done: success
}
"#
);

passing!(
    e0309_near_miss_a_guard_reads_it_on_every_path,
    ["W0402"],
    r#"
program p {
    input { request: string  amount: int }
    effect tool wire(to_account: string, amount: int) -> json
    llm ask { prompt: "Which account gets {amount} cents? {request}" into account } -> policy
    guard policy { when account starts_with "DE" and amount <= 5000 -> pay otherwise -> done }
    call pay = wire(to_account: account, amount: amount) -> done
    end done: success
}
"#
);

passing!(
    e0309_near_miss_trusted_with_a_reason,
    [],
    r#"
program p {
    input { customer: string  amount: int }
    tool find_account(customer: string) -> json
    effect tool wire(to_account: json, amount: int) -> json
    call lookup = find_account(customer: customer) into rec -> policy
    guard policy { when rec.status == "open" and amount <= 5000 -> pay otherwise -> done }
    call pay = wire(
        to_account: trusted(rec.account, "find_account only returns this customer's own accounts"),
        amount: amount,
    ) -> done
    end done: success
}
"#
);

passing!(
    e0309_near_miss_whole_record_read_and_read_only_tools,
    [],
    // A guard that reads `rec` covers `rec.account`, one that reads `risk.level` covers that
    // field; results may flow into read-only tools;
    // `choose` answers and awaited events are not free text.
    r#"
program p {
    input { customer: string }
    tool find_account(customer: string) -> json
    tool score(account: json) -> json
    effect tool wire(to_account: json, risk: json, mode: string, note: json) -> json
    call lookup = find_account(customer: customer) into rec -> rate
    call rate = score(account: rec.account) into risk -> pick
    llm pick { prompt: "Fast or slow?" choose mode from [fast, slow] } -> wait
    await wait = approval into verdict -> policy
    guard policy { when rec != null and risk.level < 3 -> pay otherwise -> done }
    call pay = wire(to_account: rec.account, risk: risk.level, mode: mode, note: verdict) -> done
    end done: success
}
"#
);

#[test]
fn w0406_trusted_that_vouches_for_nothing() {
    // An input needs no trust, a read-only tool takes anything, and a value a guard already
    // reads is checked: a marker there would silently cover a flow added later.
    let src = r#"
program p {
    input { customer: string  amount: int }
    tool find_account(customer: string) -> json
    effect tool wire(to_account: json, amount: int) -> json
    call lookup = find_account(customer: trusted(customer, "typed by the clerk")) into rec -> policy
    guard policy { when rec.account != null and amount <= 5000 -> pay otherwise -> done }
    call pay = wire(
        to_account: trusted(rec.account, "the guard looks at it"),
        amount: trusted(amount, "the caller's"),
    ) -> done
    end done: success
}
"#;
    assert_eq!(clean("w0406", src), ["W0406", "W0406", "W0406"]);
    insta::assert_snapshot!(
        "w0406_trusted_that_vouches_for_nothing",
        report("w0406", src)
    );
}

#[test]
fn e0309_on_a_long_chain_stays_linear() {
    // 2,000 effect calls, each passing the same unchecked tool result: one diagnostic per
    // call, each of bounded size (the path in the note is elided in the middle), so checking
    // and reporting a long program is not quadratic in its length.
    let n = 2000;
    let mut src = String::from(
        "program chain {\n    input { customer: string  amount: int }\n    budget { max_steps: 5000 }\n    tool find_account(customer: string) -> json\n    effect tool wire(to_account: json, amount: int) -> json idempotent\n    call lookup = find_account(customer: customer) into rec -> g\n    guard g { when amount <= 5000 -> c0 otherwise -> done }\n",
    );
    for i in 0..n {
        let next = if i + 1 < n {
            format!("c{}", i + 1)
        } else {
            "done".into()
        };
        src.push_str(&format!(
            "    call c{i} = wire(to_account: rec.account, amount: amount) -> {next}\n"
        ));
    }
    src.push_str("    end done: success\n}\n");
    let c = compile("chain.nvm", &src);
    let e0309: Vec<_> = c.diagnostics.iter().filter(|d| d.code == "E0309").collect();
    assert_eq!(e0309.len(), n);
    let longest = e0309
        .iter()
        .flat_map(|d| &d.notes)
        .map(String::len)
        .max()
        .unwrap();
    assert!(longest < 200, "a note of {longest} bytes");
    assert!(
        e0309[n - 1].notes[0].contains("more steps"),
        "{:?}",
        e0309[n - 1].notes
    );
}

#[test]
fn trusted_is_a_name_elsewhere() {
    // `trusted` is contextual: only `trusted(` in an argument is the marker.
    let src = r#"
program p {
    input { trusted: string }
    effect tool note(text: string) -> json
    guard g { when trusted == "yes" -> log otherwise -> done }
    call log = note(text: trusted) -> done
    end done: success
}
"#;
    assert_eq!(clean("trusted_name", src), Vec::<&str>::new());
}

// ---- Warnings ---------------------------------------------------------------------------------

#[test]
fn w0401_effect_in_cycle() {
    let src = r#"
program p {
    input { id: string }
    budget { max_steps: 30 }
    effect tool charge(id: string) -> json
    guard g { when id != "" -> pay otherwise -> done }
    call pay = charge(id: id) into r -> again
    branch again { when r.retry == true -> g otherwise -> done }
    end done: success
}
"#;
    assert_eq!(clean("w0401", src), ["W0401"]);
    insta::assert_snapshot!("w0401_effect_in_cycle", report("w0401", src));
}

#[test]
fn w0402_free_text_decides_a_guard() {
    let src = r#"
program p {
    input { q: string }
    llm ask { prompt: "{q}" into answer } -> g
    guard g { when answer == "yes" -> done otherwise -> done }
    end done: success
}
"#;
    assert_eq!(clean("w0402", src), ["W0402"]);
    insta::assert_snapshot!("w0402_free_text_decides_a_guard", report("w0402", src));
}

#[test]
fn w0403_w0404_unused() {
    let src = r#"
program p {
    input { q: string  unused: int }
    tool never(x: int) -> json
    llm ask { prompt: "{q}" into answer } -> done
    end done: success
}
"#;
    assert_eq!(clean("w0403", src), ["W0403", "W0404"]);
    insta::assert_snapshot!("w0403_w0404_unused", report("w0403", src));
}

#[test]
fn w0405_guard_without_when_decides_nothing() {
    // The issue's program: the guard has no `when` arm, so it only renames the edge to `pay`,
    // yet it used to satisfy E0106 silently.
    let src = r#"
program p {
    input { account: string  amount: int }
    effect tool wire(to_account: string, amount: int) -> json
    start g
    guard g { otherwise -> pay }
    call pay = wire(to_account: account, amount: amount) -> done
    end done: success
}
"#;
    assert_eq!(clean("w0405", src), ["W0405"]);
    insta::assert_snapshot!(
        "w0405_guard_without_when_decides_nothing",
        report("w0405", src)
    );
}

#[test]
fn w0405_guard_whose_conditions_read_nothing() {
    // `when true` (or any condition that reads no variable) decides nothing either.
    let src = r#"
program p {
    input { account: string }
    effect tool wire(to_account: string) -> json
    effect tool alert(to_account: string) -> json
    start g
    guard g { when 1 < 2 -> pay otherwise -> warn }
    call pay = wire(to_account: account) -> done
    call warn = alert(to_account: account) -> done
    end done: success
}
"#;
    assert_eq!(clean("w0405c", src), ["W0405"]);
    insta::assert_snapshot!(
        "w0405_guard_whose_conditions_read_nothing",
        report("w0405c", src)
    );
}

#[test]
fn w0405_guard_whose_arms_all_go_to_one_step() {
    // It reads a variable, but wherever it points, the run goes to `pay`.
    let src = r#"
program p {
    input { account: string  amount: int }
    effect tool wire(to_account: string) -> json
    start g
    guard g { when amount <= 5000 -> pay otherwise -> pay }
    call pay = wire(to_account: account) -> done
    end done: success
}
"#;
    assert_eq!(clean("w0405s", src), ["W0405"]);
    insta::assert_snapshot!(
        "w0405_guard_whose_arms_all_go_to_one_step",
        report("w0405s", src)
    );
}

passing!(
    w0405_near_miss_guard_that_reads_an_input,
    [],
    r#"
program p {
    input { account: string  amount: int }
    effect tool wire(to_account: string, amount: int) -> json
    start g
    guard g { when amount <= 5000 -> pay otherwise -> done }
    call pay = wire(to_account: account, amount: amount) -> done
    end done: success
}
"#
);

passing!(
    w0405_near_miss_branch_without_when_is_a_plain_edge,
    [],
    r#"
program p {
    input { amount: int }
    effect tool charge(amount: int) -> json
    start g
    guard g { when amount < 10 -> b otherwise -> done }
    branch b { otherwise -> pay }
    call pay = charge(amount: amount) -> done
    end done: success
}
"#
);

// ---- Whole-file behaviour --------------------------------------------------------------------

// ---- E0310-E0312 record, list and optional types (issue 16) -------------------------------

/// A program that uses every new construct correctly: the near-miss of the rules below.
const RECORDS_OK: &str = r#"
program orders {
    type Item { sku: string, qty: int, note: string? }
    type Order { id: string, items: list<Item>, total: float, tags: list<string>, coupon: string? }
    type Refund { id: string, amount: int, reason: string? }
    input { order: Order, limit: int }
    budget { max_steps: 20 }
    tool quote_refund(order: Order, items: list<Item>) -> Refund
    effect tool pay(refund: Refund, amount: int, reason: string?) -> json idempotent
    llm ask { prompt: "Order {order.id} has {order.items} and total {order.total}" into summary } -> check
    branch check {
        when len(order.items) > 0 and order.total > 0 and order.tags contains "vip" -> quote
        when order.coupon != null and "a" in order.tags -> quote
        otherwise -> done
    }
    call quote = quote_refund(order: order, items: order.items) into refund -> g
    guard g {
        when refund.amount <= limit and refund.reason == null and refund.id starts_with "r" -> payout
        otherwise -> done
    }
    call payout = pay(refund: trusted(refund, "g checked its amount"), amount: refund.amount, reason: refund.reason) -> confirm
    await confirm = confirmed into c: Refund -> done
    end done: success
}
"#;

#[test]
fn records_lists_and_optionals_check_when_used_as_declared() {
    let c = compile("orders.nvm", RECORDS_OK);
    let errors: Vec<_> = c.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{}", c.render());
}

failing!(
    e0310_unknown_type_name,
    ["E0310", "E0310"],
    r#"
program p {
    type Refund { id: string, amount: int }
    input { r: Refnd }
    tool t(x: Refund) -> list<Amount>
    call c = t(x: r) -> done
    end done: success
}
"#
);

passing!(
    secret_json_and_scalars_stay_secrets,
    [],
    r#"
program p {
    input { blob: secret json, pin: secret int }
    tool t(blob: secret json, pin: secret int) -> json
    call c = t(blob: blob, pin: pin) -> done
    end done: success
}
"#
);

failing!(
    e0313_secret_around_a_composite,
    ["E0313", "E0313", "E0313"],
    r#"
program p {
    type Card { number: string }
    input { card: secret Card, tags: secret list<string>, pin: secret int }
    tool t(card: secret Card, pin: secret int) -> json
    call c = t(card: card, pin: pin) -> done
    end done: success
}
"#
);

failing!(
    e0311_unknown_field_of_a_record,
    ["E0311", "E0311", "E0303"],
    r#"
program p {
    type Customer { name: string, country: string }
    type Refund { id: string, amount: int, customer: Customer }
    input { r: Refund }
    tool pay(amount: int) -> json
    llm ask { prompt: "refund {r.id} for {r.customer.nme}" into a } -> g
    guard g { when r.amout > 10 -> c otherwise -> done }
    call c = pay(amount: r.customer.country.x) -> done
    end done: success
}
"#
);

failing!(
    e0312_bad_type_declarations,
    ["E0312", "E0312", "E0312", "E0312"],
    r#"
program p {
    type Node { id: string, children: list<Node> }
    type Item { sku: string, sku: int }
    type Item { other: string }
    type State { x: int }
    input { n: Node, i: Item, s: State }
    guard g { when n.id == "a" and i.sku == "b" and s.x > 1 -> done otherwise -> done }
    end done: success
}
"#
);

failing!(
    e0303_wrong_types_through_records,
    ["E0303", "E0303", "E0303", "E0303", "E0303", "E0204"],
    r#"
program p {
    type Refund { id: string, amount: int, reason: string?, tags: list<int> }
    input { r: Refund }
    tool t(amount: int) -> json
    guard g {
        when r.amount == "ten" -> c
        when r.reason == "late" -> c
        when r.reason.x == "late" -> c
        when r.tags contains "a" -> c
        when r.amount + 1 > 2 -> c
        otherwise -> done
    }
    call c = t(amount: r.id) -> done
    end done: success
}
"#
);

passing!(
    type_and_list_stay_names_outside_type_positions,
    [],
    r#"
program p {
    type Bin { list: list<string>, type: string? }
    input { type: string, list: Bin }
    tool t(type: string, list: list<string>) -> json
    call type_step = t(type: type, list: list.list) -> done
    end done: success
}
"#
);

// ---- typed model answers (issue 16 item 2) ---------------------------------------------------

passing!(
    typed_answer_with_on_invalid_and_a_typed_guard,
    [],
    r#"
program p {
    type Claim { amount: int, reason: string, order_id: string? }
    input { email: string, limit: int }
    effect tool refund(amount: int) -> json idempotent
    llm extract { prompt: "{email}" answer claim: Claim on invalid -> unreadable } -> g
    guard g { when claim.amount <= limit and claim.order_id != null -> pay otherwise -> done }
    call pay = refund(amount: claim.amount) -> done
    end done: success
    end unreadable: failure "no claim"
}
"#
);

failing!(
    typed_answer_and_into,
    ["E0005"],
    r#"
program p {
    type Claim { amount: int, reason: string }
    input { email: string }
    llm extract { prompt: "{email}" answer claim: Claim into text } -> done
    end done: success
}
"#
);

failing!(
    typed_answer_errors,
    ["E0106", "E0309", "E0311", "E0310"],
    r#"
program p {
    type Claim { amount: int, reason: string }
    input { email: string }
    effect tool refund(amount: int) -> json idempotent
    llm extract { prompt: "{email}" answer claim: Claim } -> pay
    call pay = refund(amount: claim.amount) -> ask
    llm ask { prompt: "{claim.reson}" answer other: Clam } -> done
    end done: success
}
"#
);

#[test]
fn all_errors_of_a_file_are_reported_at_once() {
    let src = r#"
program a {
    input { q: string }
    llm ask { prompt: "{q}" choose d from [yes, no] } -> g
    guard g { when d == "yse" -> nowhere otherwise -> done }
    end done: success
}
program b {
    input { amount: int }
    effect tool pay(amount: int) -> json
    call charge = pay(amount: "ten") -> done
    end done: success
}
"#;
    assert_eq!(codes(src), ["E0304", "E0102", "E0106", "E0204"]);
}

#[test]
fn duplicate_programs_in_one_file() {
    let src = "program p { end done: success }\nprogram p { end done: success }\n";
    assert_eq!(codes(src), ["E0101"]);
}

#[test]
fn a_thousand_step_program_checks() {
    let mut src =
        String::from("program long {\n    input { id: string }\n    tool t(id: string) -> json\n");
    for i in 0..1000 {
        src.push_str(&format!("    call s{i} = t(id: id) -> s{}\n", i + 1));
    }
    src.push_str("    end s1000: success\n}\n");
    let c = compile("long.nvm", &src);
    assert!(!c.has_errors(), "{}", c.render());
    assert_eq!(c.programs[0].steps.len(), 1001);
}

/// The catalogue (`nanovm_dsl::codes`) and `docs/diagnostics.md` say the same thing: every code
/// has one row in the docs whose second column is the catalogue's summary, under a section whose
/// severity (the `## Warnings` section holds the warnings, every other section errors) is the
/// code's; and the docs name no code the catalogue lacks.
#[test]
fn catalogue_matches_the_docs() {
    use nanovm_dsl::{Code, Severity, codes};
    use std::collections::BTreeMap;

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/diagnostics.md");
    let doc = std::fs::read_to_string(path).expect("docs/diagnostics.md");
    let mut rows: BTreeMap<String, (Severity, String)> = BTreeMap::new();
    let mut section_severity = Severity::Error;
    let mut problems = Vec::new();
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section_severity = if heading.starts_with("Warnings") {
                Severity::Warning
            } else {
                Severity::Error
            };
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(id) = cells.first().and_then(|c| c.strip_prefix("| ")) else {
            continue;
        };
        let is_code = id.len() == 5
            && (id.starts_with('E') || id.starts_with('W'))
            && id[1..].bytes().all(|b| b.is_ascii_digit());
        if !is_code {
            continue;
        }
        let summary = cells.get(1).map_or("", |s| s.trim_end_matches(" |"));
        let row = (section_severity, summary.to_string());
        if rows.insert(id.to_string(), row).is_some() {
            problems.push(format!("{id} has two rows in docs/diagnostics.md"));
        }
    }
    for code in codes::ALL {
        match rows.remove(code.id()) {
            None => problems.push(format!("{code} is not documented in docs/diagnostics.md")),
            Some((severity, summary)) => {
                if severity != code.severity() {
                    problems.push(format!(
                        "{code} is a {} in the catalogue but documented as a {}",
                        code.severity().as_str(),
                        severity.as_str()
                    ));
                }
                if summary != code.summary() {
                    problems.push(format!(
                        "{code}: the catalogue says\n    {}\nthe docs say\n    {summary}",
                        code.summary()
                    ));
                }
                let prefix = match code.severity() {
                    Severity::Error => 'E',
                    Severity::Warning => 'W',
                };
                if !code.id().starts_with(prefix) {
                    problems.push(format!("{code}: the letter does not match its severity"));
                }
            }
        }
    }
    for id in rows.keys() {
        problems.push(format!(
            "docs/diagnostics.md documents {id}, which the catalogue lacks"
        ));
    }
    let mut ids: Vec<&str> = codes::ALL.iter().map(|c| c.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != codes::ALL.len() {
        problems.push("codes::ALL lists a code twice".to_string());
    }
    assert_eq!(Code::lookup("E0102"), Some(codes::E0102));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Programs that use `{N}` as a step name, an input (read through a template hole and a
/// condition) and a variable. Each keyword is put in for `{N}`.
const KEYWORD_AS_NAME: &[&str] = &[
    "program p {\n    start {N}\n    llm {N} { prompt: \"x\" } -> done\n    end done: success\n}\n",
    "program p {\n    input { {N}: string }\n    llm ask { prompt: \"{{N}}\" } -> check\n    guard check {\n        when {N} == \"y\" -> done\n        otherwise -> done\n    }\n    end done: success\n}\n",
    "program p {\n    llm ask { prompt: \"x\" into {N} } -> say\n    llm say { prompt: \"{{N}}\" } -> done\n    end done: success\n}\n",
];

/// The name the help of an `E0007` suggests: the first `` `...` `` after "e.g.".
fn suggested_name(help: &str) -> Option<&str> {
    let rest = &help[help.find("e.g. `")? + "e.g. `".len()..];
    Some(&rest[..rest.find('`')?])
}

/// E0007's help used to suggest `end_`, which E0108 then rejected as not snake_case. For every
/// reserved keyword, in every position of [`KEYWORD_AS_NAME`], the program is rejected with
/// E0007, and the program with the suggested name put in compiles without errors.
#[test]
fn the_keyword_help_suggests_a_name_the_checker_accepts() {
    use nanovm_dsl::syntax::keywords::RESERVED;

    for kw in RESERVED {
        for template in KEYWORD_AS_NAME {
            let src = template.replace("{N}", kw);
            let c = compile("kw.nvm", &src);
            let e0007: Vec<_> = c.diagnostics.iter().filter(|d| d.code == "E0007").collect();
            assert!(
                !e0007.is_empty(),
                "`{kw}` as a name:\n{src}\n{}",
                c.render()
            );
            let names: Vec<&str> = e0007
                .iter()
                .map(|d| {
                    d.help
                        .as_deref()
                        .and_then(suggested_name)
                        .unwrap_or_else(|| panic!("E0007 without a suggestion:\n{}", c.render()))
                })
                .collect();
            assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
            let fixed = template.replace("{N}", names[0]);
            let c = compile("fixed.nvm", &fixed);
            assert!(
                !c.has_errors(),
                "`{kw}` replaced by the suggested `{}` still fails:\n{fixed}\n{}",
                names[0],
                c.render()
            );
        }
    }
}

/// `retry` and `after` are contextual: they only mean something where they start a clause, so
/// they are fine names in every position.
#[test]
fn contextual_words_are_names() {
    for word in ["retry", "after"] {
        for template in KEYWORD_AS_NAME {
            let src = template.replace("{N}", word);
            let c = compile("ctx.nvm", &src);
            assert!(!c.has_errors(), "`{word}`:\n{src}\n{}", c.render());
        }
    }
    // Next to its clause: a branch runs `after` a sibling named `after`, and a list of siblings
    // stops before a following `retry N` clause.
    let src = r#"
program p {
    parallel fan {
        llm after { prompt: "x" into a }
        llm b { prompt: "y" into b_out, after after }
        llm c { prompt: "z" into c_out, after after, b, retry 2 }
    } -> done
    end done: success
}
"#;
    let c = compile("after.nvm", src);
    assert!(!c.has_errors(), "{}", c.render());
}

/// docs/language.md lists exactly the reserved keywords of the parser.
#[test]
fn the_docs_list_the_reserved_keywords() {
    use nanovm_dsl::syntax::keywords::RESERVED;

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/language.md");
    let doc = std::fs::read_to_string(path).expect("docs/language.md");
    let after_heading = &doc[doc
        .find("Reserved keywords can never be names")
        .expect("the keyword paragraph")..];
    let block_start = after_heading.find("```text\n").expect("a code block") + 8;
    let block = &after_heading[block_start..];
    let block = &block[..block.find("```").expect("the end of the code block")];
    let mut documented: Vec<&str> = block.split_whitespace().collect();
    let mut reserved: Vec<&str> = RESERVED.to_vec();
    documented.sort_unstable();
    reserved.sort_unstable();
    assert_eq!(documented, reserved);
}

/// Every code of the catalogue is emitted somewhere in the compiler's source (as
/// `codes::E0102`), so the catalogue and the docs carry no rule that nothing enforces.
#[test]
fn every_catalogued_code_is_emitted() {
    fn sources(dir: &std::path::Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("codes.rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut text = String::new();
    sources(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut text,
    );
    let unused: Vec<&str> = nanovm_dsl::codes::ALL
        .iter()
        .map(|c| c.id())
        .filter(|id| !text.contains(&format!("codes::{id}")))
        .collect();
    assert!(unused.is_empty(), "never emitted: {unused:?}");
}
