"""A real SMTP server for voltool-notify's mail tests: aiosmtpd's Controller on 127.0.0.1 and
a free port, writing each message it receives to DIR/N.eml. Prints `PORT` on stdout once it
listens; stops when stdin closes (the test ends or dies).

    python smtp_server.py DIR
"""
import os
import socket
import sys

from aiosmtpd.controller import Controller


class Save:
    def __init__(self, out):
        self.out = out
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.out, f"{self.count}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(f"X-Envelope-From: {envelope.mail_from}\r\n".encode())
            f.write(f"X-Envelope-To: {','.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    out = sys.argv[1]
    port = free_port()
    controller = Controller(Save(out), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()


main()
