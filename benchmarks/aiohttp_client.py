"""Reference client for the engine choice: aiohttp's ClientSession, closed loop.

    python benchmarks/aiohttp_client.py URL CONNECTIONS SECONDS

Each of CONNECTIONS coroutines sends GET URL and reads the body, again and again, on one
ClientSession (uvloop), until SECONDS pass. Shown beside the workbench's own engine in the
capacity table; it is what the driver used before the engine was measured and replaced.
"""

import asyncio
import sys
import time

import aiohttp
import uvloop


async def user(session: aiohttp.ClientSession, url: str, stop: float) -> None:
    while time.perf_counter() < stop:
        async with session.get(url) as response:
            await response.read()


async def main(url: str, connections: int, seconds: float) -> None:
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = time.perf_counter() + seconds
        await asyncio.gather(*(user(session, url, stop) for _ in range(connections)))


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
