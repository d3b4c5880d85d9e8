"""A declared step is published only with the files it declared, over many saves in a row
(issue 9, acceptance 1: "the step shown is the step held"; break test 15). The test process plays
both the job (it writes and declares) and the agent's checkpoint loop (agent_loop), so each round
is timed as the break test's job timed it, without a second process to schedule."""

import ctypes
import os
import shutil
import time
import unittest
from unittest import mock

from runctl_agent import capture as capture_module
from tests.test_capture_saves import JobHarness

MARKER = ".runctl-saved"


class DeclaredRoundsTest(JobHarness):
    def setUp(self):
        super().setUp()
        self.capture.quiet = 1.0  # the agent's default: the idle pause below is shorter

    def save(self, k):
        for name in ("model.bin", "state.json"):
            self.write(name, b"%08d" % k * 64)

    def declare_marker(self, k):
        tmp = os.path.join(self.root, MARKER + ".tmp")
        with open(tmp, "w") as f:
            f.write("step=%d\n" % k)
        os.replace(tmp, os.path.join(self.root, MARKER))

    def declare_line(self, k):
        with open(self.job_log(), "a") as f:
            f.write("RUNCTL_CHECKPOINT_SAVED step=%d\n" % k)

    def agent_loop(self, seconds, interval=3600.0, sid=None, until=None):
        """The agent's checkpoint loop for `seconds` (or until `until()`): look at the job's
        session `sid` (default: this process's) and take declarations every 20 ms, sync at once on
        a declaration, when a held-back sync is due again, and every `interval` seconds
        (agent.checkpoint_loop)."""
        sid = os.getpid() if sid is None else sid
        deadline = time.monotonic() + seconds
        next_sync = time.monotonic() + interval
        while time.monotonic() < deadline and not (until and until()):
            if self.ckpts.tick(sid) or self.ckpts.retry_due() or time.monotonic() >= next_sync:
                next_sync = time.monotonic() + interval
                self.ckpts.sync(final=False, sid=sid)
            time.sleep(0.02)

    def contents(self):
        """[(step, {path: bytes})] of every published checkpoint, oldest first."""
        out = []
        for cid in self.ckpts.store.ids()[2]:
            m = self.ckpts.store.manifest(1, cid, cached=False)
            files = {}
            for f in m["files"]:
                with open(self.storage.local_path(self.ckpts.store.content_key(f["sha256"])), "rb") as g:
                    files[f["path"]] = g.read()
            out.append((m.get("step"), files))
        return out

    def assert_each_step_holds_its_save(self, names=("model.bin", "state.json")):
        """Every checkpoint with a step holds that step's save in each of names (each file starts
        with "%08d" % its step); returns contents()."""
        published = self.contents()
        for step, files in published:
            if step is None:
                continue
            held = dict((name, files.get(name, b"(absent)")[:8]) for name in names)
            self.assertEqual(held, dict((name, b"%08d" % step) for name in names),
                             "the checkpoint labelled step %d holds %r" % (step, held))
        return published

    def overtaken_rounds(self, declare, gap, rounds=3):
        """Break test 15's job: save k, declare it, `gap` seconds later save k+1 without declaring,
        then idle 0.5 s (less than the quiet time); `rounds` times."""
        self.job_log()
        for i in range(rounds):
            k = 2 * i + 1
            self.save(k)
            declare(k)
            time.sleep(gap)
            self.save(k + 1)
            self.agent_loop(0.5)
        # The job exits 0 after its last, undeclared save: the final checkpoint holds it, unlabelled.
        self.ckpts.sync(final=True, clean_exit=True)
        step, files = self.contents()[-1]
        self.assertIsNone(step)
        last = b"%08d" % (2 * rounds) * 64
        self.assertEqual((files["model.bin"], files["state.json"]), (last, last))

    def test_a_marker_save_overtaken_5ms_later_never_publishes_its_step_without_its_files(self):
        # Break test 15: the first declared sync left model.bin and state.json out; from then on
        # every declared checkpoint held only the marker, or the files of an older save.
        self.overtaken_rounds(self.declare_marker, 0.005)
        self.assert_each_step_holds_its_save()

    def test_a_line_save_overtaken_20ms_later_never_publishes_its_step_without_its_files(self):
        self.overtaken_rounds(self.declare_line, 0.02)
        self.assert_each_step_holds_its_save()

    def test_a_model_copied_back_with_its_old_mtime_after_the_last_declaration_gets_no_step(self):
        # Break test 16: the job declared steps 1-3, then loaded its best model (step 1's, kept
        # with `cp -p`) back into place and exited 0. The copy has step 1's mtime, older than
        # the last declaration; the final checkpoint held it under "step 3".
        self.job_log()
        best = os.path.join(self.tmp.name, "best.bin")
        for k in (1, 2, 3):
            self.write("model.bin", b"%08d" % k)
            if k == 1:
                shutil.copy2(os.path.join(self.root, "model.bin"), best)
            self.declare_marker(k)
            self.agent_loop(0.3)
        self.assertEqual(self.contents()[-1], (3, {"model.bin": b"00000003", MARKER: b"step=3\n"}))
        shutil.copy2(best, os.path.join(self.root, "model.bin"))
        self.ckpts.sync(final=True, clean_exit=True)
        self.assertEqual(self.contents()[-1], (None, {"model.bin": b"00000001", MARKER: b"step=3\n"}))

    def test_a_save_copied_in_with_an_old_mtime_right_after_a_declaration_does_not_take_its_step(self):
        # Break test 16: each save is a copy2 of a snapshot written earlier outside the folder
        # (its mtime is that of the snapshot); save k+1 was copied in 5 ms after k was declared,
        # and looked older than the declaration.
        self.job_log()
        scratch = os.path.join(self.tmp.name, "scratch")
        os.makedirs(scratch)
        for k in range(1, 9):
            with open(os.path.join(scratch, "model-%d" % k), "wb") as f:
                f.write(b"%08d" % k * 64)
        for i in range(3):
            k = 2 * i + 1
            shutil.copy2(os.path.join(scratch, "model-%d" % k), os.path.join(self.root, "model.bin"))
            self.declare_marker(k)
            time.sleep(0.005)
            shutil.copy2(os.path.join(scratch, "model-%d" % (k + 1)), os.path.join(self.root, "model.bin"))
            self.agent_loop(0.5)
        self.assert_each_step_holds_its_save(names=("model.bin",))

    def test_a_save_that_grows_every_round_is_not_taken_for_a_log(self):
        # Break test 16: a model that grows at every save (a replay buffer), written to a temp
        # name and renamed into place, the next save at once after each declaration. Left out
        # and longer at every sync, it passed for a log (the kernel reused its inode), so its
        # changes stopped taking the declared step away: the final checkpoint, holding save 16,
        # got step 15.
        self.job_log()
        def save(k):
            tmp = os.path.join(self.root, "model.bin.tmp")
            with open(tmp, "wb") as f:
                f.write(b"%08d" % k * (512 + 8 * k))
            os.replace(tmp, os.path.join(self.root, "model.bin"))
        for i in range(8):
            save(2 * i + 1)
            self.declare_line(2 * i + 1)
            save(2 * i + 2)
            self.agent_loop(0.2)
        self.assertFalse(self.capture.busy("model.bin"))
        self.ckpts.sync(final=True, clean_exit=True)
        self.assert_each_step_holds_its_save(names=("model.bin",))
        self.assertEqual(self.contents()[-1][1]["model.bin"][:8], b"00000016")

    def build(self, name, k):
        """A save built outside the checkpoint folder, in stage/<name>, holding step k."""
        stage = os.path.join(self.tmp.name, "stage", name)
        os.makedirs(stage)
        for f in ("model.bin", "state.json"):
            with open(os.path.join(stage, f), "wb") as out:
                out.write(b"%08d" % k * 64)

    def move_in(self, name):
        """`rm -rf ckpt; mv stage/<name> ckpt`: mv keeps the files' mtimes and ctimes; only the
        folder's own times move."""
        shutil.rmtree(os.path.join(self.root, "ckpt"), ignore_errors=True)
        os.rename(os.path.join(self.tmp.name, "stage", name), os.path.join(self.root, "ckpt"))

    def test_a_folder_moved_in_after_the_last_declaration_gets_no_step(self):
        # Break test 17: each save was built aside, moved in with mv and declared; at the end the
        # job moved its best save (1, built at the start) back in and exited 0; the final
        # checkpoint held it under "step 3".
        self.job_log()
        for k in (1, 2, 3):
            self.build("s%d" % k, k)
        self.build("best", 1)
        time.sleep(0.02)  # the saves are older than the declarations, even on a coarse clock
        for k in (1, 2, 3):
            self.move_in("s%d" % k)
            self.declare_line(k)
            self.agent_loop(0.3)
        self.move_in("best")
        self.ckpts.sync(final=True, clean_exit=True)
        step, files = self.contents()[-1]
        self.assertIsNone(step)
        self.assertEqual(files["ckpt/model.bin"][:8], b"00000001")

    def test_a_folder_moved_in_right_after_a_declaration_does_not_take_its_step(self):
        self.job_log()
        for k in range(1, 7):
            self.build("s%d" % k, k)
        time.sleep(0.02)
        for i in range(3):
            k = 2 * i + 1
            self.move_in("s%d" % k)
            self.declare_line(k)
            time.sleep(0.01)
            self.move_in("s%d" % (k + 1))
            self.agent_loop(0.4)
        self.assert_each_step_holds_its_save(names=("ckpt/model.bin",))

    def test_a_change_after_the_declaration_with_an_older_timestamp_takes_the_step_away(self):
        # Break test 17: file timestamps can lag the clock by tens of ms here (a coarse clock),
        # so the next save, begun right after the declaration, can carry a time before it. The
        # folder as scanned just after the declaration was read is the evidence instead.
        self.job_log()
        self.save(1)
        self.declare_line(1)
        self.assertTrue(self.ckpts.poll_declarations())
        self.assertTrue(self.ckpts.tick(None))
        self.ckpts.declared_at = time.time() + 1.0  # as if every later change looked older
        self.capture.declared_at = self.ckpts.declared_at
        self.save(2)
        self.ckpts.sync(final=False, sid=os.getpid())
        self.assertNotIn(1, [step for step, _ in self.contents()])

    def test_a_file_being_truncated_is_left_out(self):
        # open(path, "wb") of a 128 MiB file takes ~25 ms to free its blocks, with no descriptor
        # in /proc until it returns: the file is 0 bytes with blocks still allocated. fallocate
        # with FALLOC_FL_KEEP_SIZE makes that state to look at.
        path = os.path.join(self.root, "model.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
            if libc.fallocate(fd, 1, 0, 1 << 20) != 0:  # FALLOC_FL_KEEP_SIZE
                self.fail("fallocate(FALLOC_FL_KEEP_SIZE) failed: %s" % os.strerror(ctypes.get_errno()))
        finally:
            os.close(fd)
        self.write("state.json", b"%08d" % 1)
        self.job_log()
        self.declare_line(1)
        self.agent_loop(0.2)
        self.assertEqual(self.contents(), [])
        self.assertTrue(any("model.bin is being truncated" in line for line in self.logs))

    def test_a_declaration_timed_late_is_timed_by_the_log_it_was_read_from(self):
        # Break test 15, under load: the declaration thread ran 20 ms after the job declared step
        # 1 and saved step 2, and step 1's checkpoint held step 2. The log's mtime times it.
        self.job_log()
        self.save(1)
        self.declare_line(1)
        time.sleep(0.02)
        self.save(2)
        self.agent_loop(0.3)
        self.assertNotIn(1, [step for step, _ in self.assert_each_step_holds_its_save()])

    def test_saves_declared_with_a_pause_keep_their_steps(self):
        # The control: nothing is written after a declaration, so every declared step is published.
        self.job_log()
        for k in (1, 2, 3):
            self.save(k)
            self.declare_marker(k)
            self.agent_loop(0.4)
        self.assertEqual([step for step, _ in self.assert_each_step_holds_its_save()], [1, 2, 3])

    def test_a_long_save_young_at_every_look_is_not_taken_for_a_status_file(self):
        # torch.save of a large model keeps the file young at every look for as long as it
        # writes; declared, then overwritten at once by the next save, it must lose its step
        # rather than be left out as a status file under it.
        self.job_log()
        self.save(1)
        self.declare_marker(1)
        self.agent_loop(0.3)
        writer = self.slow_save("model.bin", 14, 0.05)  # open, and young, for 0.7 s
        self.agent_loop(30, sid=writer.pid, until=lambda: writer.poll() is not None)
        self.assertEqual(writer.returncode, 0)
        self.write("state.json", b"%08d" % 2 * 64)
        self.declare_marker(2)
        time.sleep(0.01)
        self.write("model.bin", b"%08d" % 3 * 64)  # the next save begins at once
        self.agent_loop(0.3)
        self.assertNotIn(2, [step for step, _ in self.contents()])

    def test_a_model_busy_by_the_time_rule_does_not_give_a_declared_step_to_a_checkpoint_without_it(self):
        # A model rewritten every 0.4 s (never quiet for 1 s, too slow to be a status file) is
        # left out until it counts as busy (BUSY_SECONDS, shortened here); a declaration while it
        # is still being rewritten must not label a checkpoint that lacks it.
        self.job_log()
        self.write("state.json", b"%08d" % 7 * 64)
        with mock.patch.object(capture_module, "BUSY_SECONDS", 1.0):
            deadline = time.monotonic() + 10
            while not self.capture.busy("model.bin"):
                self.assertLess(time.monotonic(), deadline, "model.bin never counted as busy")
                self.write("model.bin", b"%08d" % 6 * 64)
                self.agent_loop(0.4, interval=0.2)
            self.write("model.bin", b"%08d" % 7 * 64)
            self.declare_marker(7)
            time.sleep(0.01)
            self.write("model.bin", b"%08d" % 8 * 64)
            self.agent_loop(0.2)
        self.assertNotIn(7, [step for step, _ in self.assert_each_step_holds_its_save()])


if __name__ == "__main__":
    unittest.main()
