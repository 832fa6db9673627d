#!/usr/bin/env python3
"""A WebSocket client for tests/websocket.rs, made with Python's
`websockets` (PyPI, tests/setup/requirements.txt).

    ws_client.py URL

Connects (printing `open`, or `refused STATUS` when the server answers
the upgrade with something else than a 101, then exits), then follows
commands read from standard input, one a line, printing one line each:

    whoami      -> `server NAME`
    alpn        -> `alpn PROTOCOL`: what the server agreed by TLS ALPN (`none`)
    echo N      -> sends N messages of growing size, checks each echo: `echoed N`
    burst N     -> asks the server for N messages, checks them: `burst N`
    wait_close  -> waits until the connection closes: `closed`
    close       -> closes it (close handshake): `closed`

Anything unexpected prints `error: ...` and exits 1.
"""
import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


def say(line):
    print(line, flush=True)


async def command(ws, words):
    what = words[0]
    if what == "whoami":
        await ws.send("whoami")
        say(f"server {await ws.recv()}")
    elif what == "alpn":
        await ws.send("alpn")
        say(f"alpn {await ws.recv()}")
    elif what == "echo":
        n = int(words[1])
        for i in range(n):
            msg = f"m{i}:" + "y" * (i * 97 % 5000)
            await ws.send(msg)
            got = await ws.recv()
            if got != msg:
                say(f"error: message {i} came back as {got[:40]!r}")
                sys.exit(1)
        say(f"echoed {n}")
    elif what == "burst":
        n = int(words[1])
        await ws.send(f"burst {n}")
        for i in range(n):
            got = await ws.recv()
            if got != f"burst {i}":
                say(f"error: burst message {i} was {got[:40]!r}")
                sys.exit(1)
        say(f"burst {n}")
    elif what == "wait_close":
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            say("closed")
    elif what == "close":
        await ws.close()
        say("closed")
    else:
        say(f"error: unknown command {what!r}")
        sys.exit(1)


async def main():
    try:
        ws = await connect(sys.argv[1], ping_interval=None, max_size=None, open_timeout=30)
    except InvalidStatus as e:
        say(f"refused {e.response.status_code}")
        return
    say("open")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        words = line.split()
        if not words:
            continue
        try:
            await command(ws, words)
        except ConnectionClosed as e:
            say(f"error: connection closed ({e})")
            sys.exit(1)
    await ws.close()


asyncio.run(main())
