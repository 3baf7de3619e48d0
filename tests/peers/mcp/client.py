"""A real MCP client (PyPI `mcp` 2.3.0) against nanovm's MCP server.

    python client.py stdio COMMAND [ARGS...]
    python client.py http URL TOKEN

Lists the tools, starts `customer_refund` through `start_customer_refund`, reads its status
until it ends, reads its trace resource and verifies it, and checks what must be refused: a
wrong input type (named), and calling one of the program's own tools (the effects stay behind
the compiled guards). Prints one line per check; exits 1 on the first failure.
"""
import asyncio
import json
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        sys.exit(1)


def payload(res):
    if res.structured_content is not None:
        return res.structured_content
    return json.loads(res.content[0].text)


async def drive(s, run_id):
    init = await s.initialize()
    check(init.server_info.name == "nanovm", f"server {init.server_info.name}, protocol {init.protocol_version}")
    tools = {t.name: t for t in (await s.list_tools()).tools}
    check("start_customer_refund" in tools, f"tools: {sorted(tools)}")
    schema = tools["start_customer_refund"].input_schema
    check(schema["properties"]["amount_cents"]["type"] == "integer", "start_customer_refund's input schema is the program's")
    check(not any(t in tools for t in ("issue_refund", "send_rejection")), "no tool reaches an effect directly")
    bad = await s.call_tool("start_customer_refund", {"run_id": run_id + "-bad", "request": "x", "order_id": "o",
                                                      "amount_cents": "lots", "email": "a@b.c"})
    check(bad.is_error and "amount_cents" in bad.content[0].text, "a wrong type is refused, naming the field: " + bad.content[0].text)
    direct = await s.call_tool("issue_refund", {"order_id": "o-1", "amount_cents": 999999})
    check(direct.is_error, "calling the refund tool directly is refused: " + direct.content[0].text)
    args = {"run_id": run_id, "request": "It arrived broken, refund please.", "order_id": "o-mcp",
            "amount_cents": 1200, "email": "cy@example.com"}
    res = await s.call_tool("start_customer_refund", args)
    check(not res.is_error, "start_customer_refund: " + res.content[0].text.replace("\n", " ")[:160])
    again = await s.call_tool("start_customer_refund", args)
    check(payload(again)["created"] is False, "a repeated start returns the existing run")
    deadline = time.time() + 20
    while True:
        st = payload(await s.call_tool("run_status", {"run_id": run_id}))
        if st["status"] not in ("running",) or time.time() > deadline:
            break
        await asyncio.sleep(0.1)
    check(st["status"] == "success" and st["step"] == "refunded", f"run_status: {st['status']} at {st['step']}")
    resources = [str(r.uri) for r in (await s.list_resources()).resources]
    uri = f"nanovm://runs/{run_id}/trace"
    check(uri in resources and "nanovm://programs/customer_refund/graph" in resources, "resources list the trace and the graph")
    trace = (await s.read_resource(uri)).contents[0].text
    lines = [json.loads(l) for l in trace.splitlines() if l.strip()]
    check(len(lines) >= 4 and "cy@example.com" not in trace, f"trace resource: {len(lines)} entries, no plaintext secret")
    graph = (await s.read_resource("nanovm://programs/customer_refund/graph")).contents[0].text
    check(graph.startswith("flowchart TD"), "graph resource is Mermaid")
    c = await s.call_tool("cancel_run", {"run_id": run_id, "reason": "mcp client test"})
    check(c.is_error and "has ended" in c.content[0].text, "cancel_run refuses an ended run: " + c.content[0].text)
    v = payload(await s.call_tool("verify", {"run_id": run_id}))
    check(v["ok"] is True and v["entries"] == len(lines), f"verify: root {v.get('root', '')[:16]}")


async def main(argv):
    mode, rest = argv[0], argv[1:]
    run_id = f"mcp-py-{mode}-{int(time.time() * 1000)}"
    if mode == "stdio":
        params = StdioServerParameters(command=rest[0], args=rest[1:])
        async with stdio_client(params) as (r, w):
            async with ClientSession(r, w) as s:
                await drive(s, run_id)
    elif mode == "http":
        import httpx2
        from mcp.client.streamable_http import streamable_http_client
        url, token = rest
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            async with streamable_http_client(url, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as s:
                    await drive(s, run_id)
    else:
        sys.exit(f"unknown mode {mode}")
    print("python mcp client: all checks passed", flush=True)


asyncio.run(main(sys.argv[1:]))
