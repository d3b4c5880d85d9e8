"""The agent sees EC2 scheduled events (events/maintenance/scheduled) as a reason to checkpoint and
move, like a spot notice; completed or canceled events and other codes are not (issue 11, fault 5)."""
import json
import unittest

from runctl_agent.imds import Imds
from tests.support import serve_imds


class ScheduledEventTest(unittest.TestCase):
    def setUp(self):
        self.scheduled = "[]"
        url = serve_imds(self, {"/latest/meta-data/events/maintenance/scheduled": lambda: self.scheduled})
        self.imds = Imds(url, lambda m: None)

    def test_an_active_retirement_is_a_notice(self):
        self.scheduled = json.dumps([{
            "NotBefore": "21 Jan 2027 09:00:43 GMT", "Code": "instance-retirement", "Description": "The instance is running on degraded hardware",
            "EventId": "instance-event-0d59937288b749b32", "NotAfter": "21 Jan 2027 09:17:23 GMT", "State": "active",
        }])
        notice, _ = self.imds.poll()
        self.assertEqual(notice, {"action": "instance-retirement", "time": "21 Jan 2027 09:00:43 GMT", "scheduled": True})

    def test_completed_canceled_and_unknown_events_are_not(self):
        self.scheduled = json.dumps([
            {"Code": "system-reboot", "State": "completed"},
            {"Code": "instance-stop", "State": "canceled"},
            {"Code": "something-new", "State": "active"},
        ])
        self.assertEqual(self.imds.poll(), (None, None))
        self.scheduled = "[]"
        self.assertEqual(self.imds.poll(), (None, None))


if __name__ == "__main__":
    unittest.main()
