#!/usr/bin/env python3
"""A real gRPC server (grpcio) for tests/grpc.rs, with no generated stubs:
a generic handler for service test.Echo, bytes in and out.

  /test.Echo/Unary   answers the request's bytes, prefixed "echo: "
  /test.Echo/Fail    fails with NOT_FOUND, details "no such thing: <request>"
  /test.Echo/Stream  answers 5 messages, "part 1" ... "part 5" (given
                     "fail": 2 messages, then RESOURCE_EXHAUSTED)

Prints "listening PORT"; runs until its stdin closes. With CERT and KEY
(PEM files) it speaks TLS (ALPN h2) instead of h2c.

    grpc_origin.py [CERT KEY]
"""
import sys
from concurrent import futures

import grpc


def unary(request, context):
    return b"echo: " + request


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())


def stream(request, context):
    for i in range(1, 6):
        if request == b"fail" and i == 3:
            # After two messages: the status can only come in trailers.
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "stopped after 2")
        yield f"part {i}".encode()


ident = lambda b: b
handler = grpc.method_handlers_generic_handler(
    "test.Echo",
    {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, ident, ident),
    },
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
if len(sys.argv) == 3:
    with open(sys.argv[1], "rb") as c, open(sys.argv[2], "rb") as k:
        creds = grpc.ssl_server_credentials([(k.read(), c.read())])
    port = server.add_secure_port("127.0.0.1:0", creds)
else:
    port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"listening {port}", flush=True)
sys.stdin.read()
server.stop(0)
