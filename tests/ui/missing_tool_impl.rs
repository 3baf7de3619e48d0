// The host implements the program's `Tools` trait but forgets one tool: a compile error, so a
// program can never run with a tool missing.
use nanovm::{ToolContext, ToolError};
use nanovm::Json;

nanovm::nano_program! {
    program shop {
        input { id: string }
        tool lookup(id: string) -> json
        effect tool refund(id: string) -> json
        call load = lookup(id: id) into order -> check
        guard check { when order.ok == true -> pay otherwise -> done }
        call pay = refund(id: id) -> done
        end done: success
    }
}

struct Host;

impl shop::Tools for Host {
    async fn lookup(&self, _ctx: &ToolContext, _id: String) -> Result<Json, ToolError> {
        Ok(Json::Null)
    }
}

fn main() {}
