#!/usr/bin/env python3
"""An SMTP server for tests/tcp_checks.rs, tests/tcp_examples.rs and trying
examples/tcp/mail.lua, made with Python's `aiosmtpd`
(PyPI, tests/setup/requirements.txt).

    smtp_server.py NAME [PORT [CERT KEY]]

Prints `listening PORT` once it listens on 127.0.0.1 (PORT, or a free
port when 0 or absent), then serves until killed. With CERT and KEY (PEM
files) it speaks TLS from the first byte (SMTPS, as on port 465). Its banner is
`220 NAME ESMTP pocket-test`. Each mail it accepts is printed as one line,
`mail NAME from=SENDER to=RCPT,... bytes=N subject=SUBJECT`, and answered
`250 delivered to NAME`.
"""
import asyncio
import email
import ssl
import sys

from aiosmtpd.smtp import SMTP

NAME = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
TLS = None
if len(sys.argv) > 4:
    TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLS.load_cert_chain(sys.argv[3], sys.argv[4])


class Handler:
    async def handle_DATA(self, server, session, envelope):
        subject = email.message_from_bytes(envelope.content).get("Subject", "")
        print(
            f"mail {NAME} from={envelope.mail_from} to={','.join(envelope.rcpt_tos)}"
            f" bytes={len(envelope.content)} subject={subject}",
            flush=True,
        )
        return f"250 delivered to {NAME}"


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Handler(), hostname=NAME, ident="ESMTP pocket-test"),
        "127.0.0.1",
        PORT,
        reuse_address=True,
        ssl=TLS,
    )
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


asyncio.run(main())
