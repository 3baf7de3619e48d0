// A host cannot add a tool the program does not declare: the trait has no such method.
use nanovm::{ToolContext, ToolError};
use nanovm::Json;

nanovm::nano_program! {
    program shop {
        input { id: string }
        tool lookup(id: string) -> json
        call load = lookup(id: id) -> done
        end done: success
    }
}

struct Host;

impl shop::Tools for Host {
    async fn lookup(&self, _ctx: &ToolContext, _id: String) -> Result<Json, ToolError> {
        Ok(Json::Null)
    }
    async fn delete_everything(&self, _ctx: &ToolContext) -> Result<Json, ToolError> {
        Ok(Json::Null)
    }
}

fn main() {}
