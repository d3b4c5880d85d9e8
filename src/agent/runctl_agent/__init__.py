"""runctl_agent: supervises one attempt of one training run on one instance.

Shipped to instances as one zipapp, ``dist/agent/runctl-agent.pyz`` (built by ``npm run build``
from this package by ``src/agent/build-pyz.py``), and started as

    python3 runctl-agent.pyz --config /path/config.json [--detach | --probe]

Needs only python3 (3.7+ standard library), bash, and for s3:// storage or ssm: secrets the
AWS CLI. The config document is AgentConfig (src/agent/config-types.ts). Storage layout is
src/agent/layout.ts; the status object is AgentStatus (src/providers/types.ts).

Modules, one job each:
  __main__    argv (--config/--detach/--probe), the state-directory lock, signal handlers
  config      loading and checking AgentConfig
  util        atomic writes, JSON, sha256, safe relative paths, file listing
  agentlog    the agent's own log (stateDir/agent.log)
  lock        flock-based liveness lock on stateDir/agent.lock
  storage     file:// and s3:// backends (AWS CLI, bounded retries)
  imds        the EC2 instance metadata service (IMDSv2): spot notices, rebalance
  secrets     ssm: secret resolution through the AWS CLI
  processes   process groups, signals, the job wrapper, liveness by pid + start time
  joblog      the job log's view (logTail) and its shipping as segments
  progress    reading progress from the job's output (tqdm, Lightning, Trainer, nanoGPT, a pattern)
  progress_history  following the job's output; the bounded history kept in storage
  bundle      code bundle download, verification and safe extraction
  checkpoints checkpoint sync, retention and restore
  agent       one attempt's orchestration and status publication
"""
