"""The agent sees EC2 scheduled events (events/maintenance/scheduled) as a reason to checkpoint and
move, like a spot notice; completed or canceled events and other codes are not (issue 11, fault 5)."""
import json
import threading
import unittest
from http.server import BaseHTTPRequestHandler, HTTPServer

from runctl_agent.imds import Imds


class FakeImds(BaseHTTPRequestHandler):
    scheduled = "[]"

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
        if self.path == "/latest/meta-data/events/maintenance/scheduled":
            body = FakeImds.scheduled.encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(404)
        self.end_headers()


class ScheduledEventTest(unittest.TestCase):
    def setUp(self):
        self.server = HTTPServer(("127.0.0.1", 0), FakeImds)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.imds = Imds("http://127.0.0.1:%d" % self.server.server_port, lambda m: None)

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()

    def test_an_active_retirement_is_a_notice(self):
        FakeImds.scheduled = json.dumps([{
            "NotBefore": "21 Jan 2027 09:00:43 GMT", "Code": "instance-retirement", "Description": "The instance is running on degraded hardware",
            "EventId": "instance-event-0d59937288b749b32", "NotAfter": "21 Jan 2027 09:17:23 GMT", "State": "active",
        }])
        notice, _ = self.imds.poll()
        self.assertEqual(notice, {"action": "instance-retirement", "time": "21 Jan 2027 09:00:43 GMT", "scheduled": True})

    def test_completed_canceled_and_unknown_events_are_not(self):
        FakeImds.scheduled = json.dumps([
            {"Code": "system-reboot", "State": "completed"},
            {"Code": "instance-stop", "State": "canceled"},
            {"Code": "something-new", "State": "active"},
        ])
        self.assertEqual(self.imds.poll(), (None, None))
        FakeImds.scheduled = "[]"
        self.assertEqual(self.imds.poll(), (None, None))


if __name__ == "__main__":
    unittest.main()
