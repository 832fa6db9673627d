#!/usr/bin/env python3
"""A TLS origin for tests/tcp_sni.rs, behind Pocket's TLS passthrough: it
holds its own certificate (Pocket never sees the key). Prints
"listening PORT" once it accepts, "accepted N" for each TCP connection
(so a test can tell that none arrived), and after each handshake writes
"origin NAME sni=SNI alpn=PROTO" to the client and closes.

    sni_origin.py NAME CERT KEY
"""
import socket
import ssl
import sys
import threading

name, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2", "http/1.1"])
seen = {}


def on_sni(sock, server_name, _ctx):
    seen[id(sock)] = server_name or "-"


ctx.sni_callback = on_sni


def serve(conn):
    try:
        conn.settimeout(30)
        tls = ctx.wrap_socket(conn, server_side=True)
        sni = seen.pop(id(tls), None) or seen.pop(id(conn), "-")
        line = f"origin {name} sni={sni} alpn={tls.selected_alpn_protocol()}\n"
        tls.sendall(line.encode())
        try:
            tls.unwrap()  # close_notify, so the client sees a clean end
        except (OSError, ssl.SSLError):
            pass
        conn.close()
    except Exception as e:  # a client that gave up: nothing to answer
        print(f"error {e}", flush=True)


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(f"listening {listener.getsockname()[1]}", flush=True)
accepted = 0
while True:
    conn, _ = listener.accept()
    accepted += 1
    print(f"accepted {accepted}", flush=True)
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
