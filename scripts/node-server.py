#!/usr/bin/env python3
"""A tiny HTTP server for demos and tests: answers every request on the VIP
with the node id, so a client can see which node accepted its connection."""
import socketserver
import sys
import time

vip, port, node = sys.argv[1], int(sys.argv[2]), sys.argv[3]
body = f"node {node}\n".encode()


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(5)
        try:
            self.request.recv(4096)
            self.request.sendall(
                b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


# The agent puts the VIP on lo when it starts: wait for it (10 s at most).
for attempt in range(100):
    try:
        server = Server((vip, port), Handler)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(f"node-server: cannot bind {vip}:{port}")
server.serve_forever()
