#!/usr/bin/env python3
"""A real HTTPS origin for tests/upstream_tls.rs: Python's http.server
wrapped in ssl. Prints "listening PORT" once it accepts, and "sni NAME" for
each handshake (what the client sent as SNI, "-" for none). Answers every
GET with "tls origin: PATH sni=NAME".

    tls_origin.py CERT KEY
"""
import http.server
import ssl
import sys
import threading

cert, key = sys.argv[1], sys.argv[2]
last_sni = {"name": "-"}


def on_sni(sock, name, ctx):
    last_sni["name"] = name or "-"
    print(f"sni {last_sni['name']}", flush=True)


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["http/1.1"])
ctx.sni_callback = on_sni


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"tls origin: {self.path} sni={last_sni['name']}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        sock, addr = super().get_request()
        return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        # A client that gave up on our certificate: no traceback.
        print(f"handshake or request failed: {sys.exc_info()[1]}", flush=True)


srv = Server(("127.0.0.1", 0), Handler)
print(f"listening {srv.server_address[1]}", flush=True)
threading.Thread(target=srv.serve_forever, daemon=True).start()
sys.stdin.read()  # Ends when the test closes our stdin (or dies).
