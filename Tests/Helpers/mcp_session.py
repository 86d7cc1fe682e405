#!/usr/bin/env python3
"""Drive Containarium's MCP server with the official Python MCP client (PyPI `mcp`) and print
what happened as one JSON object, for MCPTests to check.

    mcp_session.py http URL TOKEN STEPS_JSON
    mcp_session.py stdio CLI URL TOKEN STEPS_JSON     (runs `CLI mcp --server URL`, token in
                                                      CONTAINARIUM_JWT_TOKEN)

STEPS_JSON is a list of steps, each one of:
    {"op": "list_tools"} | {"op": "call", "tool": NAME, "args": {...}, "progress": true}
    {"op": "list_resources"} | {"op": "read", "uri": URI} | {"op": "list_prompts"}
    {"op": "prompt", "name": NAME, "args": {...}} | {"op": "schemas"}   (jsonschema checks)
    {"op": "cancel", "tool": NAME, "args": {...}}   call with progress, cancel it (notifications/cancelled)
                                                    after the first progress notification
Each step's outcome is recorded; an MCP error is recorded as {"error": {"code", "message"}}.
"""
import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError


async def run(session, steps):
    out = []
    await session.initialize()
    for step in steps:
        op = step["op"]
        try:
            if op == "list_tools":
                tools = (await session.list_tools()).tools
                out.append({"tools": [{"name": t.name, "annotations": t.annotations.model_dump(exclude_none=True) if t.annotations else {},
                                       "description": t.description} for t in tools]})
            elif op == "schemas":
                import jsonschema
                tools = (await session.list_tools()).tools
                bad = []
                for t in tools:
                    try:
                        jsonschema.Draft202012Validator.check_schema(t.inputSchema)
                    except Exception as e:  # noqa: BLE001
                        bad.append({"tool": t.name, "error": str(e)[:300]})
                checks = []
                for t in tools:
                    for sample in step.get("samples", {}).get(t.name, []):
                        v = jsonschema.Draft202012Validator(t.inputSchema)
                        checks.append({"tool": t.name, "sample": sample["args"], "valid": v.is_valid(sample["args"]), "want": sample["valid"]})
                out.append({"checked": len(tools), "invalid": bad, "samples": checks})
            elif op == "call":
                progress = []

                async def on_progress(p, total, message):
                    progress.append({"progress": p, "total": total, "message": message})
                r = await session.call_tool(step["tool"], step.get("args", {}), progress_callback=on_progress if step.get("progress") else None)
                text = "".join(c.text for c in r.content if getattr(c, "type", "") == "text")
                out.append({"isError": bool(r.isError), "text": text, "structured": r.structuredContent, "progress": progress})
            elif op == "cancel":
                import anyio
                from mcp import types
                seen = anyio.Event()
                progress = []

                async def on_first(p, total, message):
                    progress.append({"progress": p, "total": total, "message": message})
                    seen.set()
                request_id = session._request_id  # the id the next request gets
                outcome = {}

                async def call():
                    try:
                        r = await session.call_tool(step["tool"], step.get("args", {}), progress_callback=on_first)
                        outcome["result"] = {"isError": bool(r.isError)}
                    except McpError as e:
                        outcome["error"] = e.error.message
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    with anyio.fail_after(300):
                        await seen.wait()
                    await session.send_notification(types.ClientNotification(types.CancelledNotification(
                        params=types.CancelledNotificationParams(requestId=request_id, reason="the test cancels it"))))
                    # Per the spec no answer follows a cancelled request: stop waiting after a while.
                    with anyio.move_on_after(20):
                        while not outcome:
                            await anyio.sleep(0.2)
                    tg.cancel_scope.cancel()
                out.append({"cancelled": True, "progress": progress, "outcome": outcome})
            elif op == "list_resources":
                rs = (await session.list_resources()).resources
                out.append({"resources": [{"uri": str(r.uri), "name": r.name, "mimeType": r.mimeType} for r in rs]})
            elif op == "read":
                rr = await session.read_resource(step["uri"])
                out.append({"contents": [{"uri": str(c.uri), "mimeType": c.mimeType, "text": getattr(c, "text", None)} for c in rr.contents]})
            elif op == "list_prompts":
                ps = (await session.list_prompts()).prompts
                out.append({"prompts": [{"name": p.name, "arguments": [a.name for a in (p.arguments or [])]} for p in ps]})
            elif op == "prompt":
                pr = await session.get_prompt(step["name"], step.get("args", {}))
                out.append({"messages": [m.content.text for m in pr.messages]})
            else:
                out.append({"error": {"code": 0, "message": f"unknown op {op}"}})
        except McpError as e:
            out.append({"error": {"code": e.error.code, "message": e.error.message}})
    return out


async def main():
    mode = sys.argv[1]
    if mode == "http":
        url, token, steps = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
        async with streamablehttp_client(url, headers={"Authorization": f"Bearer {token}"}) as (r, w, _):
            async with ClientSession(r, w) as s:
                result = await run(s, steps)
    else:
        cli, url, token, steps = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
        env = dict(os.environ, CONTAINARIUM_JWT_TOKEN=token)
        params = StdioServerParameters(command=cli, args=["mcp", "--server", url], env=env)
        async with stdio_client(params) as (r, w):
            async with ClientSession(r, w) as s:
                result = await run(s, steps)
    print(json.dumps(result))


asyncio.run(main())
