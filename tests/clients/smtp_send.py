#!/usr/bin/env python3
"""Sends one mail with Python's smtplib, for tests/tcp_checks.rs,
tests/tcp_examples.rs and trying examples/tcp/mail.lua.

    smtp_send.py HOST PORT SUBJECT

Prints the server's banner as `banner CODE TEXT`, then the answer to the
mail's data as `sent CODE TEXT` (`sent 250 delivered to A` from
smtp_server.py), and exits 0; on any error prints `error: ...` and exits 1.
"""
import smtplib
import sys

HOST, PORT, SUBJECT = sys.argv[1], int(sys.argv[2]), sys.argv[3]

try:
    s = smtplib.SMTP(timeout=20)
    code, text = s.connect(HOST, PORT)
    print(f"banner {code} {text.decode()}", flush=True)
    s.ehlo("client.test")
    s.mail("alice@client.test")
    s.rcpt("bob@example.test")
    code, text = s.data(
        f"From: alice@client.test\r\nTo: bob@example.test\r\nSubject: {SUBJECT}\r\n\r\nHello through Pocket.\r\n"
    )
    print(f"sent {code} {text.decode()}", flush=True)
    s.quit()
except Exception as e:  # the test shows what went wrong
    print(f"error: {e!r}", flush=True)
    sys.exit(1)
