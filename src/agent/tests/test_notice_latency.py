"""What stands between a spot notice and the controller launching the replacement (issue 12's
prelaunch): the IMDS poll must not wait behind a slow storage read of the control object, and the
"interrupting" status must not wait behind the heartbeat's log shipping. On a loaded instance (or
while S3 throttles and the AWS CLI backs off) each storage call takes seconds; the notice gives 120."""
import json
import threading
import time
import types
import unittest

from runctl_agent.agent import Agent
from tests.support import serve_imds


NOTICE = {"/latest/meta-data/spot/instance-action": lambda: json.dumps({"action": "terminate", "time": "2030-01-01T00:02:00Z"})}


def fake_agent(**extra):
    agent = types.SimpleNamespace(
        cfg={"noticePollSeconds": 0.05, "heartbeatSeconds": 0.05},
        threads_stop=threading.Event(),
        stop_event=threading.Event(),
        publish_wake=threading.Event(),
        stop_request=None,
        restarted_at=None,
        phase_unpublished=False,
        log=lambda _m: None,
        faults=types.SimpleNamespace(report=lambda *a: None, clear=lambda *a: None),
        set_status=lambda **_f: None,
    )
    agent.check_imds = lambda imds: Agent.check_imds(agent, imds)
    agent.request_stop = lambda req: Agent.request_stop(agent, req)
    for k, v in extra.items():
        setattr(agent, k, v)
    return agent


class NoticeLatency(unittest.TestCase):
    def test_a_slow_control_read_does_not_hold_up_the_imds_poll(self):
        url = serve_imds(self, NOTICE)
        control_started = threading.Event()

        def slow_control():
            control_started.set()
            time.sleep(30)  # a storage read stuck in the AWS CLI's retries

        agent = fake_agent(check_control=slow_control)
        agent.cfg["imdsUrl"] = url
        self.addCleanup(agent.threads_stop.set)
        threading.Thread(target=Agent.control_loop, args=(agent,), daemon=True).start()
        self.assertTrue(control_started.wait(10))
        threading.Thread(target=Agent.watch_loop, args=(agent,), daemon=True).start()
        # The notice is seen while the control read is still stuck.
        self.assertTrue(agent.stop_event.wait(10), "the notice was not seen while the control read was slow")
        self.assertEqual(agent.stop_request.kind, "interrupt")

    def test_a_phase_change_is_published_before_the_beats_log_shipping(self):
        calls = []
        agent = fake_agent(
            ship_logs=lambda: calls.append("ship_logs"),
            refresh_log_view=lambda: calls.append("refresh"),
            progress=types.SimpleNamespace(publish=lambda: calls.append("progress")),
        )

        def publish_status():
            calls.append("status:%s" % ("new phase" if agent.phase_unpublished else "beat"))
            agent.phase_unpublished = False
            if len(calls) >= 5:
                agent.threads_stop.set()

        agent.publish_status = publish_status
        agent.cfg["heartbeatSeconds"] = 0.0  # every wake is also a beat that is due
        agent.phase_unpublished = True
        agent.publish_wake.set()
        Agent.heartbeat_loop(agent)
        self.assertEqual(calls[:2], ["status:new phase", "ship_logs"])


if __name__ == "__main__":
    unittest.main()
