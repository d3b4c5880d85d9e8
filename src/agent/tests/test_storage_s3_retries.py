"""The s3:// backend and secret resolution retry the AWS CLI's transient failures, including
"Unable to locate credentials", which on EC2 means the CLI's credential fetch from the metadata
service failed this time (issue 11, fault 4). The `aws` on PATH here is a stand-in that fails its
first calls exactly as the AWS CLI v2 does (stderr text, exit status 253) and then does the copy."""
import os
import stat
import tempfile
import unittest
from unittest import mock

from runctl_agent import secrets, storage
from runctl_agent.errors import AgentFailure
from runctl_agent.storage import S3Storage, StorageError

FAKE_AWS = r"""#!/bin/sh
# Fails the first $FAIL_FIRST calls like the AWS CLI without credentials, then acts.
n=$(cat "$CALLS" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$CALLS"
echo "$*" >> "$CALLS.log"
if [ "$n" -le "$FAIL_FIRST" ]; then
  echo "" >&2
  echo "$FAILURE" >&2
  exit 253
fi
case "$1 $2" in
  "s3 cp") [ "$3" = "--only-show-errors" ] && shift; cp "$3" "$BUCKET_DIR/$(basename "$4")" ;;
  "ssm get-parameter") echo "s3cr3t-value" ;;
esac
"""

SKIPPING_AWS = r"""#!/bin/sh
# `aws s3 cp --recursive` of a folder holding a link to a deleted file: AWS CLI v1's words, exit 2.
n=$(cat "$CALLS" 2>/dev/null || echo 0); echo $((n + 1)) > "$CALLS"
echo "warning: Skipping file $5/gone. File does not exist." >&2
exit 2
"""

NO_CREDENTIALS = 'Unable to locate credentials. You can configure credentials by running "aws configure".'


class CliRetryTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        bindir = os.path.join(self.tmp.name, "bin")
        os.makedirs(bindir)
        fake = os.path.join(bindir, "aws")
        with open(fake, "w") as f:
            f.write(FAKE_AWS)
        os.chmod(fake, os.stat(fake).st_mode | stat.S_IEXEC)
        self.bucket = os.path.join(self.tmp.name, "bucket")
        os.makedirs(self.bucket)
        self.calls = os.path.join(self.tmp.name, "calls")
        self.env = mock.patch.dict(os.environ, {
            "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "CALLS": self.calls,
            "BUCKET_DIR": self.bucket,
            "FAILURE": NO_CREDENTIALS,
        })
        self.env.start()
        # No real waiting: the backoff is the code's, the clock is not the test's business.
        self.sleep = mock.patch.object(storage.time, "sleep")
        self.sleep.start()
        self.logged = []

    def tearDown(self):
        self.sleep.stop()
        self.env.stop()
        self.tmp.cleanup()

    def checkpoint(self):
        path = os.path.join(self.tmp.name, "model.pt")
        with open(path, "wb") as f:
            f.write(b"weights" * 1000)
        return path

    def test_the_final_upload_completes_after_credential_hiccups(self):
        os.environ["FAIL_FIRST"] = "3"
        s3 = S3Storage("s3://bucket/prefix", None, "us-east-1", self.logged.append)
        s3.put_file("runs/r/g1/checkpoints/00000007/model.pt", self.checkpoint())
        with open(os.path.join(self.bucket, "model.pt"), "rb") as f:
            self.assertEqual(f.read(), b"weights" * 1000)
        with open(self.calls) as f:
            self.assertEqual(f.read().strip(), "4")
        self.assertEqual(len(self.logged), 3)
        self.assertIn("Unable to locate credentials", self.logged[0])
        self.assertIn("retrying", self.logged[0])

    def test_gives_up_after_its_bounded_attempts_with_the_cli_message(self):
        os.environ["FAIL_FIRST"] = "99"
        s3 = S3Storage("s3://bucket/prefix", None, "us-east-1", self.logged.append)
        with self.assertRaises(StorageError) as raised:
            s3.put_file("k", self.checkpoint())
        self.assertIn("after %d attempts" % S3Storage.ATTEMPTS, str(raised.exception))
        self.assertIn("Unable to locate credentials", str(raised.exception))

    def test_access_denied_is_not_retried(self):
        os.environ["FAIL_FIRST"] = "99"
        os.environ["FAILURE"] = "An error occurred (AccessDenied) when calling the PutObject operation: Access Denied"
        s3 = S3Storage("s3://bucket/prefix", None, "us-east-1", self.logged.append)
        with self.assertRaises(StorageError):
            s3.put_file("k", self.checkpoint())
        with open(self.calls) as f:
            self.assertEqual(f.read().strip(), "1")

    def test_a_secret_resolves_after_a_credential_hiccup(self):
        os.environ["FAIL_FIRST"] = "2"
        with mock.patch.object(secrets.time, "sleep"):
            got = secrets.resolve_secrets({"secrets": {"HF_TOKEN": "ssm:/team/hf"}, "region": "us-east-1"}, self.logged.append)
        self.assertEqual(got, {"HF_TOKEN": "s3cr3t-value"})

    def test_a_missing_parameter_is_not_retried(self):
        os.environ["FAIL_FIRST"] = "99"
        os.environ["FAILURE"] = "An error occurred (ParameterNotFound) when calling the GetParameter operation:"
        with mock.patch.object(secrets.time, "sleep"):
            with self.assertRaises(AgentFailure):
                secrets.resolve_secrets({"secrets": {"HF_TOKEN": "ssm:/team/hf"}}, self.logged.append)
        with open(self.calls) as f:
            self.assertEqual(f.read().strip(), "1")


if __name__ == "__main__":
    unittest.main()


class SkippedFileTest(unittest.TestCase):
    def test_a_file_the_cli_skips_as_missing_is_returned_not_retried(self):
        with tempfile.TemporaryDirectory() as tmp:
            bindir = os.path.join(tmp, "bin")
            os.makedirs(bindir)
            fake = os.path.join(bindir, "aws")
            with open(fake, "w") as f:
                f.write(SKIPPING_AWS)
            os.chmod(fake, 0o755)
            calls = os.path.join(tmp, "calls")
            with mock.patch.dict(os.environ, {"PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "CALLS": calls}):
                s3 = S3Storage("s3://bucket/prefix", None, "us-east-1", lambda message: None)
                self.assertEqual(s3.put_tree("contents/", "/tmp/up"), ["/tmp/up/gone"])
            with open(calls) as f:
                self.assertEqual(f.read().strip(), "1")
