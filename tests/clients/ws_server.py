#!/usr/bin/env python3
"""A WebSocket origin for tests/websocket.rs, made with Python's
`websockets` (PyPI, tests/setup/requirements.txt).

    ws_server.py NAME [PORT [CERT KEY]]

Prints `listening PORT` once it listens on 127.0.0.1 (PORT, or a free
port when 0 or absent), then serves until killed
(examples/websocket/run.sh uses it too). With CERT and KEY (PEM files) it
serves over TLS, offering ALPN `h2` and `http/1.1` (it speaks HTTP/1.1
whatever is agreed, so the client's offer shows in `alpn`):

- a WebSocket on any path echoes every message; `whoami` is answered with
  NAME, `alpn` with the ALPN protocol agreed (`none` without TLS or
  ALPN), `burst N` with N messages `burst 0` ... (server to client);
- a WebSocket on /push sends 64 KiB messages, up to 256 MiB, printing
  `pushed BYTES` after each MiB (its sends wait while the peer does not
  read: the test sees the backpressure as the count stopping);
- a request without an Upgrade gets `200 NAME`; on /refuse even an
  upgrade request gets a plain `200 NAME` (no switch).
"""
import asyncio
import ssl
import sys

from websockets.asyncio.server import serve

NAME = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
TLS = None
if len(sys.argv) > 4:
    TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLS.load_cert_chain(sys.argv[3], sys.argv[4])
    TLS.set_alpn_protocols(["h2", "http/1.1"])
PUSH_LIMIT = 256 << 20


def plain(connection, request):
    if "Upgrade" not in request.headers or request.path.startswith("/refuse"):
        return connection.respond(200, NAME + "\n")
    return None


async def handler(ws):
    if ws.request.path.startswith("/push"):
        chunk = b"x" * 65536
        sent = 0
        while sent < PUSH_LIMIT:
            await ws.send(chunk)
            sent += len(chunk)
            if sent % (1 << 20) == 0:
                print(f"pushed {sent}", flush=True)
        print("pushed all", flush=True)
        await ws.wait_closed()
        return
    async for msg in ws:
        if msg == "whoami":
            await ws.send(NAME)
        elif msg == "alpn":
            tls = ws.transport.get_extra_info("ssl_object")
            await ws.send((tls and tls.selected_alpn_protocol()) or "none")
        elif isinstance(msg, str) and msg.startswith("burst "):
            for i in range(int(msg.split()[1])):
                await ws.send(f"burst {i}")
        else:
            await ws.send(msg)


async def main():
    # No keep-alive pings: the tests count silence (timeouts.tunnel).
    async with serve(
        handler,
        "127.0.0.1",
        PORT,
        process_request=plain,
        ping_interval=None,
        max_size=None,
        ssl=TLS,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening {port}", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
