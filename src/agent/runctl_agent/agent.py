"""One attempt of one training run: the phases (syncing, restoring, installing, training, and the
endings), the background threads (heartbeat, watch, checkpoint), and the status object.

Safe to start any number of times: an agent started after a dead one adopts the job that is still
running (or reports the exit code the job left behind) instead of starting a second job.

Files in stateDir (documented in docs/agent.md):
  agent.lock    flock held by the live agent (liveness test)
  agent.pid     the live agent's pid
  job.pgid      process group of the running child (setup or command); kill this group to stop it
  job.json      the training job's pid, pgid, start time and log offset (adoption record)
  setup.json    the same for the setup step
  job.exit      exit code of the training job, written atomically by its wrapper
  setup.exit    exit code of setup
  job.log       combined output of setup and command (shipped to storage as log segments)
  result.json   the final status once the attempt has ended (a restarted agent re-publishes it)
  agent.log     the agent's own actions
"""

import json
import os
import signal
import tarfile
import threading
import time
import traceback

from .bundle import fetch_bundle
from .checkpoints import DECLARATION_POLL_SECONDS, STAGE_TICK_SECONDS, TICK_SECONDS, Checkpoints, NoCheckpointLeft
from .config import run_prefix
from .errors import AgentFailure
from .faults import Faults
from .imds import Imds
from .joblog import JobLog
from .progress_history import ProgressFollower
from .jobsignal import send as send_job_signal
from .processes import Child, JobProcesses, become_subreaper, process_alive, process_start_time, spawn_wrapped
from .secrets import redaction_values, resolve_secrets
from .setup_cache import CacheUnavailable, SetupCache, read_outcome as read_setup_cache_outcome
from .storage import StorageError, open_storage
from .util import atomic_write, json_bytes, now_iso, read_int, read_json, remove_quietly

STRAGGLER_GRACE_SECONDS = 5.0
# Kept between the end of the final upload and the termination time: 5 s of EC2's 2-minute notice,
# and never more than a tenth of the notice's lead, so a short lead (a scaled-down simulator, a late
# notice) still leaves the job time to save instead of killing it at once.
FINAL_SYNC_MARGIN_SECONDS = 5.0
FINAL_SYNC_MARGIN_SHARE = 0.1
LAUNCH_TRACE_WAIT_SECONDS = 10.0
# How often a prelaunched agent looks at its start gate: each look is one storage GET.
GATE_POLL_SECONDS = 0.5
# Consecutive failed IMDS polls before MetadataServiceUnreachable is reported: one slow answer on
# a loaded instance is not a fault; three in a row (noticePollSeconds apart) is.
IMDS_FAILURES_FOR_FAULT = 3
# Consecutive failed periodic checkpoint syncs before CheckpointSyncFailing is reported.
SYNC_FAILURES_FOR_FAULT = 2
# How long AgentRestarted stays listed after the agent adopted a running job (then it clears; the
# controller keeps the event).
AGENT_RESTARTED_FAULT_SECONDS = 300.0


class StopRequest:
    def __init__(self, kind, reason, message, terminate_at=None, terminate_iso=None):
        self.kind = kind  # "interrupt" (spot notice) or "stop" (controller)
        self.reason = reason
        self.message = message
        self.terminate_at = terminate_at  # epoch seconds the notice says the instance goes, or None
        self.terminate_iso = terminate_iso


def parse_notice_time(text):
    """Epoch seconds of an IMDS notice time such as 2026-01-01T12:02:00Z, or None."""
    if not isinstance(text, str):
        return None
    from datetime import datetime, timezone
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return None


class Agent:
    """Supervises the attempt described by cfg (AgentConfig); run() returns the exit code."""

    def __init__(self, cfg, log):
        self.cfg = cfg
        self.log = log
        self.key = {"run": cfg["run"], "generation": cfg["generation"], "attempt": cfg["attempt"]}
        gen_prefix = "%s/g%d" % (run_prefix(cfg), cfg["generation"])
        self.attempt_prefix = "%s/a%d/" % (gen_prefix, cfg["attempt"])
        self.state = cfg["stateDir"]
        self.secret_values = []
        self.status_lock = threading.RLock()
        self.status = dict(self.key, phase="starting", seq=0, heartbeatAt=now_iso(), agentPid=os.getpid())
        self.stop_event = threading.Event()
        self.stop_request = None
        self.threads_stop = threading.Event()
        self.sync_stop = threading.Event()
        self.threads = []
        # Set once the final status and result.json are written: nothing is published after them
        # (a checkpoint restore abandoned by the attempt's end may still be running; see start_restore).
        self.finished = False
        self.publish_wake = threading.Event()
        self.publisher_running = False
        # A phase set since the last status write (written first by the heartbeat thread).
        self.phase_unpublished = False
        # Why the job's group was SIGKILLed after the stop signal (grace_deadline's reason), if it was.
        self.killed_because = None
        self.child = None
        self.secrets = {}
        self.tail_from = 0
        self.progress_from = None
        self.declarations_from = None  # job.log offset from which declarations are read (adopt)
        self.faults = Faults(lambda items: self.set_status(faults=items or None), log)
        self.sync_failures = 0
        self.restarted_at = None
        self.stalled = None
        self.storage = open_storage(cfg, log)
        self.joblog = JobLog(self.state, self.storage, self.attempt_prefix, self.redact_bytes, log)
        self.progress = ProgressFollower(self.key, self.storage, self.attempt_prefix, self.state, cfg.get("progressPattern"),
                                         self.redact_bytes, log)
        # The job's session and everything descended from it (torchrun's workers run in sessions
        # of their own): watched for open checkpoint files, and killed with the job.
        self.job_processes = JobProcesses(environment=[
            "RUNCTL_RUN=%s" % cfg["run"], "RUNCTL_GENERATION=%s" % cfg["generation"],
            "RUNCTL_ATTEMPT=%s" % cfg["attempt"], "RUNCTL_CHECKPOINT_DIR=%s" % cfg["checkpointDir"]])
        self.subreaper = False  # become_subreaper took effect
        self.checkpoints = Checkpoints(cfg, self.storage, self.state, self.key, log, self.job_log_note,
                                       self.set_status, self.stopping, self.current_step, self.faults,
                                       processes=self.job_processes)

    # -- paths
    def p(self, name):
        return os.path.join(self.state, name)

    # -- redaction
    def redact_bytes(self, data):
        for value in self.secret_values:
            data = data.replace(value.encode("utf-8"), b"***")
        return data

    def redact(self, text):
        for value in self.secret_values:
            text = text.replace(value, "***")
        return text

    # -- status
    def set_status(self, publish=True, **fields):
        with self.status_lock:
            for k, v in fields.items():
                if v is None:
                    self.status.pop(k, None)
                else:
                    self.status[k] = v
            if "phase" in fields:
                if fields["phase"] in ("interrupting", "stopping") and "stoppingSince" not in self.status:
                    # The ledger dates the notice by it (the controller sees the phase a poll later).
                    self.status["stoppingSince"] = now_iso()
                self.phase_unpublished = True
                self.log("phase %s%s" % (fields["phase"], (": " + self.status["message"]) if fields.get("message") else ""))
                self.job_log_note("phase %s" % fields["phase"])
        if publish:
            self.request_publish()

    def request_publish(self):
        """Phase changes are published at once, by the heartbeat thread when it runs (so the
        caller never waits on storage), synchronously otherwise; never after the final status."""
        if self.finished:
            return
        if self.publisher_running:
            self.publish_wake.set()
        else:
            self.publish_status()

    def publish_status(self):
        """Writes the status; only ever called from one thread at a time, so seq order is write order."""
        with self.status_lock:
            self.phase_unpublished = False
            self.status["seq"] += 1
            self.status["heartbeatAt"] = now_iso()
            doc = json.loads(self.redact(json.dumps(self.status)))
        try:
            self.storage.put_bytes(self.attempt_prefix + "status.json", json_bytes(doc))
        except (StorageError, OSError) as e:
            self.log("status write failed: %s" % e)
        return doc

    def refresh_log_view(self):
        """logTail from the end of job.log (setup output while installing) and the training job's
        progress (progress_history.py), once it started."""
        fields = self.joblog.view(self.tail_from)
        if self.progress_from is not None:
            progress = self.progress.refresh()
            if progress is not None:
                fields["progress"] = progress
        self.set_status(publish=False, **fields)

    def current_step(self):
        """The progress step the job has printed by now (refreshed from job.log), or None."""
        self.refresh_log_view()
        return (self.status.get("progress") or {}).get("step")

    def job_log_note(self, text):
        self.joblog.note(text)

    def ship_logs(self, final=False):
        self.joblog.ship(final)

    # -- background threads
    def start_thread(self, name, target):
        t = threading.Thread(target=self._guarded, args=(name, target), name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _guarded(self, name, target):
        try:
            target()
        except Exception:
            self.log("thread %s crashed: %s" % (name, traceback.format_exc()))

    def heartbeat_loop(self):
        next_beat = time.monotonic()
        while not self.threads_stop.is_set():
            woken = self.publish_wake.wait(max(0.0, next_beat - time.monotonic()))
            if self.threads_stop.is_set():
                return
            self.publish_wake.clear()
            try:
                if woken and self.phase_unpublished and time.monotonic() >= next_beat:
                    # A phase change (a notice: "interrupting") goes out before the beat's log
                    # shipping: each of those storage calls takes a second or more on a loaded
                    # instance, and the controller launches the replacement on this status.
                    self.publish_status()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.cfg["heartbeatSeconds"]
                    self.ship_logs()
                    self.refresh_log_view()
                    self.progress.publish()
                    if self.restarted_at is not None and time.monotonic() - self.restarted_at > AGENT_RESTARTED_FAULT_SECONDS:
                        self.restarted_at = None
                        self.faults.clear("AgentRestarted")
                self.publish_status()
            except Exception as e:
                self.log("heartbeat failed: %s" % e)

    def watch_loop(self):
        """Polls IMDS for a notice every noticePollSeconds. Nothing else runs on this thread: a
        storage call (the control object, seconds on a loaded instance, longer while S3 throttles
        and the AWS CLI backs off) must never delay seeing a notice whose lead is two minutes."""
        imds = Imds(self.cfg["imdsUrl"], self.log)
        rebalance_seen = False
        while not self.threads_stop.is_set():
            notice, rebalance = imds.poll()
            self.check_imds(imds)
            if rebalance and not rebalance_seen:
                rebalance_seen = True
                self.log("rebalance recommendation: %s" % json.dumps(rebalance))
                self.set_status(publish=False, rebalanceRecommendation=rebalance)
            if notice and not self.stop_event.is_set():
                action = notice.get("action", "terminate")
                when = notice.get("time")
                what = "scheduled event" if notice.get("scheduled") else "spot interruption notice"
                msg = "%s: %s%s" % (what, action, " at " + when if when else "")
                self.request_stop(StopRequest("interrupt", "scheduled-event" if notice.get("scheduled") else "spot", msg,
                                              parse_notice_time(when), when))
            self.threads_stop.wait(self.cfg["noticePollSeconds"])

    def control_loop(self):
        """Reads the controller's control object (a stop request) every max(noticePollSeconds,
        heartbeatSeconds), on its own thread so a slow read never holds up the IMDS poll."""
        every = max(self.cfg["noticePollSeconds"], self.cfg["heartbeatSeconds"])
        while not self.threads_stop.wait(every):
            self.check_control()

    def check_imds(self, imds):
        """MetadataServiceUnreachable while IMDS has failed IMDS_FAILURES_FOR_FAULT polls in a row."""
        if imds.failures >= IMDS_FAILURES_FOR_FAULT:
            self.faults.report(
                "MetadataServiceUnreachable",
                "the instance metadata service at %s does not answer (%s), so no spot interruption notice can be seen "
                "and an interruption would stop the job without a final checkpoint; check the instance's metadata "
                "options (HttpEndpoint enabled, HttpPutResponseHopLimit) and that no firewall blocks it "
                "(runctl never sends metadata requests through an HTTP proxy)" % (imds.base, imds.last_error or "no answer"))
        elif imds.failures == 0:
            self.faults.clear("MetadataServiceUnreachable")

    def check_control(self):
        try:
            raw = self.storage.get_bytes(self.attempt_prefix + "control.json")
        except (StorageError, OSError) as e:
            self.log("control read failed: %s" % e)
            return
        if raw is None or self.stop_event.is_set():
            return
        try:
            doc = json.loads(raw.decode("utf-8"))
        except ValueError:
            self.log("control.json is not valid JSON; ignored")
            return
        if isinstance(doc, dict) and doc.get("action") == "stop":
            reason = str(doc.get("reason") or "unspecified")
            self.request_stop(StopRequest("stop", reason, "stop requested by the controller: %s" % reason))

    def request_stop(self, req):
        if self.stop_event.is_set():
            return
        self.stop_request = req
        self.log(req.message)
        self.stop_event.set()

    def checkpoint_loop(self):
        """Every DECLARATION_POLL_SECONDS: the job's declarations (a declared save is synced at
        once: this poll is most of the delay between a save and its upload starting); every
        TICK_SECONDS: also the job's open files; every syncIntervalSeconds: a periodic sync.
        The large files of a save in progress are stored ahead of its declaration on a thread of
        their own (stage_watch), joined before this returns."""
        self.checkpoints.start_watching(self.joblog.path, self.declarations_from if self.declarations_from is not None else (self.progress_from or 0),
                                        noted_until=lambda: self.joblog.noted_until)
        # Declarations are read on a thread of their own, so one made while this loop stores a
        # large file is timed when it was made, not when the loop gets to it.
        threading.Thread(target=self.declaration_watch, name="declarations", daemon=True).start()
        stager = threading.Thread(target=self._guarded, args=("stager", self.stage_watch), name="stager", daemon=True)
        stager.start()
        try:
            self._checkpoint_ticks()
        finally:
            stager.join()  # the final sync, next, then sees no file half stored ahead

    def _checkpoint_ticks(self):
        next_sync = time.monotonic() + self.cfg["syncIntervalSeconds"]
        next_watch = 0.0
        while not self.sync_stop.wait(DECLARATION_POLL_SECONDS):
            sid = self.child.pid if self.child is not None else None
            watch = time.monotonic() >= next_watch
            if watch:
                next_watch = time.monotonic() + TICK_SECONDS
            try:
                declared = self.checkpoints.tick(sid if watch else None)
                if declared or time.monotonic() >= next_sync or self.checkpoints.retry_due():
                    next_sync = time.monotonic() + self.cfg["syncIntervalSeconds"]
                    self.checkpoints.sync(final=False, sid=sid)
                    self.checkpoints.check_stalled()
                    self.sync_ok()
                else:
                    self.checkpoints.retain_if_due()
            except Exception as e:
                self.log("checkpoint sync failed: %s" % e)
                self.sync_failed(e)

    def stage_watch(self):
        """Every Checkpoints.stage_interval, once the job has declared a save: Checkpoints.stage,
        on this thread, so a declaration is synced at once while a file is being stored ahead
        (the sync then reuses it, Checkpoints._add_files), not after it. After storing, it looks
        again at once: the job may have closed the next file meanwhile."""
        wait = STAGE_TICK_SECONDS
        while not self.sync_stop.wait(wait):
            wait = self.checkpoints.stage_interval()
            if not self.checkpoints.declares_saves:
                continue
            sid = self.child.pid if self.child is not None else None
            try:
                if self.checkpoints.stage(sid):
                    wait = DECLARATION_POLL_SECONDS
            except Exception as e:  # the declared sync stores the file itself, and reports a failure
                self.log("storing a save ahead of its declaration failed: %s" % e)

    def declaration_watch(self):
        """Every DECLARATION_POLL_SECONDS until the checkpoint loop stops: Checkpoints.poll_declarations."""
        while not self.sync_stop.wait(DECLARATION_POLL_SECONDS):
            try:
                self.checkpoints.poll_declarations()
            except Exception as e:  # a log that cannot be read now is read at the next poll
                self.log("reading the job's declarations failed: %s" % e)

    def sync_ok(self):
        self.sync_failures = 0
        self.faults.clear("CheckpointSyncFailing")

    def sync_failed(self, err, final=False):
        """CheckpointSyncFailing after SYNC_FAILURES_FOR_FAULT failures in a row (at once for the final sync)."""
        self.sync_failures += 1
        if final or self.sync_failures >= SYNC_FAILURES_FOR_FAULT:
            self.faults.report(
                "CheckpointSyncFailing",
                "%s checkpoint upload to %s failed%s: %s; fix access to spec.checkpoints.storage (permissions, bucket, "
                "disk space): until then an interruption loses the work since the last published checkpoint"
                % ("the final" if final else "every", self.cfg["storage"],
                   "" if final else " %d times in a row" % self.sync_failures, str(err)[-300:]))

    def sync_checkpoint(self, final, clean_exit=False):
        return self.checkpoints.sync(final, clean_exit=clean_exit)

    # -- phases
    def run(self):
        result = read_json(self.p("result.json"))
        if result:
            self.log("attempt already ended (%s); re-publishing its final status" % result.get("phase"))
            self.status = result
            self.status["seq"] = max(self.previous_seq(), result.get("seq", 0))
            self.publish_status()
            return 0
        self.status["seq"] = self.previous_seq()
        self.publisher_running = True
        self.start_thread("heartbeat", self.heartbeat_loop)
        self.start_thread("watch", self.watch_loop)
        self.start_thread("control", self.control_loop)

        job = self.launched("job")
        if job:
            return self.adopt(job)

        self.check_control()  # a stop that is already asked for: start nothing
        if self.stopping():
            return self.finish_stopped()
        try:
            self.set_status(phase="syncing")
            # The checkpoint is restored on a thread of its own while the code is fetched and
            # setup runs (or its cache is restored): all are mostly downloads and the job needs
            # them all, so an interruption costs the longest, not their sum (issue 12). A
            # checkpoint folder inside the work folder waits for the code, whose unpacking swaps
            # that folder. A replacement launched during the notice restores only once its start
            # gate opens: the attempt before has stopped, so its final checkpoint is the one
            # restored and two jobs never train at once.
            restore = self.start_restore() if not self.checkpoints_in_work_dir() else None
            self.resolve_secrets()
            fetch_bundle(self.storage, self.cfg["bundleKey"], self.cfg["workDir"], self.p("bundle.tar.gz"),
                         self.cfg["storage"], self.log)
            if self.stopping():
                return self.finish_stopped()
            if restore is None:
                restore = self.start_restore()
            ended = self.install()
            resumed, restore_ended = self.join_restore(restore)
            if ended is not None:
                return ended
            if restore_ended is not None:
                return restore_ended
            return self.train(resumed)
        except (AgentFailure, StorageError) as e:
            return self.finish("failed", message=str(e))
        except OSError as e:
            return self.finish("failed", message="agent error: %s" % e)

    def checkpoints_in_work_dir(self):
        work = os.path.realpath(self.cfg["workDir"])
        folder = os.path.realpath(self.cfg["checkpointDir"])
        return folder == work or folder.startswith(work + os.sep)

    def start_restore(self):
        """Starts the checkpoint restore (behind the start gate when there is one) on a thread;
        join_restore() returns its outcome. An attempt that ends first (a failed setup, a stop)
        does not wait for it: finish() sets threads_stop, which ends a wait at the gate, and
        publishes the final status at once; a download still running is abandoned with the
        process (the restore swaps a checkpoint in by rename only once it is whole, and nothing is
        published after the final status). A restore of many gigabytes must not hold up the report
        that the attempt failed."""
        outcome = {"done": threading.Event()}

        def work():
            try:
                if self.cfg.get("startGate") and not self.gate_open():
                    self.job_log_note("waiting at the start gate for attempt %d to stop" % (self.cfg["attempt"] - 1))
                    if not self.wait_for_gate():
                        outcome["result"] = "stopped"
                        return
                outcome["restoring"] = True
                self.job_log_note("restoring the checkpoint")
                try:
                    outcome["resumed"] = self.checkpoints.restore()
                    outcome["result"] = "stopped" if self.stopping() else "restored"
                except NoCheckpointLeft as e:
                    outcome.update(result="no-checkpoint", message=str(e))
                except (AgentFailure, StorageError, OSError) as e:
                    outcome.update(result="error", message="checkpoint restore failed: %s" % e)
                self.job_log_note("checkpoint restore done")
            finally:
                outcome["done"].set()

        threading.Thread(target=self._guarded, args=("restore", work), name="restore", daemon=True).start()
        return outcome

    def join_restore(self, outcome):
        """(resumed, None) once the restore thread has restored; (None, exit code) when the
        attempt ended there (a stop, no checkpoint left to restore, an error). An attempt already
        finished by setup gets (None, None): nothing more to do."""
        if self.status.get("phase") in ("succeeded", "failed", "stopped", "interrupted"):
            return None, None
        waiting = None
        if not outcome["done"].is_set():
            if outcome.get("restoring"):
                self.set_status(phase="restoring")
            else:
                waiting = "set up; waiting for attempt %d to stop before starting the job" % (self.cfg["attempt"] - 1)
                self.set_status(phase="waiting", message=waiting)
            while not outcome["done"].wait(0.2):
                if self.stopping():
                    break  # a stop or a notice: the job never started, so there is nothing to wait for
                if outcome.get("restoring") and self.status.get("phase") == "waiting":
                    self.set_status(phase="restoring", message=None if self.status.get("message") == waiting else self.status.get("message"))
        if waiting is not None and self.status.get("message") == waiting:
            # Only the wait's own message goes: the restore's (no checkpoint passed verification) stays.
            self.set_status(publish=False, message=None)
        result = outcome.get("result")
        if result == "restored":
            return outcome.get("resumed", False), None
        if result == "no-checkpoint":
            self.set_status(publish=False, failureReason="NoCheckpointLeft")
            return None, self.finish("failed", message=outcome["message"])
        if result == "error":
            return None, self.finish("failed", message=outcome["message"])
        if result == "stopped" or self.stopping():
            return None, self.finish_stopped()
        return None, self.finish("failed", message="agent error: the checkpoint restore ended without a result (agent.log says why)")

    def gate_open(self):
        try:
            return self.storage.get_bytes(self.attempt_prefix + "gate.json") is not None
        except (StorageError, OSError) as e:
            self.log("start gate read failed: %s" % e)
            return False

    def wait_for_gate(self):
        """True once the controller has opened this attempt's start gate (gate.json); False when a
        stop or a notice ends the attempt while it waits (no job ran: nothing to save), or the
        attempt ended otherwise (threads_stop: a failed setup)."""
        previous = self.cfg["attempt"] - 1
        poll = min(GATE_POLL_SECONDS, self.cfg["noticePollSeconds"])
        while True:
            if self.stopping() or self.threads_stop.is_set():
                return False
            if self.gate_open():
                self.log("start gate open: attempt %d has stopped" % previous)
                return True
            self.stop_event.wait(poll)

    def previous_seq(self):
        try:
            raw = self.storage.get_bytes(self.attempt_prefix + "status.json")
            if raw:
                return int(json.loads(raw.decode("utf-8")).get("seq", 0))
        except (StorageError, OSError, ValueError, AttributeError):
            pass
        return 0

    def stopping(self):
        return self.stop_event.is_set()

    def resolve_secrets(self):
        try:
            self.secrets = resolve_secrets(self.cfg, self.log)
        except AgentFailure as e:
            self.faults.report(
                "SecretUnresolved",
                "%s; check that the parameter exists in %s and that the instance profile may ssm:GetParameter it "
                "(and kms:Decrypt for a SecureString)" % (e, self.cfg.get("region") or "the run's region"))
            raise
        self.faults.clear("SecretUnresolved")
        self.secret_values = redaction_values(self.secrets)

    def install(self):
        """None when setup succeeded, was restored from the setup cache, or there is none;
        otherwise the attempt has been finished."""
        setup = self.cfg.get("setup")
        if not setup or not setup.strip():
            return None
        if read_int(self.p("setup.exit")) == 0:
            self.log("setup already completed")
            outcome = read_setup_cache_outcome(self.state)
            if outcome:
                self.set_status(publish=False, setupCache=outcome)
            return None
        self.set_status(phase="installing")
        record = self.launched("setup")
        adopting = bool(record and (process_alive(record["pid"], record.get("startTime")) or os.path.exists(self.p("setup.exit"))))
        cache = self.setup_cache_lookup(restore=not adopting)
        if cache is not None and cache.get("report", {}).get("result") == "restored":
            atomic_write(self.p("setup.exit"), b"0\n")  # a restarted agent skips setup, as after a run of it
            return None
        if adopting:
            child = Child("setup", record["pid"], record.get("startTime"), self.p("setup.exit"))
            self.tail_from = record.get("logOffset", 0)
            self.log("adopting setup (pid %d)" % child.pid)
        else:
            remove_quietly(self.p("setup.exit"))
            child = self.launch("setup", setup, self.p("setup.exit"), self.p("setup.json"))
        self.refresh_log_view()
        self.request_publish()
        code, stopped = self.wait_child(child)
        if stopped:
            return self.finish_stopped()
        if code == 0:
            if cache is not None:
                self.setup_cache_store(cache)
            return None
        if code is None:
            return self.finish("failed", message="setup disappeared without an exit code")
        return self.finish("failed", exitCode=code, message="setup exited with code %d" % code)

    # -- setup cache (setup_cache.py)
    def setup_cache_lookup(self, restore=True):
        """None without spec.setup.cache; otherwise {"cache", "key", "inputs", "report"} where the
        report says whether the cache was restored (then setup is skipped) or why not."""
        if not self.cfg.get("setupCache"):
            return None
        cache = SetupCache(self.cfg, self.storage, self.log)
        try:
            key, inputs = cache.key()
        except CacheUnavailable as e:
            self.setup_cache_report({"result": "unavailable", "reason": str(e)})
            return None
        if not restore:
            return {"cache": cache, "key": key, "inputs": inputs,
                    "report": {"result": "miss", "reason": "setup was already running when this agent started"}}
        report = cache.restore(key)
        report["key"] = key
        if report["result"] == "restored":
            self.setup_cache_report(report)
        else:
            self.log("setup cache not restored (%s): %s" % (report["result"], report["reason"]))
            self.job_log_note("setup cache not restored: %s; running setup" % report["reason"])
        return {"cache": cache, "key": key, "inputs": inputs, "report": report}

    def setup_cache_store(self, lookup):
        """After setup succeeded: archive the cached paths into storage, and report "rebuilt"."""
        miss = lookup["report"]
        seconds = self.setup_seconds()
        report = {"result": "rebuilt", "key": lookup["key"], "reason": miss.get("reason"), "missed": miss["result"]}
        if seconds is not None:
            report["setupSeconds"] = round(seconds, 2)
        try:
            saved = lookup["cache"].save(lookup["key"], lookup["inputs"], seconds or 0.0)
            report.update(saved)
        except (StorageError, OSError, tarfile.TarError) as e:
            report.update(stored=False, error="cannot store the setup cache: %s" % e)
        self.setup_cache_report(report)

    def setup_seconds(self):
        """Seconds the setup just finished took, from its launch record."""
        record = read_json(self.p("setup.json")) or {}
        started = parse_notice_time(record.get("startedAt"))
        return max(0.0, time.time() - started) if started is not None else None

    def setup_cache_report(self, report):
        """Status field setupCache (an event per attempt on the controller), a job log line, and
        stateDir/setup-cache.json so a restarted agent reports it again."""
        report["message"] = setup_cache_message(report)
        self.log(report["message"])
        self.job_log_note(report["message"])
        atomic_write(self.p("setup-cache.json"), json_bytes(report))
        self.set_status(setupCache=report)

    def train(self, resumed):
        remove_quietly(self.p("job.exit"))
        env_extra = {"RUNCTL_RESUMING": "1" if resumed else "0"}
        self.child = self.launch("job", self.cfg["command"], self.p("job.exit"), self.p("job.json"), env_extra)
        self.progress_from = self.tail_from
        self.progress.begin(self.progress_from)
        # The phase, the pid and the start go out in one status, so the controller's "first trained"
        # is the job's start on this clock, not the poll that saw it.
        started = (read_json(self.p("job.json")) or {}).get("startedAt")
        self.set_status(phase="training", pid=self.child.pid, jobStartedAt=started)
        return self.supervise()

    def launched(self, name):
        """The launch record of a child a previous agent started, completed with the pid the
        wrapper wrote if that agent died before recording it; None when nothing was started."""
        record = read_json(self.p(name + ".json"))
        if not record:
            return None
        if record.get("pid"):
            return record
        deadline = time.monotonic() + LAUNCH_TRACE_WAIT_SECONDS
        while time.monotonic() < deadline:
            pid = read_int(self.p(name + ".pid"))
            if pid:
                record.update(pid=pid, pgid=pid, startTime=process_start_time(pid))
                atomic_write(self.p(name + ".json"), json_bytes(record))
                atomic_write(self.p("job.pgid"), ("%d\n" % pid).encode("ascii"))
                self.log("found %s pid %d written by its wrapper after the previous agent died" % (name, pid))
                return record
            time.sleep(0.05)
        self.log("previous agent recorded a %s launch but no process ever started; starting afresh" % name)
        remove_quietly(self.p(name + ".json"))
        return None

    def adopt(self, record):
        exit_path = self.p("job.exit")
        child = Child("job", record["pid"], record.get("startTime"), exit_path)
        self.tail_from = self.progress_from = record.get("logOffset", 0)
        self.progress.begin(self.progress_from)
        self.secrets = {}
        last = self.checkpoints.last_checkpoint()
        if last:
            self.set_status(publish=False, lastCheckpoint=last)
        if record.get("restoredFrom"):
            self.set_status(publish=False, restoredFrom=record["restoredFrom"])
            self.checkpoints.adopt_restored(record["restoredFrom"])
        self.child = child
        self.resolve_secrets_for_redaction()
        if child.running():
            # Declarations the job printed before this agent started were taken by the one
            # before it (or made while none watched, which cannot be timed): read the new ones.
            self.declarations_from = self.joblog.size()
            self.log("adopting running job (pid %d, pgid %d)" % (child.pid, child.pgid))
            self.job_log_note("agent restarted; adopted running job pid %d" % child.pid)
            self.restarted_at = time.monotonic()
            self.faults.report(
                "AgentRestarted",
                "the agent on the instance stopped and a new one adopted the running job (pid %d) without restarting it; "
                "nothing to do if this happens once; if it repeats, the agent is being killed (memory pressure?): "
                "read agent.log in the instance's runctl state folder" % child.pid)
        else:
            self.log("job (pid %d) ended while no agent was watching" % child.pid)
        self.set_status(phase="training", pid=child.pid, jobStartedAt=record.get("startedAt"))
        return self.supervise()

    def resolve_secrets_for_redaction(self):
        try:
            self.resolve_secrets()
        except AgentFailure as e:
            self.log("secrets not resolved for redaction after adoption: %s" % e)

    def launch(self, name, command, exit_path, record_path, env_extra=None):
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.cfg["env"])
        env.update(getattr(self, "secrets", {}))
        env.update({
            "RUNCTL_RUN": self.cfg["run"],
            "RUNCTL_RUN_UID": self.cfg.get("uid") or "",
            "RUNCTL_GENERATION": str(self.cfg["generation"]),
            "RUNCTL_ATTEMPT": str(self.cfg["attempt"]),
            "RUNCTL_RESUMING": "0",
            "RUNCTL_CHECKPOINT_DIR": self.cfg["checkpointDir"],
        })
        env.update(env_extra or {})
        pid_path = self.p(name + ".pid")
        self.job_log_note("starting %s" % name)
        offset = self.joblog.size()
        record = {"startedAt": now_iso(), "logOffset": offset}
        if name == "job" and self.status.get("restoredFrom"):
            record["restoredFrom"] = self.status["restoredFrom"]
        remove_quietly(pid_path)
        atomic_write(record_path, json_bytes(record))  # before the start: a launch is never untraced
        # A process of the job that detaches (a double fork, `setsid -f`) is reparented to the
        # agent, not init, and stays the job's: watched for open checkpoint files, and killed.
        if not self.subreaper:
            self.subreaper = become_subreaper()
            if not self.subreaper:
                self.log("cannot become the subreaper of the job's processes (no prctl): a process that detaches from the job is not watched")
        popen = spawn_wrapped(name, command, self.cfg["workDir"], env, self.joblog.path, exit_path, pid_path)
        start_time = process_start_time(popen.pid)
        record.update(pid=popen.pid, pgid=popen.pid, startTime=start_time)
        atomic_write(record_path, json_bytes(record))
        atomic_write(self.p("job.pgid"), ("%d\n" % popen.pid).encode("ascii"))
        self.tail_from = offset
        self.log("started %s: pid/pgid %d" % (name, popen.pid))
        return Child(name, popen.pid, start_time, exit_path, popen)

    def wait_child(self, child):
        """Wait for the child to end or a stop request. Returns (exit code or None, stopped?).

        spec.timeouts.stall is watched here, on the instance: the controller may be offline for
        hours, and only the agent sees the job's output as it is written. A training job whose
        output has not grown for stallSeconds is stopped like a controller stop (signal, grace
        period, SIGKILL); self.stalled tells supervise() to fail the attempt as Stalled."""
        stall = self.cfg.get("stallSeconds") if child.name == "job" else None
        last_size, last_change = self.joblog.output_size(), time.monotonic()
        while True:
            if self.stop_event.wait(0.1):
                self.stop_child(child)
                return child.exit_code(), True
            if not child.running():
                code = child.exit_code()
                if code != 0:
                    self.checkpoints.capture.cut()  # died: its last writes may be cut short
                self.reap_stragglers(child)
                return code, False
            if stall:
                size = self.joblog.output_size()
                if size != last_size:
                    last_size, last_change = size, time.monotonic()
                elif time.monotonic() - last_change >= stall:
                    self.stalled = stall
                    self.stop_child(child, "no output for %ss (spec.timeouts.stall)" % _num(stall))
                    return child.exit_code(), False

    def stop_child(self, child, why=None):
        """Signal the job, wait the grace period, then SIGKILL its group. `why` (a stall) stops it
        without a stop request and without changing the phase."""
        req = self.stop_request
        if why is None:
            self.set_status(phase="interrupting" if req.kind == "interrupt" else "stopping", message=req.message)
        sig = getattr(signal, self.cfg["signal"])
        if child.running():
            reason = why or req.message
            # What the job is writing as the signal lands: a save it interrupts is not trusted
            # unless the job declares one after (capture.py, rule 3).
            self.checkpoints.capture.signalled(child.pid)
            sent = send_job_signal(child.pgid, sig, self.cfg.get("signalScope") or "main", self.log, self.job_processes)
            self.log("%s (%s)" % (sent, reason))
            self.job_log_note("%s (%s)" % (sent, reason))
            deadline, ends = self.grace_deadline(req)
            while child.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            if child.running():
                self.killed_because = ends
                self.log("%s; killing process group %d and the job's processes in other sessions" % (ends, child.pgid))
                self.job_log_note("%s; killing the job" % ends)
                self.checkpoints.capture.killing(child.pid)  # what the kill cuts short is never trusted
                self.job_processes.signal(child.pgid, signal.SIGKILL)
                while child.running():
                    time.sleep(0.05)
            elif child.exit_code() != 0:
                self.checkpoints.capture.cut()  # died on its own in the grace period (a handler that crashed)
        self.reap_stragglers(child)

    def grace_deadline(self, req):
        """(monotonic deadline, why it ends) of the wait after the signal: gracePeriodSeconds, cut
        short so the final upload (estimated from this instance's measured sync throughput) ends
        FINAL_SYNC_MARGIN_SECONDS before the termination time the notice gives."""
        grace = self.cfg["gracePeriodSeconds"]
        why = "grace period of %ss over" % grace
        if req is None or req.terminate_at is None or req.terminate_at <= time.time():
            # No time given, or one already past (a skewed clock): the grace period alone decides.
            return time.monotonic() + grace, why
        upload = self.checkpoints.final_wait_seconds(self.checkpoints.pending_bytes())
        lead = req.terminate_at - time.time()
        margin = min(FINAL_SYNC_MARGIN_SECONDS, FINAL_SYNC_MARGIN_SHARE * lead)
        left = lead - upload - margin
        if left < grace:
            why = ("wait ended %.1fs before the termination time %s to leave %.1fs for the final upload" % (
                upload + margin, req.terminate_iso, upload))
            return time.monotonic() + max(0.0, left), why
        return time.monotonic() + grace, why

    def report_final_sync(self, req, ref):
        """finalSync in the status: was the job's final state safe before the termination time?"""
        now = time.time()
        newest = ((self.status.get("lastCheckpoint") or {}).get("id"))
        left_out = [i["path"] for i in self.checkpoints.last_left_out]
        report = {}
        if req is not None and req.terminate_iso:
            report["terminationTime"] = req.terminate_iso
        if newest:
            report["newest"] = newest
        safe = not left_out and newest is not None
        if ref is not None or safe:
            report["checkpoint"] = ref["id"] if ref is not None else newest
        report["safe"] = bool(safe)
        what = ("checkpoint %s" % ref["id"]) if ref is not None else ("checkpoint %s (nothing newer to publish)" % newest if newest else "no checkpoint")
        if safe and req is not None and req.terminate_at is not None and req.terminate_at > now:
            report["safeSecondsBeforeTermination"] = round(req.terminate_at - now, 1)
            report["message"] = "final %s safe in storage %.1fs before the termination time %s" % (
                what, req.terminate_at - now, req.terminate_iso)
        elif safe:
            report["message"] = "final %s safe in storage" % what
        else:
            why = ("%s still being written when the job ended" % ", ".join(sorted(set(left_out)))) if left_out else "nothing was published"
            report["message"] = "the job's final state is not safe (%s); the newest checkpoint, which a resume gets, is %s" % (
                why, newest or "none (the next attempt starts from scratch)")
        self.log(report["message"])
        self.job_log_note(report["message"])
        self.set_status(publish=False, finalSync=report)

    def reap_stragglers(self, child):
        """Terminate the processes of the job's group still running after its leader ended (TERM,
        STRAGGLER_GRACE_SECONDS, KILL). One may be writing a checkpoint file: what they hold open
        for writing just before, or change after, is not trusted (Capture.killing; break test 17:
        a child rewriting model.bin was killed mid-write after the leader exited 0, and the
        prefix was published). The leader's exit stays clean: a `tee` still draining its pipe
        must not cost the job's last save."""
        if not self.job_processes.alive(child.pgid):
            return
        self.checkpoints.capture.killing(child.pid)
        self.log("processes of the job (group %d, and its descendants in other sessions) outlived its leader; terminating them" % child.pgid)
        self.job_processes.signal(child.pgid, signal.SIGTERM)
        deadline = time.monotonic() + STRAGGLER_GRACE_SECONDS
        while self.job_processes.alive(child.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.job_processes.signal(child.pgid, signal.SIGKILL)

    def supervise(self):
        self.sync_stop.clear()
        self.start_thread("checkpoint", self.checkpoint_loop)
        code, stopped = self.wait_child(self.child)
        self.sync_stop.set()
        self.join_thread("checkpoint")
        ref = self.final_sync(clean_exit=code == 0)
        if stopped:
            self.report_final_sync(self.stop_request, ref)
        self.refresh_log_view()
        if stopped:
            if code != 0:
                self.report_crash_on_notice(code)
            return self.finish_stopped(exit_code=code)
        if self.stalled:
            return self.finish(
                "failed", exitCode=code, reason="Stalled",
                message="the job printed nothing for %ss (spec.timeouts.stall) and was stopped; look for a hang (a collective "
                        "operation waiting on a dead peer, a data-loader deadlock), or raise spec.timeouts.stall if it is "
                        "legitimately quiet that long" % _num(self.stalled))
        if code is None:
            return self.finish("lost", message="the job (pid %d) disappeared without writing an exit code" % self.child.pid)
        if code == 0:
            return self.finish("succeeded", exitCode=0)
        return self.finish("failed", exitCode=code, message="the job exited with code %d" % code)

    def report_crash_on_notice(self, code):
        """JobCrashedOnNotice: the job did not exit 0 after the stop signal (it crashed in its
        handler, had none, or was killed when the grace period ran out)."""
        req = self.stop_request
        killed = code in (None, 137) and self.child is not None
        # Killed when the grace period ran out, or earlier: at the notice's termination time less
        # the final upload (grace_deadline), which the message must say rather than blame the grace period.
        because = self.killed_because or "grace period of %ss over" % self.cfg["gracePeriodSeconds"]
        how = ("was killed (%s)" % because) if killed else ("exited with code %s" % ("unknown" if code is None else code))
        tail = self.status.get("logTail") or []
        self.faults.report(
            "JobCrashedOnNotice",
            "the job %s after %s was sent for %s, instead of saving a checkpoint and exiting 0; make its %s handler "
            "save and exit (the run resumes from the last published checkpoint)%s"
            % (how, self.cfg["signal"], req.message if req else "a stop", self.cfg["signal"],
               "; last output:\n" + "\n".join(tail[-10:]) if tail else ""))

    def final_sync(self, clean_exit=False):
        try:
            return self.sync_checkpoint(final=True, clean_exit=clean_exit)
        except Exception as e:
            self.log("final checkpoint sync failed: %s" % e)
            self.set_status(publish=False, message="final checkpoint sync failed: %s" % e)
            self.sync_failed(e, final=True)
            return None

    def join_thread(self, name):
        for t in self.threads:
            if t.name == name:
                t.join()

    def finish_stopped(self, exit_code=None):
        req = self.stop_request
        phase = "interrupted" if req.kind == "interrupt" else "stopped"
        if self.status.get("phase") not in ("interrupting", "stopping"):
            self.set_status(phase="interrupting" if req.kind == "interrupt" else "stopping", message=req.message)
        return self.finish(phase, exitCode=exit_code, message=req.message)

    def finish(self, phase, exitCode=None, message=None, reason=None):
        """Final logs, final status, result.json; then the pid and marker files go."""
        self.threads_stop.set()
        self.sync_stop.set()
        self.publish_wake.set()
        for t in self.threads:
            t.join()
        self.publisher_running = False
        self.job_log_note("attempt ended: %s%s" % (phase, "" if exitCode is None else " (exit code %d)" % exitCode))
        self.ship_logs(final=True)
        self.refresh_log_view()
        self.progress.publish(force=True)
        self.log("phase %s%s" % (phase, (": " + message) if message else ""))
        with self.status_lock:
            self.status.update(phase=phase)
            if exitCode is not None:
                self.status["exitCode"] = exitCode
            if message:
                self.status["message"] = message
            if reason:
                self.status["reason"] = reason
            final = self.publish_status()
            # Retention after the final status is out: the controller learns that the attempt
            # ended (and a prelaunched replacement may start) without waiting for old
            # checkpoints to be retired; the kept list is then published once more.
            if self.checkpoints.retention_due:
                try:
                    self.checkpoints.retain_if_due(yield_to_saves=False)
                    final = self.publish_status()
                except Exception as e:
                    self.log("retention after the final sync failed (the next attempt retries it): %s" % e)
            self.finished = True
        atomic_write(self.p("result.json"), json_bytes(final))
        for name in ("job.json", "setup.json", "job.pid", "setup.pid", "job.pgid", "job.exit", "setup.exit",
                     "logs.cursor", "checkpoints.json", "restore", "staging", "upload", "snapshot.tmp",
                     "checkpoint-index.json", "store-ops", "setup-cache.json"):
            remove_quietly(self.p(name))
        return 0


def setup_cache_message(r):
    """One sentence for people: restored or rebuilt, how long it took, the seconds saved."""
    if r["result"] == "restored":
        built = r.get("builtBy") or {}
        by = (" built by generation %s attempt %s" % (built.get("generation"), built.get("attempt"))) if built else ""
        if r.get("setupSeconds") is not None:
            return "setup cache restored in %ss instead of running setup (%ss when it ran%s): %ss saved" % (
                _num(r["seconds"]), _num(r["setupSeconds"]), by, _num(r["savedSeconds"]))
        return "setup cache restored in %ss instead of running setup%s" % (_num(r["seconds"]), by)
    if r["result"] == "rebuilt":
        took = (" in %ss" % _num(r["setupSeconds"])) if r.get("setupSeconds") is not None else ""
        if r.get("stored"):
            tail = "; stored for later attempts (%d bytes, %ss)" % (r.get("bytes", 0), _num(r.get("archiveSeconds", 0)))
            if r.get("missing"):
                tail += "; setup did not create %s" % ", ".join(r["missing"])
        else:
            tail = "; not stored: %s" % (r.get("error") or "unknown")
        return "setup ran%s (%s)%s" % (took, r.get("reason") or "no cache", tail)
    return "setup cache not used: %s" % r.get("reason")


def _num(seconds):
    """90 for 90.0, 1.5 for 1.5: seconds as a person writes them."""
    return ("%d" % seconds) if float(seconds).is_integer() else ("%g" % seconds)
