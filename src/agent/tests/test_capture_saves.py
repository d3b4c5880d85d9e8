"""Which saves a sync publishes, with real job processes (issue 9; the sibling inputs a new user's
break test found): a save the stop signal interrupts, a save killed with its writer, a save done by
a child process, a pointer written before the file it names, a declared save overtaken by the
next one, and a log appended beside the checkpoint. Each job runs in its own session, as the
agent starts it, and the agent's own Checkpoints.sync decides (capture.py, checkpoints.py)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import types
import unittest
from unittest import mock

from runctl_agent import checkpoints as checkpoints_module
from runctl_agent.checkpoint_store import CheckpointStore
from runctl_agent.checkpoints import Checkpoints
from tests.support import checkpoint_dirs

SLOW_WRITER = r"""
import os, sys, time
path, chunks, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with open(path, "wb") as f:  # torch.save: truncate in place, then write for a while
    open(sys.argv[4], "w").close()  # tell the test the file is open
    for i in range(chunks):
        f.write(b"x" * 65536)
        f.flush()
        time.sleep(pause)
"""

MAPPING_WRITER = r"""
import ctypes, mmap, os, sys, time
path, size, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, size)
addr = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
os.close(fd)  # as torch.from_file(shared=True) does: the mapping outlives the descriptor
ctypes.memset(addr, 1, size)
open(ready, "w").close()
time.sleep(30)
"""


class JobHarness(unittest.TestCase):
    """The agent's Checkpoints over file:// storage, with real job processes in their own sessions."""

    def setUp(self):
        checkpoint_dirs(self)
        cfg = {"checkpointDir": self.root, "syncIntervalSeconds": 1, "storage": self.storage.root, "run": "r",
               "generation": 1, "attempt": 1, "keep": 100, "resuming": False, "contentGraceSeconds": 0}
        self.ckpts = Checkpoints(cfg, self.storage, self.state, {"run": "r", "generation": 1, "attempt": 1}, self.logs.append,
                                 lambda text: None, lambda publish=False, **fields: None, lambda: False, lambda: None)
        self.ckpts.store = CheckpointStore(self.storage, "r", 1, 1, self.state, self.logs.append, grace_seconds=0)
        self.capture = self.ckpts.capture
        self.capture.quiet = 0.2
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def job(self, code, *args):
        """A job in its own session (its sid is its pid), as the agent starts it."""
        p = subprocess.Popen([sys.executable, "-c", code] + [str(a) for a in args], start_new_session=True)
        self.procs.append(p)
        return p

    def wait_for(self, what, check, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.02)
        self.fail("timed out waiting for " + what)

    def write(self, rel, data):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def job_log(self):
        """The job's log, which the agent reads declarations from (created on first use)."""
        log = os.path.join(self.tmp.name, "job.log")
        if not os.path.exists(log):
            open(log, "w").close()
            self.ckpts.start_watching(log, 0)
        return log

    def job_declares(self, step):
        """The job prints its declaration line, and the agent's declaration thread reads it now
        (Checkpoints.poll_declarations); the checkpoint loop takes it at its next tick."""
        with open(self.job_log(), "a") as f:
            f.write("RUNCTL_CHECKPOINT_SAVED step=%d\n" % step)
        self.assertTrue(self.ckpts.poll_declarations())

    def declared_then_written(self, step, saved, after):
        """The job wrote `saved` ({path: bytes}) and declared `step`; a later clock tick, it wrote
        `after` (the next save began); the checkpoint loop took the declaration only once every
        file was quiet, and synced. Returns the sync's CheckpointRef."""
        for rel, data in saved.items():
            self.write(rel, data)
        self.job_declares(step)
        time.sleep(0.01)  # a later mtime, even on a coarse clock
        for rel, data in after.items():
            self.write(rel, data)
        self.quiet()
        self.assertTrue(self.ckpts.tick(None))
        return self.ckpts.sync(final=False, sid=os.getpid())

    def quiet(self):
        time.sleep(self.capture.quiet + 0.05)

    def published(self):
        """[(step, {path: size})] of every published checkpoint, oldest first."""
        out = []
        for cid in self.ckpts.store.ids()[2]:
            m = self.ckpts.store.manifest(1, cid, cached=False)
            out.append((m.get("step"), dict((f["path"], f["size"]) for f in m["files"])))
        return out

    def slow_save(self, rel, chunks, pause):
        opened = os.path.join(self.tmp.name, "opened")
        remove = [opened]
        for r in remove:
            if os.path.exists(r):
                os.unlink(r)
        p = self.job(SLOW_WRITER, os.path.join(self.root, rel), chunks, pause, opened)
        self.wait_for("the save to open its file", lambda: os.path.exists(opened))
        return p


class SaveTest(JobHarness):
    def test_a_save_killed_with_its_writer_is_not_published(self):
        # Input 1's sibling: the grace period ends during a save; the writer is SIGKILLed.
        self.write("ckpt.pt", b"c" * 65536 * 8)
        self.quiet()
        self.assertIsNotNone(self.ckpts.sync(final=False, sid=os.getpid()))
        p = self.slow_save("ckpt.pt", 8, 0.5)
        self.ckpts.tick(p.pid)
        self.capture.signalled(p.pid)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        self.ckpts.tick(p.pid)  # the look after the kill, while the job counts as running
        self.assertIsNone(self.ckpts.sync(final=False, sid=p.pid))
        self.assertIsNone(self.ckpts.sync(final=True, clean_exit=False))
        self.assertEqual(self.published(), [(None, {"ckpt.pt": 65536 * 8})])

    def test_a_save_the_stop_signal_interrupts_is_not_published_even_after_exit_0(self):
        # A handler that exits at once (sys.exit(0)) closes the half-written file.
        self.write("ckpt.pt", b"c" * 65536 * 8)
        self.quiet()
        self.ckpts.sync(final=False, sid=os.getpid())
        opened = os.path.join(self.tmp.name, "opened")
        p = self.job("import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n" + SLOW_WRITER,
                     os.path.join(self.root, "ckpt.pt"), 8, 0.5, opened)
        self.wait_for("the save to open its file", lambda: os.path.exists(opened))
        self.ckpts.tick(p.pid)
        self.capture.signalled(p.pid)
        os.kill(p.pid, signal.SIGTERM)
        self.assertEqual(p.wait(), 0)
        self.assertIsNone(self.ckpts.sync(final=True, clean_exit=True))
        self.assertEqual(len(self.published()), 1)
        self.assertRegex(self.ckpts.last_left_out[0]["reason"], "stop signal")

    def test_a_save_declared_after_the_signal_is_published(self):
        self.write("ckpt.pt", b"old")
        self.quiet()
        self.ckpts.sync(final=False, sid=os.getpid())
        p = self.slow_save("ckpt.pt", 2, 0.05)
        self.capture.signalled(p.pid)
        p.wait()
        self.ckpts.declared = (7, "line")
        self.capture.declared()
        ref = self.ckpts.sync(final=True, clean_exit=True)
        self.assertEqual((ref["step"], ref["bytes"]), (7, 65536 * 2))

    def test_a_save_a_child_finishes_after_the_signal_and_the_job_declares_is_published(self):
        job = self.job("import time; time.sleep(30)")
        self.write("ckpt.pt", b"old")
        self.quiet()
        self.ckpts.sync(final=False, sid=job.pid)
        self.capture.signalled(job.pid)
        p = self.slow_save("ckpt.pt", 2, 0.05)  # the handler saves through a child process
        self.ckpts.tick(p.pid)
        self.assertEqual(p.wait(), 0)
        self.ckpts.tick(p.pid)  # the writer is gone: suspect until the job says the save is whole
        self.assertIsNone(self.ckpts.sync(final=False, sid=job.pid))
        self.ckpts.declared = (9, "line")
        self.capture.declared()
        ref = self.ckpts.sync(final=False, sid=job.pid)
        self.assertEqual((ref["step"], ref["bytes"]), (9, 65536 * 2))

    def test_a_file_a_child_process_writes_and_closes_is_published(self):
        # `cp`, `tar` or a save subprocess that exits 0 while the job runs is not a kill.
        job = self.job("import time; time.sleep(30)")
        p = self.slow_save("ckpt.pt", 2, 0.05)
        self.ckpts.tick(job.pid)
        self.ckpts.tick(p.pid)
        self.assertEqual(p.wait(), 0)
        self.ckpts.tick(p.pid)
        self.ckpts.declared = (5, "line")
        self.capture.declared()
        ref = self.ckpts.sync(final=False, sid=job.pid)
        self.assertEqual((ref["step"], ref["bytes"]), (5, 65536 * 2))

    def test_a_link_to_a_file_still_being_written_holds_the_sync_back(self):
        # Lightning's save_last="link": the new epoch=…-step=N.ckpt, then last.ckpt pointing at it.
        self.write("epoch=0-step=90.ckpt", b"a" * 100)
        os.symlink("epoch=0-step=90.ckpt", os.path.join(self.root, "last.ckpt"))
        self.quiet()
        self.assertEqual(self.ckpts.sync(final=False, sid=os.getpid())["step"], 90)
        p = self.slow_save("epoch=1-step=100.ckpt", 6, 0.1)
        os.unlink(os.path.join(self.root, "last.ckpt"))
        os.symlink("epoch=1-step=100.ckpt", os.path.join(self.root, "last.ckpt"))
        self.assertIsNone(self.ckpts.sync(final=False, sid=p.pid))
        p.wait()
        self.quiet()
        ref = self.ckpts.sync(final=False, sid=p.pid)
        self.assertEqual(ref["step"], 100)
        for step, files in self.published():
            self.assertIn("epoch=%d-step=%d.ckpt" % (0 if step == 90 else 1, step), files)

    def test_a_declared_save_overtaken_by_the_next_one_is_not_published_under_its_step(self):
        self.write("model.bin", b"model step=1\n")
        self.write("optim.bin", b"optim step=1\n")
        self.ckpts.declared = (1, "line")
        self.capture.declared()
        p = self.slow_save("model.bin", 4, 0.1)  # step 2's save began before the sync
        self.assertIsNone(self.ckpts.sync(final=False, sid=p.pid))
        p.wait()
        self.quiet()
        ref = self.ckpts.sync(final=False, sid=p.pid)
        self.assertIsNone(ref.get("step"))  # holds step 2's model: not "step 1"
        self.assertTrue(any("the save declared at step 1 could not be published: model.bin is open for writing" in line
                            for line in self.logs))

    def test_a_save_declared_before_its_file_was_closed_does_not_give_a_later_checkpoint_an_older_step(self):
        # break13: the job declared step 1 with model.pt still open, then closed it and exited 0.
        self.write("config.json", b"{}")
        self.ckpts.declared = (0, "line")
        self.capture.declared()
        self.assertEqual(self.ckpts.sync(final=False, sid=os.getpid())["step"], 0)
        p = self.slow_save("model.pt", 4, 0.1)
        self.ckpts.declared = (1, "line")
        self.capture.declared()
        self.assertIsNone(self.ckpts.sync(final=False, sid=p.pid))
        self.assertEqual(p.wait(), 0)
        ref = self.ckpts.sync(final=True, clean_exit=True)
        self.assertIn("model.pt", [f["path"] for f in self.ckpts.store.manifest(1, ref["id"], cached=False)["files"]])
        self.assertIsNone(ref.get("step"))  # not step 0, which did not hold model.pt

    def test_a_file_rewritten_after_the_declaration_was_seen_takes_the_step_away(self):
        # break14: the job declared step 1, then rewrote its state file at once (save 2 began)
        # while the checkpoint loop was busy storing a large file; "step 1" held step 2's state.
        self.write("model.bin", b"model 1")
        self.write("state.json", b'{"step": 1}')
        self.job_declares(1)  # the declaration thread sees it now
        time.sleep(0.01)  # a later mtime, even on a coarse clock
        self.write("state.json", b'{"step": 2}')
        self.assertTrue(self.ckpts.tick(None))  # the loop gets to it only now
        self.assertIsNone(self.ckpts.sync(final=False, sid=os.getpid()))  # state.json is not quiet yet
        self.assertTrue(any("the save declared at step 1 could not be published: state.json changed" in line for line in self.logs))
        self.quiet()
        ref = self.ckpts.sync(final=False, sid=os.getpid())
        self.assertIsNone(ref.get("step"))
        self.assertEqual([step for step, _ in self.published()], [None])

    def test_a_file_rewritten_after_the_declaration_and_quiet_by_the_sync_takes_the_step_away(self):
        # The loop got to the declaration only after the rewritten file was quiet (it was storing
        # a large file ahead): the file would be published, under the declared step, with save 2's bytes.
        ref = self.declared_then_written(1, {"model.bin": b"model 1", "state.json": b'{"step": 1}'}, {"state.json": b'{"step": 2}'})
        self.assertIsNone(ref.get("step"))
        self.assertTrue(any("the save declared at step 1 could not be published: state.json changed after the declaration"
                            in line for line in self.logs))

    def test_the_next_hugging_face_folder_begun_after_a_declaration_does_not_take_its_step(self):
        # checkpoint-20/ is being filled when the sync of step 10 runs: left out until whole.
        ref = self.declared_then_written(
            10, {"checkpoint-10/model.safetensors": b"m10", "checkpoint-10/trainer_state.json": b'{"global_step": 10}'},
            {"checkpoint-20/model.safetensors": b"m20"})
        self.assertEqual(ref["step"], 10)
        self.assertEqual(self.published()[-1][1], {"checkpoint-10/model.safetensors": 3, "checkpoint-10/trainer_state.json": 19})

    def test_the_next_hugging_face_folder_being_written_does_not_hold_a_declared_save_back(self):
        # The job declared step 10 and began step 20's checkpoint-20/ at once: its first shard is
        # open for writing when the sync of step 10 runs.
        self.write("checkpoint-10/model.safetensors", b"m10")
        self.write("checkpoint-10/trainer_state.json", b'{"global_step": 10}')
        self.ckpts.declared = (10, "line")
        self.capture.declared()
        os.makedirs(os.path.join(self.root, "checkpoint-20"))
        p = self.slow_save("checkpoint-20/model.safetensors", 40, 0.05)
        ref = self.ckpts.sync(final=False, sid=p.pid)
        self.assertEqual(ref["step"], 10)
        self.assertEqual(sorted(self.published()[-1][1]), ["checkpoint-10/model.safetensors", "checkpoint-10/trainer_state.json"])
        p.wait()

    def test_a_declaration_seen_before_the_files_changed_keeps_its_step(self):
        # The control: nothing changed after the declaration, however late the loop takes it.
        self.write("model.bin", b"model 1")
        self.job_declares(1)
        time.sleep(0.05)
        self.assertTrue(self.ckpts.tick(None))
        self.assertEqual(self.ckpts.sync(final=False, sid=os.getpid())["step"], 1)

    def test_a_declaration_thread_preempted_after_reading_the_clock_keeps_the_step(self):
        # CI under load (the contract test's job and the data-loader trainer): the declaration
        # thread read the clock, lost the CPU while the job wrote its state file and declared,
        # then read the line. Timed before the file it covers, the save lost its step.
        log = self.job_log()
        self.write("model.bin", b"model 1")
        real_time = time.time

        def job_saves_and_declares():
            self.write("state.json", b'{"step": 1}')
            with open(log, "a") as f:
                f.write("RUNCTL_CHECKPOINT_SAVED step=1\n")

        pending = [job_saves_and_declares]

        def preempted_clock():
            now = real_time()
            if pending:
                time.sleep(0.02)  # a later mtime, even on a coarse clock
                pending.pop()()
            return now

        clock = types.SimpleNamespace(time=preempted_clock, monotonic=time.monotonic, sleep=time.sleep)
        with mock.patch.object(checkpoints_module, "time", clock):
            self.wait_for("the declaration", self.ckpts.poll_declarations)
        self.assertFalse(pending)  # the job did save while the thread was preempted
        self.assertTrue(self.ckpts.tick(None))
        ref = self.ckpts.sync(final=False, sid=os.getpid())
        self.assertEqual(ref["step"], 1)
        self.assertEqual(self.published()[-1][1], {"model.bin": 7, "state.json": 11})

    def test_a_save_after_the_last_declaration_does_not_take_its_step_at_the_end(self):
        # Break test 15: the job declared step 1, later saved again without declaring and exited
        # 0; the final checkpoint holds save 2, so it must not carry "step 1".
        self.write("model.bin", b"model 1")
        self.job_declares(1)
        self.assertTrue(self.ckpts.tick(None))
        self.assertEqual(self.ckpts.sync(final=False, sid=os.getpid())["step"], 1)
        time.sleep(0.02)  # a later mtime, even on a coarse clock
        self.write("model.bin", b"model 2")
        ref = self.ckpts.sync(final=True, clean_exit=True)
        self.assertIsNone(ref.get("step"))
        self.assertEqual(self.published()[-1], (None, {"model.bin": 7}))

    def test_a_file_rewritten_just_before_the_job_died_is_not_published(self):
        # Break test 17: the job reopened model.bin, wrote 1 MiB of 4 and raised 20 ms later:
        # open for less than one look, never seen open, and the final sync published the prefix.
        self.write("model.bin", b"1" * 4096)
        self.quiet()
        self.assertIsNotNone(self.ckpts.sync(final=False, sid=os.getpid()))
        self.write("model.bin", b"2" * 1024)
        self.capture.cut()  # the job exited 1
        self.assertIsNone(self.ckpts.sync(final=True, clean_exit=False))
        self.assertEqual(self.published(), [(None, {"model.bin": 4096})])

    def test_a_periodic_sync_after_the_kill_does_not_publish_what_it_cut(self):
        # Break test 17: SIGKILLed 30 ms into a save begun in its SIGTERM handler; a periodic
        # sync 0.3 s later found the prefix quiet, published it, and the final sync had nothing
        # newer to say.
        self.write("model.bin", b"1" * 4096)
        self.quiet()
        self.ckpts.sync(final=False, sid=os.getpid())
        self.write("model.bin", b"2" * 1024)
        self.capture.cut()  # the grace period's SIGKILL
        self.quiet()
        self.assertIsNone(self.ckpts.sync(final=False, sid=os.getpid()))
        self.assertIsNone(self.ckpts.sync(final=True, clean_exit=False))
        self.assertEqual(self.published(), [(None, {"model.bin": 4096})])

    def test_a_file_open_when_the_agent_kills_the_job_is_not_published(self):
        self.write("model.bin", b"1" * 4096)
        self.quiet()
        self.assertIsNotNone(self.ckpts.sync(final=False, sid=os.getpid()))
        writer = self.slow_save("model.bin", 40, 0.05)
        self.capture.killing(writer.pid)  # the look just before the grace period's SIGKILL
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait()
        self.assertIsNone(self.ckpts.sync(final=True, clean_exit=False))
        self.assertEqual(self.published(), [(None, {"model.bin": 4096})])
        self.assertTrue(any("model.bin was open for writing when the agent killed the job" in line for line in self.logs))

    def test_a_save_declared_just_before_the_job_died_is_published(self):
        self.write("model.bin", b"2" * 4096)
        self.job_declares(2)
        self.capture.cut()
        ref = self.ckpts.sync(final=True, clean_exit=False)
        self.assertEqual((ref["step"], self.published()[-1][1]), (2, {"model.bin": 4096}))

    def test_a_status_file_rewritten_every_few_ms_does_not_drop_a_declared_save(self):
        # A second break test's input: status.json rewritten with open("w") every 10 ms beside a
        # model saved with mkstemp + shutil.move, then RUNCTL_CHECKPOINT_SAVED.
        self.status_file_beside_a_declared_save(0.01)

    def test_a_status_file_rewritten_every_100ms_does_not_drop_a_declared_save(self):
        self.status_file_beside_a_declared_save(0.1)

    def status_file_beside_a_declared_save(self, every):
        writer = self.job("import json, sys, time\nwhile True:\n    json.dump({'t': time.time()}, open(sys.argv[1], 'w')); time.sleep(float(sys.argv[2]))\n",
                          os.path.join(self.root, "status.json"), every)
        self.wait_for("the status file", lambda: os.path.exists(os.path.join(self.root, "status.json")))
        self.write("model.pt", b"weights step 1")
        self.assertIsNone(self.ckpts.sync(final=False, sid=writer.pid))  # status.json is changing
        # The checkpoint loop looks every 0.1-0.25 s; it finds status.json rewritten at every look.
        self.wait_for("status.json to be seen churning",
                      lambda: self.ckpts.tick(writer.pid) or "status.json" in self.capture.churning_now())
        self.write("model.pt", b"weights step 2")
        self.ckpts.declared = (2, "line")
        self.capture.declared()
        ref = self.ckpts.sync(final=False, sid=writer.pid)
        self.assertIsNotNone(ref)
        self.assertEqual(ref["step"], 2)

    def test_a_log_appended_beside_the_checkpoint_does_not_hold_it_back(self):
        logger = self.job("import sys, time\nf = open(sys.argv[1], 'a')\nwhile True:\n    f.write('loss 1\\n'); f.flush(); time.sleep(0.003)\n",
                          os.path.join(self.root, "metrics.jsonl"))
        self.wait_for("the log", lambda: os.path.exists(os.path.join(self.root, "metrics.jsonl")))
        self.ckpts.tick(logger.pid)
        self.write("model.pt", b"weights")
        self.quiet()
        ref = self.ckpts.sync(final=False, sid=logger.pid)
        self.assertIsNotNone(ref)
        self.assertEqual(ref["files"], 1)  # model.pt; the log keeps changing and is left out

    def test_a_log_opened_and_closed_for_every_line_becomes_busy_once_it_only_grows(self):
        log = os.path.join(self.root, "train.log")
        self.write("model.pt", b"weights")
        for n in range(12):
            with open(log, "a") as f:
                f.write("line %d\n" % n)
            time.sleep(0.05)
            if self.ckpts.sync(final=False, sid=os.getpid()) is not None:
                break
        else:
            self.fail("a log that only grows held every sync back")
        self.assertIn("model.pt", self.published()[-1][1])


class VanishedTest(JobHarness):
    """Files the job deletes while a sync reads them (break test 18)."""

    def test_a_folder_the_trainer_rotates_away_during_the_sync_is_not_published_torn(self):
        # save_total_limit: the Trainer deletes checkpoint-50/ while the sync of its declaration
        # reads it; it used to be published as "step 50" without the files deleted meanwhile.
        from runctl_agent.checkpoint_store import SyncSession
        self.write("checkpoint-40/model.safetensors", b"4" * (2 << 20))
        self.write("checkpoint-40/trainer_state.json", b'{"global_step": 40}')
        self.ckpts.declared = (40, "line")
        self.capture.declared()
        self.assertEqual(self.ckpts.sync(final=False, sid=None)["step"], 40)
        self.write("checkpoint-50/model.safetensors", b"5" * (2 << 20))
        self.write("checkpoint-50/optimizer.pt", b"o" * (2 << 20))
        self.write("checkpoint-50/trainer_state.json", b'{"global_step": 50}')
        self.ckpts.declared = (50, "line")
        self.capture.declared()
        read = SyncSession._read

        def rotating(session, root, entry, sizes):
            if entry.path == "checkpoint-50/optimizer.pt":
                os.remove(os.path.join(root, "checkpoint-50", "optimizer.pt"))  # shutil.rmtree under way
            return read(session, root, entry, sizes)
        with mock.patch.object(SyncSession, "_read", rotating):
            self.ckpts.sync(final=False, sid=None)
        for step, files in self.published():
            self.assertFalse(any(path.startswith("checkpoint-50/") for path in files), (step, files))
            self.assertNotEqual(step, 50)
        self.assertIn("is not published under that step: checkpoint-50/optimizer.pt was deleted while the sync read it",
                      " ".join(self.logs))


class EmptiedAtStopTest(JobHarness):
    """Rule 3b (break tests 18, 19): the stop signal lands while open(path, "wb") truncates a
    shard, before the job holds a descriptor, or the handler truncates it; the handler then exits
    0 at once, the file left cut short."""

    def assert_cut_short_at_stop_is_not_published(self, cut):
        self.write("shard0.bin", b"7" * (4 << 20))
        self.quiet()
        self.assertEqual(self.ckpts.sync(final=False, sid=None)["files"], 1)
        self.capture.signalled(None)
        cut(os.path.join(self.root, "shard0.bin"))
        self.assertIsNone(self.ckpts.sync(final=True, sid=None, clean_exit=True))
        self.assertEqual(self.published(), [(None, {"shard0.bin": 4 << 20})])
        self.assertIn("shard0.bin was cut short when the job was stopped", " ".join(i["reason"] for i in self.ckpts.last_left_out))

    def test_a_file_emptied_as_the_job_was_stopped_is_not_published(self):
        self.assert_cut_short_at_stop_is_not_published(lambda path: open(path, "wb").close())

    def test_a_file_truncated_by_the_handler_is_not_published(self):
        self.assert_cut_short_at_stop_is_not_published(lambda path: os.truncate(path, 1 << 20))

    def test_a_file_rewritten_shorter_by_the_handler_is_not_published(self):
        def rewrite(path):
            with open(path, "wb") as f:
                f.write(b"8" * (1 << 20))
        self.assert_cut_short_at_stop_is_not_published(rewrite)

    def test_an_empty_file_the_job_declares_after_the_signal_is_published(self):
        self.write("shard0.bin", b"7" * (1 << 20))
        self.quiet()
        self.ckpts.sync(final=False, sid=None)
        self.capture.signalled(None)
        open(os.path.join(self.root, "shard0.bin"), "wb").close()
        time.sleep(0.01)  # the declaration is later, even on a coarse clock
        self.ckpts.declared = (8, "line")
        self.capture.declared()
        ref = self.ckpts.sync(final=True, sid=None, clean_exit=True)
        self.assertEqual((ref["step"], ref["bytes"]), (8, 0))


class AgentNoteTest(JobHarness):
    """A declaration line read after the agent wrote its own note to job.log (break test 18: an
    agent restarted beside the running job re-read a declaration printed before it started)."""

    def test_a_line_read_after_the_agents_own_note_is_not_timed_by_that_note(self):
        noted = {"until": None}
        log = self.job_log()
        self.ckpts.start_watching(log, 0, noted_until=lambda: noted["until"])
        self.write("s1.bin", b"1" * 4096)
        self.write("s2.bin", b"1" * 4096)
        with open(log, "a") as f:
            f.write("RUNCTL_CHECKPOINT_SAVED step=1\n")
        time.sleep(0.02)  # a later change time, even on a coarse clock
        self.write("s1.bin", b"2" * 4096)  # the next save begins before the agent reads the line
        with open(log, "a") as f:
            f.write("[runctl] agent restarted; adopted running job pid 1\n")
            noted["until"] = f.tell()
        self.assertTrue(self.ckpts.poll_declarations())
        self.quiet()
        self.assertTrue(self.ckpts.tick(None))
        self.ckpts.sync(final=False, sid=None)
        for step, files in self.published():
            # s1.bin holds save 2 now: no checkpoint may say it is step 1.
            self.assertNotEqual(step, 1, files)


class StoredAheadTest(JobHarness):
    """A save the job declares is stored file by file as the job closes each file (Checkpoints.stage),
    published only by the declared sync, which reads none of them again."""

    SHARD = 3 << 20

    def content_stored(self, data):
        key = self.ckpts.store.content_key(hashlib.sha256(data).hexdigest())
        return os.path.exists(self.storage.local_path(key))

    def test_a_closed_shard_is_stored_while_the_next_is_written_and_published_unread(self):
        self.ckpts.declares_saves = True  # the job declared an earlier save
        first = b"1" * self.SHARD
        self.write("checkpoint-5/model-00001-of-00002.safetensors", first)
        writer = self.slow_save("checkpoint-5/model-00002-of-00002.safetensors", 40, 0.05)
        self.capture.watch(writer.pid)
        self.assertEqual(self.ckpts.stage(writer.pid), 1)
        self.assertTrue(self.content_stored(first))
        self.assertEqual(self.published(), [])  # stored, not published: the save is not declared yet
        self.assertEqual(self.ckpts.stage(writer.pid), 0)  # nothing new closed
        self.assertEqual(writer.wait(), 0)
        self.write("checkpoint-5/trainer_state.json", b'{"global_step": 5}')
        before = self.ckpts.store.bytes_written
        self.ckpts.declared = (5, "line")
        self.capture.declared()
        ref = self.ckpts.sync(final=False, sid=None)
        self.assertEqual(ref["step"], 5)
        manifest = self.ckpts.store.manifest(1, ref["id"], cached=False)
        # Counted as uploaded by this checkpoint, and written to storage once: the second shard,
        # trainer_state.json and the manifest are all the declared sync wrote.
        self.assertEqual(manifest["sync"]["filesUploaded"], 3)
        written = self.ckpts.store.bytes_written - before
        self.assertGreaterEqual(written, 40 * 65536 + 18)
        self.assertLess(written, 40 * 65536 + 18 + 4096)

    def test_nothing_is_stored_ahead_for_a_job_that_never_declared_a_save(self):
        # Synced every interval, it may rewrite a file many times in between: one upload each.
        data = b"2" * self.SHARD
        self.write("ckpt.pt", data)
        job = self.job("import time; time.sleep(30)")
        self.capture.watch(job.pid)
        self.assertEqual(self.ckpts.stage(job.pid), 0)
        self.assertFalse(self.content_stored(data))

    def test_nothing_is_stored_ahead_once_the_job_ended(self):
        # It may have died in the middle of the save: the final sync judges its files (capture.py).
        self.ckpts.declares_saves = True
        job = self.job("pass")
        data = b"4" * self.SHARD
        self.write("ckpt.pt", data)
        job.wait()
        self.assertEqual(self.ckpts.stage(job.pid), 0)
        self.assertFalse(self.content_stored(data))

    def test_a_file_rewritten_after_it_was_stored_ahead_costs_one_copy_and_the_save_gets_the_new_one(self):
        self.ckpts.declares_saves = True
        job = self.job("import time; time.sleep(30)")
        old, new = b"o" * self.SHARD, b"n" * self.SHARD
        self.write("ckpt.pt", old)
        self.capture.watch(job.pid)
        self.assertEqual(self.ckpts.stage(job.pid), 1)
        time.sleep(0.01)  # a new mtime, even on a coarse clock
        self.write("ckpt.pt", new)
        self.assertEqual(self.ckpts.stage(job.pid), 0)  # tried once per save already
        self.assertFalse(self.content_stored(new))
        self.ckpts.declared = (7, "line")
        self.capture.declared()
        ref = self.ckpts.sync(final=False, sid=job.pid)
        self.assertEqual(ref["step"], 7)
        manifest = self.ckpts.store.manifest(1, ref["id"], cached=False)
        self.assertEqual([f["sha256"] for f in manifest["files"]], [hashlib.sha256(new).hexdigest()])

    def test_a_file_the_job_closes_between_the_scan_and_the_look_is_stored_as_closed(self):
        # The scan sees the shard half written; by the look at the job's open files it is closed.
        # Its identity is read after that look, so the copy-then-recheck does not refuse it.
        self.ckpts.declares_saves = True
        job = self.job("import time; time.sleep(30)")
        path = os.path.join(self.root, "model.safetensors")
        self.write("model.safetensors", b"h" * self.SHARD)
        look = self.capture.watch

        def finishing_write(sid):
            with open(path, "ab") as f:
                f.write(b"t" * self.SHARD)
            self.capture.watch = look
            return look(sid)
        self.capture.watch = finishing_write
        self.assertEqual(self.ckpts.stage(job.pid), 1)
        self.assertTrue(self.content_stored(b"h" * self.SHARD + b"t" * self.SHARD))

    def test_a_save_renamed_into_place_is_stored_once(self):
        # transformers' tmp-checkpoint-*/ and Orbax's *.orbax-checkpoint-tmp folders, os.replace of
        # a temp file: the same inode and mtime under a new path.
        self.ckpts.declares_saves = True
        job = self.job("import time; time.sleep(30)")
        shard = b"r" * self.SHARD
        self.write("tmp-checkpoint-3/model.safetensors", shard)
        self.capture.watch(job.pid)
        self.assertEqual(self.ckpts.stage(job.pid), 1)
        os.rename(os.path.join(self.root, "tmp-checkpoint-3"), os.path.join(self.root, "checkpoint-3"))
        self.write("checkpoint-3/trainer_state.json", b'{"global_step": 3}')
        self.assertEqual(self.ckpts.stage(job.pid), 0)  # known by its identity: nothing to store
        before = self.ckpts.store.bytes_written
        self.ckpts.declared = (3, "line")
        self.capture.declared()
        ref = self.ckpts.sync(final=False, sid=job.pid)
        self.assertEqual(ref["step"], 3)
        self.assertLess(self.ckpts.store.bytes_written - before, 4096)  # trainer_state.json and the manifest
        manifest = self.ckpts.store.manifest(1, ref["id"], cached=False)
        self.assertIn({"path": "checkpoint-3/model.safetensors", "sha256": hashlib.sha256(shard).hexdigest()},
                      [{"path": f["path"], "sha256": f["sha256"]} for f in manifest["files"]])
        self.assertEqual(manifest["sync"]["filesUploaded"], 2)

    def test_a_file_mapped_shared_and_writable_is_neither_stored_ahead_nor_published(self):
        # torch.from_file(shared=True) maps and closes its descriptor: no fd says it is written.
        self.ckpts.declares_saves = True
        ready = os.path.join(self.tmp.name, "mapped")
        job = self.job(MAPPING_WRITER, os.path.join(self.root, "state.bin"), self.SHARD, ready)
        self.wait_for("the job to map its file", lambda: os.path.exists(ready))
        self.capture.watch(job.pid)
        self.assertEqual(self.ckpts.stage(job.pid), 0)
        self.ckpts.declared = (1, "line")
        self.capture.declared()
        self.assertIsNone(self.ckpts.sync(final=False, sid=job.pid))
        self.assertIn("state.bin is mapped shared and writable by the job", " ".join(i["reason"] for i in self.ckpts.last_left_out))
        self.assertIn("state.bin", self.capture.mapped)

    def test_a_collection_with_no_grace_leaves_contents_stored_ahead_alone(self):
        # grace 0 (one writer): no time rule protects a content no manifest names yet.
        self.ckpts.declares_saves = True
        job = self.job("import time; time.sleep(30)")
        data = b"3" * self.SHARD
        self.write("model.safetensors", data)
        self.capture.watch(job.pid)
        self.assertEqual(self.ckpts.stage(job.pid), 1)
        self.ckpts.store.collect()
        self.assertTrue(self.content_stored(data))

    def gate_copies_of(self, name):
        """Hold every copy of a file named name (into the store) until the returned release Event
        is set; returns (reading: Event set once such a copy began, release, copies: {file name: copies})."""
        from runctl_agent import checkpoint_store
        reading, release, copies = __import__("threading").Event(), __import__("threading").Event(), {}
        real = {"copy_and_hash": checkpoint_store.copy_and_hash, "copy_hashing": checkpoint_store.copy_hashing}

        def gated(which):
            def copy(src, dest):
                base = os.path.basename(src)
                copies[base] = copies.get(base, 0) + 1
                if base == name:
                    reading.set()
                    self.assertTrue(release.wait(30), "the test never released the copy")
                return real[which](src, dest)
            return copy
        for which in real:
            patcher = mock.patch.object(checkpoint_store, which, gated(which))
            patcher.start()
            self.addCleanup(patcher.stop)
        self.addCleanup(release.set)
        return reading, release, copies

    def test_a_declaration_made_while_a_file_is_stored_ahead_is_synced_at_once_and_reads_that_file_once(self):
        # Issue 9, acceptance 3: the declared sync used to wait for the file being stored ahead
        # (the stager held the lock), then read the rest: the two one after the other.
        import threading
        self.ckpts.declares_saves = True
        job = self.job("import time; time.sleep(30)")
        reading, release, copies = self.gate_copies_of("model-00001-of-00002.safetensors")
        first, second = b"a" * self.SHARD, b"b" * self.SHARD
        self.write("checkpoint-9/model-00001-of-00002.safetensors", first)
        stager = threading.Thread(target=self.ckpts.stage, args=(job.pid,))
        stager.start()
        self.assertTrue(reading.wait(30))
        self.write("checkpoint-9/model-00002-of-00002.safetensors", second)
        self.write("checkpoint-9/trainer_state.json", b'{"global_step": 9}')
        self.ckpts.declared = (9, "line")
        self.capture.declared()
        out = {}
        syncer = threading.Thread(target=lambda: out.update(ref=self.ckpts.sync(final=False, sid=job.pid)))
        syncer.start()
        # The sync stores the other shard while the first is still being stored ahead...
        self.wait_for("the declared sync to store the other shard", lambda: copies.get("model-00002-of-00002.safetensors") == 1)
        self.assertEqual(self.published(), [])  # ...and publishes only once that one is stored too
        release.set()
        stager.join(30)
        syncer.join(30)
        self.assertEqual(out["ref"]["step"], 9)
        manifest = self.ckpts.store.manifest(1, out["ref"]["id"], cached=False)
        self.assertEqual(sorted(f["path"] for f in manifest["files"]), [
            "checkpoint-9/model-00001-of-00002.safetensors", "checkpoint-9/model-00002-of-00002.safetensors",
            "checkpoint-9/trainer_state.json"])
        self.assertEqual(manifest["sync"]["filesUploaded"], 3)
        self.assertEqual(copies["model-00001-of-00002.safetensors"], 1)  # stored ahead, reused unread
        self.assertTrue(self.content_stored(first) and self.content_stored(second))

    def test_retention_waits_for_a_file_being_stored_ahead(self):
        # With no grace (one writer), only store.unpublished protects a content stored ahead, and
        # it is added once the content is in place: a collection in between would delete it.
        import threading
        self.ckpts.declares_saves = True
        job = self.job("import time; time.sleep(30)")
        reading, release, _ = self.gate_copies_of("model.safetensors")
        self.write("model.safetensors", b"5" * self.SHARD)
        stager = threading.Thread(target=self.ckpts.stage, args=(job.pid,))
        stager.start()
        self.assertTrue(reading.wait(30))
        retained = []
        with mock.patch.object(self.ckpts.store, "retain", lambda keep, should_yield=None: retained.append(keep) or []):
            self.ckpts.retention_due = True
            self.ckpts.retain_if_due()
            self.assertEqual(retained, [])
            self.assertTrue(self.ckpts.retention_due)  # still due: the next tick runs it
            release.set()
            stager.join(30)
            self.ckpts.retain_if_due()
            self.assertEqual(retained, [100])

    def test_a_periodic_sync_during_a_declaring_jobs_save_reads_nothing(self):
        # The save's large files are the stager's; a periodic sync that would be held back by the
        # save in progress anyway reads none of them (it used to copy them on the checkpoint
        # loop, delaying the declaration that followed).
        self.ckpts.declares_saves = True
        done = b"d" * self.SHARD
        self.write("state/model.bin", done)
        path = os.path.join(self.root, "state", "model.bin")
        self.wait_for("the file to be quiet", lambda: time.time() - os.stat(path).st_ctime > self.capture.quiet + 0.05)
        os.makedirs(os.path.join(self.root, "state", "optimizer"))  # the save goes on
        before = self.ckpts.store.bytes_written
        self.assertIsNone(self.ckpts.sync(final=False, sid=os.getpid()))
        self.assertIn("checkpoint sync held back, a save is in progress", " ".join(self.logs))
        self.assertEqual(self.ckpts.store.bytes_written, before)
        self.assertFalse(self.content_stored(done))
        # A job that does not declare its saves keeps the stored-while-held-back behaviour.
        self.ckpts.declares_saves = False
        self.assertIsNone(self.ckpts.sync(final=False, sid=os.getpid()))
        self.assertTrue(self.content_stored(done))


if __name__ == "__main__":
    unittest.main()
