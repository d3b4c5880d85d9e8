"""The EC2 instance metadata service, IMDSv2: a session token, then spot/instance-action and the
rebalance recommendation (AWS docs: "Spot Instance interruption notices", "Use IMDSv2")."""

import json
import time
import urllib.error
import urllib.request

IMDS_TIMEOUT_SECONDS = 1.0
IMDS_TOKEN_TTL_SECONDS = 21600

# The metadata service is link-local (169.254.169.254) or, in tests, loopback: a request to it must
# never go through an HTTP proxy (http_proxy in the instance's environment would send it to the
# proxy, which cannot reach the instance's own IMDS, and no spot notice would ever be seen). An
# opener with an empty ProxyHandler ignores http_proxy/HTTP_PROXY/no_proxy altogether.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Imds:
    def __init__(self, base, log):
        self.base = base.rstrip("/")
        self.log = log
        self.token = None
        self.token_at = 0.0
        self.reachable = None
        self.failures = 0
        self.last_error = None

    def _request(self, method, path, headers):
        req = urllib.request.Request(self.base + path, method=method, headers=headers, data=b"" if method == "PUT" else None)
        try:
            with DIRECT.open(req, timeout=IMDS_TIMEOUT_SECONDS) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, b""

    def _get(self, path):
        for _ in range(2):
            if self.token is None or time.monotonic() - self.token_at > IMDS_TOKEN_TTL_SECONDS - 60:
                code, body = self._request("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_SECONDS)})
                if code != 200:
                    raise OSError("IMDS token request returned HTTP %d" % code)
                self.token = body.decode("ascii", "replace").strip()
                self.token_at = time.monotonic()
            code, body = self._request("GET", path, {"X-aws-ec2-metadata-token": self.token})
            if code == 401:
                self.token = None
                continue
            return code, body
        return 401, b""

    # Scheduled events after which the instance is gone or restarted (EC2 user guide, "Scheduled
    # events for your instances"): the agent checkpoints and stops as on a spot notice, so the run
    # moves to another instance before EC2 acts (issue 11, fault 5).
    MOVE_FOR = ("instance-stop", "instance-retirement", "system-reboot", "instance-reboot", "system-maintenance")

    def _scheduled_event(self):
        """{"action": code, "time": NotBefore, "scheduled": True} for the first active scheduled
        event in events/maintenance/scheduled (a JSON list), or None."""
        code, body = self._get("/latest/meta-data/events/maintenance/scheduled")
        if code != 200:
            return None
        try:
            events = json.loads(body.decode("utf-8") or "[]")
        except ValueError:
            return None
        for event in events if isinstance(events, list) else []:
            if not isinstance(event, dict) or event.get("Code") not in self.MOVE_FOR:
                continue
            if event.get("State", "active") != "active":
                continue  # completed or canceled
            return {"action": event["Code"], "time": event.get("NotBefore"), "scheduled": True}
        return None

    def poll(self):
        """(spot notice or None, rebalance recommendation or None). Unreachable IMDS = no notice."""
        try:
            code, body = self._get("/latest/meta-data/spot/instance-action")
            notice = None
            if code == 200:
                try:
                    notice = json.loads(body.decode("utf-8"))
                    if not isinstance(notice, dict):
                        notice = {"action": str(notice)}
                except ValueError:
                    notice = {"action": body.decode("utf-8", "replace").strip() or "terminate"}
            if notice is None:
                notice = self._scheduled_event()
            rebalance = None
            code, body = self._get("/latest/meta-data/events/recommendations/rebalance")
            if code == 200:
                try:
                    rebalance = json.loads(body.decode("utf-8"))
                except ValueError:
                    rebalance = {"noticeTime": body.decode("utf-8", "replace").strip()}
            if self.reachable is not True:
                self.log("IMDS reachable at %s" % self.base)
                self.reachable = True
            self.failures = 0
            return notice, rebalance
        except (OSError, urllib.error.URLError, ValueError) as e:
            self.failures += 1
            self.last_error = str(getattr(e, "reason", None) or e)
            if self.reachable is not False:
                self.log("IMDS at %s unreachable (%s); no spot notices can be seen while it is" % (self.base, e))
                self.reachable = False
            return None, None
