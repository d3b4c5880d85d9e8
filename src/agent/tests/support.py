"""Fixtures the agent's unit tests share: a checkpoint folder beside a state folder and file://
storage, and a fake IMDSv2 on loopback."""
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from runctl_agent.storage import FileStorage


def checkpoint_dirs(test):
    """Sets on `test` (a unittest.TestCase): tmp (removed at cleanup), root (the job's checkpoint
    folder), state (the agent's state folder), storage (FileStorage of tmp/storage) and logs (a list
    the code under test may log into)."""
    test.tmp = tempfile.TemporaryDirectory()
    test.addCleanup(test.tmp.cleanup)
    test.root = os.path.join(test.tmp.name, "ckpt")
    test.state = os.path.join(test.tmp.name, "state")
    os.makedirs(test.root)
    os.makedirs(test.state)
    test.storage = FileStorage("file://" + os.path.join(test.tmp.name, "storage"))
    test.logs = []


def serve_imds(test, paths):
    """Starts a fake IMDSv2 for `test`, stopped at cleanup, and returns its base URL. PUT (the token
    request) answers "token"; a GET carrying that token answers paths[path]() with 200, or 404 for
    a path not in `paths`; a GET without it answers 401, as IMDSv2 does."""

    class Imds(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_PUT(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"token")

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") != "token":
                self.send_response(401)
                self.end_headers()
                return
            body = paths.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body().encode())

    server = HTTPServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    test.addCleanup(server.server_close)
    test.addCleanup(server.shutdown)
    return "http://127.0.0.1:%d" % server.server_port
