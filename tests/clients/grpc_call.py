#!/usr/bin/env python3
"""A real gRPC client (grpcio) for tests/grpc.rs: calls METHOD of
test.Echo at TARGET (an insecure channel: h2c with prior knowledge) with
PAYLOAD, and prints what came back, a line each:

  message <text>      each response message
  status <CODE>       the call's status (OK, NOT_FOUND, ...)
  details <text>      the status details, if any

    grpc_call.py TARGET unary|fail|stream PAYLOAD
"""
import sys

import grpc

target, kind, payload = sys.argv[1], sys.argv[2], sys.argv[3].encode()
ident = lambda b: b
with grpc.insecure_channel(target) as channel:
    try:
        if kind == "stream":
            call = channel.unary_stream("/test.Echo/Stream", ident, ident)(payload, timeout=20)
            for m in call:
                print(f"message {m.decode()}", flush=True)
            code, details = call.code(), call.details()
        else:
            method = "/test.Echo/Unary" if kind == "unary" else "/test.Echo/Fail"
            reply, call = channel.unary_unary(method, ident, ident).with_call(payload, timeout=20)
            print(f"message {reply.decode()}", flush=True)
            code, details = call.code(), call.details()
    except grpc.RpcError as e:
        code, details = e.code(), e.details()
    print(f"status {code.name}", flush=True)
    if details:
        print(f"details {details}", flush=True)
