"""A JSON transform written for the original nanofaas's Python SDK: an ``async`` function,
decorated under a name of its own (the runtime finds it by the decorator, as the original did).

Input::

    {"records": [{...}, ...], "select": ["a", "b"], "rename": {"a": "A"}, "sortBy": "A"}

answers the records reduced to ``select`` (all fields when absent), renamed, sorted by
``sortBy`` (after renaming) when given, with their count and the execution id.
"""

import asyncio
import os

from nanofaas.sdk import context, nanofaas_function

log = context.get_logger("json-transform")


@nanofaas_function
async def transform(data):
    await asyncio.sleep(0)  # a real coroutine, run to completion by the runtime
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError('input must be {"records": [...], ...}')
    select = data.get("select")
    rename = data.get("rename") or {}
    out = []
    for rec in data["records"]:
        if not isinstance(rec, dict):
            raise ValueError(f"every record must be an object, got {type(rec).__name__}")
        keys = select if select is not None else list(rec)
        out.append({rename.get(k, k): rec.get(k) for k in keys})
    if data.get("sortBy"):
        key = data["sortBy"]
        out.sort(key=lambda r: (r.get(key) is None, r.get(key)))
    log.info("transformed %d records", len(out))
    return {
        "records": out,
        "count": len(out),
        "executionId": context.get_execution_id(),
        "pid": os.getpid(),
    }
