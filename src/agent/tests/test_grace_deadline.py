"""How long the agent waits for the job after a notice: the grace period, cut short so the final
upload ends before the termination time the notice gives (issue 9), and never so short that a
short lead kills the job before it can save."""
import time
import types
import unittest

from runctl_agent.agent import Agent, StopRequest


class FakeCheckpoints(object):
    def __init__(self, upload_seconds):
        self.upload_seconds = upload_seconds

    def pending_bytes(self):
        return 0

    def final_wait_seconds(self, _pending):
        return self.upload_seconds


def wait_for(lead_seconds, grace=90, upload=0.0):
    """Seconds the agent would wait after the signal, for a notice `lead_seconds` before termination."""
    agent = types.SimpleNamespace(cfg={"gracePeriodSeconds": grace}, checkpoints=FakeCheckpoints(upload))
    req = StopRequest("interrupt", "spot", "spot notice", terminate_at=time.time() + lead_seconds, terminate_iso="T")
    deadline, _why = Agent.grace_deadline(agent, req)
    return deadline - time.monotonic()


class GraceDeadline(unittest.TestCase):
    def test_a_long_notice_leaves_the_whole_grace_period(self):
        self.assertAlmostEqual(wait_for(120, grace=60), 60, delta=1)

    def test_ec2s_two_minutes_end_the_wait_five_seconds_plus_the_upload_before_termination(self):
        self.assertAlmostEqual(wait_for(120, grace=200, upload=15), 100, delta=1)

    def test_a_short_lead_still_gives_the_job_most_of_it_to_save(self):
        # A 3 s lead (a scaled-down notice): a fixed 5 s margin would kill the job at once.
        waited = wait_for(3, grace=10)
        self.assertGreater(waited, 2.0)
        self.assertLess(waited, 3.0)

    def test_an_upload_longer_than_the_lead_ends_the_wait_at_once(self):
        self.assertLessEqual(wait_for(10, grace=60, upload=30), 0.05)

    def test_without_a_termination_time_the_grace_period_decides(self):
        agent = types.SimpleNamespace(cfg={"gracePeriodSeconds": 7}, checkpoints=FakeCheckpoints(0))
        deadline, _ = Agent.grace_deadline(agent, StopRequest("stop", "suspend", "suspend"))
        self.assertAlmostEqual(deadline - time.monotonic(), 7, delta=1)


if __name__ == "__main__":
    unittest.main()
