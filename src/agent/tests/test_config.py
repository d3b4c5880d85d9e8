import json
import os
import tempfile
import unittest

from runctl_agent.config import ConfigError, load_config, run_prefix

VALID = {
    "run": "r", "generation": 1, "attempt": 1, "resuming": False, "storage": "file:///tmp/s",
    "bundleKey": "bundles/" + "0" * 64 + ".tar.gz", "stateDir": "/tmp/st", "workDir": "/tmp/w",
    "checkpointDir": "/tmp/c", "command": "python train.py", "env": {}, "secrets": {},
    "syncIntervalSeconds": 5, "keep": 2, "signal": "SIGTERM", "gracePeriodSeconds": 10,
    "imdsUrl": "http://127.0.0.1:1", "heartbeatSeconds": 1, "noticePollSeconds": 1,
}


class ConfigTest(unittest.TestCase):
    def load(self, doc):
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc))
        try:
            return load_config(path)
        finally:
            os.unlink(path)

    def test_a_valid_config_loads(self):
        self.assertEqual(self.load(VALID)["keep"], 2)

    def test_the_run_uid_picks_the_storage_prefix_and_a_record_before_uids_keeps_the_old_one(self):
        uid = "6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e"
        self.assertEqual(run_prefix(self.load(dict(VALID, uid=uid))), "runs/r/" + uid)
        self.assertEqual(run_prefix(self.load(VALID)), "runs/r")
        with self.assertRaises(ConfigError) as err:
            self.load(dict(VALID, uid="../x"))
        self.assertIn("field 'uid' must be a run uid", str(err.exception))

    def test_each_bad_field_is_named_with_what_would_be_valid(self):
        cases = [
            ("keep", 0, "field 'keep' must be an integer >= 1, got 0"),
            ("keep", True, "field 'keep' must be an integer >= 1, got true"),
            ("storage", "gs://b", "file:///absolute/path or s3://bucket/prefix"),
            ("signal", "SIGSTOP", "one of SIGTERM"),
            ("workDir", "work", "field 'workDir' must be an absolute path"),
            ("secrets", {"A": "vault:x"}, "ssm:/parameter/path"),
            ("bundleKey", "../x", "a storage key"),
            ("progressPattern", "iter (?P<step>[0-9]+", "field 'progressPattern' must be a Python regular expression"),
        ]
        for field, value, message in cases:
            with self.assertRaises(ConfigError) as cm:
                self.load(dict(VALID, **{field: value}))
            self.assertIn(message, str(cm.exception))

    def test_missing_field_and_bad_json(self):
        doc = dict(VALID)
        del doc["command"]
        with self.assertRaisesRegex(ConfigError, "missing required field 'command'"):
            self.load(doc)
        with self.assertRaisesRegex(ConfigError, "not valid JSON"):
            self.load("{")
        with self.assertRaisesRegex(ConfigError, "must be a JSON object"):
            self.load("[]")


if __name__ == "__main__":
    unittest.main()
