"""Entry point: `python3 runctl-agent.pyz --config FILE [--detach | --probe]` (docs/agent.md).

Exit codes: 0 the attempt ended (or another agent holds this state directory), 1 the agent
crashed (see agent.log; the job keeps running for the next agent to adopt), 2 bad config.
"""

import argparse
import json
import os
import signal
import sys
import traceback

from .agent import Agent
from .agentlog import AgentLog
from .config import ConfigError, load_config
from .lock import Lock, lock_held
from .processes import process_alive
from .util import atomic_write, read_int, read_json, remove_quietly


class AgentExit(BaseException):
    pass


def probe(cfg):
    """Print {"agent": {alive, pid}, "job": {alive, pid, pgid}, "result": phase or null}."""
    state = cfg["stateDir"]
    job = read_json(os.path.join(state, "job.json")) or read_json(os.path.join(state, "setup.json")) or {}
    pid = job.get("pid") or read_int(os.path.join(state, "job.pid")) or read_int(os.path.join(state, "setup.pid"))
    result = read_json(os.path.join(state, "result.json"))
    out = {
        "agent": {"alive": lock_held(os.path.join(state, "agent.lock")), "pid": read_int(os.path.join(state, "agent.pid"))},
        "job": {"alive": bool(pid) and process_alive(pid, job.get("startTime")),
                "pid": pid, "pgid": read_int(os.path.join(state, "job.pgid"))},
        "result": result.get("phase") if result else None,
    }
    print(json.dumps(out))
    return 0


def install_signal_handlers(log):
    # Handlers (not SIG_IGN) so the job, after exec, gets default dispositions even when the agent
    # was started with some signals ignored (nohup, `cmd &` in a non-interactive shell).
    def leave(signum, _frame):
        log("agent received signal %d; exiting and leaving the job running for a new agent to adopt" % signum)
        raise AgentExit()

    def note(signum, _frame):
        log("agent ignored signal %d" % signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    for s in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, note)


def detach(state_dir):
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(os.path.join(state_dir, "agent.out"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    os.close(out)


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    parser = argparse.ArgumentParser(prog="runctl-agent", description="Supervise one attempt of a runctl training run.")
    parser.add_argument("--config", required=True, help="path of the AgentConfig JSON document")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="fork into a new session and return at once")
    mode.add_argument("--probe", action="store_true", help="print whether the agent and job are alive, as JSON")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        sys.stderr.write("runctl-agent: %s\n" % e)
        return 2
    if args.probe:
        return probe(cfg)
    os.makedirs(cfg["stateDir"], exist_ok=True)
    if args.detach:
        detach(cfg["stateDir"])

    holder = {}
    log = AgentLog(os.path.join(cfg["stateDir"], "agent.log"), lambda text: holder["agent"].redact(text) if "agent" in holder else text)
    lock = Lock(os.path.join(cfg["stateDir"], "agent.lock"))
    if not lock.acquire():
        log("another agent holds %s (pid %s); exiting" % (lock.path, read_int(os.path.join(cfg["stateDir"], "agent.pid"))))
        return 0
    pid_path = os.path.join(cfg["stateDir"], "agent.pid")
    try:
        atomic_write(pid_path, ("%d\n" % os.getpid()).encode("ascii"))
        install_signal_handlers(log)
        log("agent starting for %s g%d a%d" % (cfg["run"], cfg["generation"], cfg["attempt"]))
        agent = Agent(cfg, log)
        holder["agent"] = agent
        return agent.run()
    except AgentExit:
        return 0
    except Exception:
        log("agent crashed: %s" % traceback.format_exc())
        return 1
    finally:
        remove_quietly(pid_path)
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
