// A real MCP client (npm @modelcontextprotocol/sdk 1.32.2) against nanovm's MCP server.
//   node client.mjs stdio COMMAND [ARGS...]
//   node client.mjs http URL TOKEN
// Lists the tools, starts customer_refund, reads its status until it ends, reads its trace
// resource; checks that a program's own tool cannot be called. Exits 1 on the first failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

function check(cond, what) {
  console.log((cond ? "ok   " : "FAIL ") + what);
  if (!cond) process.exit(1);
}
const body = (res) => res.structuredContent ?? JSON.parse(res.content[0].text);

const [mode, ...rest] = process.argv.slice(2);
const client = new Client({ name: "nanovm-e2e-ts", version: "0.0.1" });
if (mode === "stdio") {
  await client.connect(new StdioClientTransport({ command: rest[0], args: rest.slice(1) }));
} else {
  const [url, token] = rest;
  await client.connect(new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  }));
}
const tools = (await client.listTools()).tools.map((t) => t.name);
check(tools.includes("start_customer_refund") && !tools.includes("issue_refund"), `tools: ${tools.join(", ")}`);
const direct = await client.callTool({ name: "issue_refund", arguments: { order_id: "o", amount_cents: 1 } });
check(direct.isError === true, "calling the refund tool directly is refused");
const runId = `mcp-ts-${mode}-${Date.now()}`;
const started = await client.callTool({ name: "start_customer_refund", arguments: {
  run_id: runId, request: "It arrived broken, refund please.", order_id: "o-ts", amount_cents: 900, email: "ts@example.com" } });
check(!started.isError, "start_customer_refund");
let st;
for (let i = 0; i < 200; i++) {
  st = body(await client.callTool({ name: "run_status", arguments: { run_id: runId } }));
  if (st.status !== "running") break;
  await new Promise((r) => setTimeout(r, 100));
}
check(st.status === "success", `run_status: ${st.status} at ${st.step}`);
const trace = (await client.readResource({ uri: `nanovm://runs/${runId}/trace` })).contents[0].text;
check(trace.split("\n").filter(Boolean).length >= 4 && !trace.includes("ts@example.com"), "trace resource, no plaintext secret");
await client.close();
console.log("ts mcp client: all checks passed");
