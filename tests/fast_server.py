"""As fast an HTTP target as Python makes: one asyncio process that answers every request on a
keep-alive connection with a fixed 200 and does no other work (no HTTP library, no routing).
Run as its own process; prints its URL. ``--workers N`` forks N such processes on one port
(SO_REUSEPORT), so the target can use every core."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
            b"\r\nok")


class Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        # k6 sends GETs without bodies: one request per blank line
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * count)  # type: ignore[attr-defined]


def serve(sock: socket.socket) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Answer, sock=sock, backlog=1024)
        await server.serve_forever()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    for _ in range(args.workers - 1):
        if os.fork() == 0:
            break  # the children share the listening socket
    serve(sock)


if __name__ == "__main__":
    main()
