"""An ``async def`` handler that reports which event loop ran it, and keeps a future bound to
the first loop it saw (which fails if a later call runs on another loop)."""

import asyncio
import os
import threading

_kept: list[asyncio.Future] = []


async def handle(request):
    loop = asyncio.get_running_loop()
    if not _kept:
        _kept.append(loop.create_future())
    # Awaiting with a future of another loop raises; on the same loop it just times out.
    try:
        await asyncio.wait_for(asyncio.shield(_kept[0]), timeout=0.001)
    except TimeoutError:
        pass
    return {"loop": id(loop), "thread": threading.get_ident(), "pid": os.getpid()}
