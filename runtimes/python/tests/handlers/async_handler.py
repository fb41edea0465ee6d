import asyncio


async def handle(request):
    await asyncio.sleep(0)
    return {"async": request["input"]}
