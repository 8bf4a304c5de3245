#!/bin/sh
# ExecStart of github-actions-runner@TIER.service, as the tier's unprivileged runner user.
# Starts the runner for the one job its JIT config (written by prepare-runner.py) registers it
# for. The config goes in through the environment, never the command line (which every user on
# the host can read): the runner reads ACTIONS_RUNNER_INPUT_JITCONFIG and removes it from its
# environment before a job starts. When the job ends the runner exits, systemd kills whatever
# the job left (KillMode=control-group) and starts the next runner with a fresh config.
set -eu
jit="${RUNTIME_DIRECTORY:?run me from github-actions-runner@.service}/jitconfig"
[ -s "$jit" ] || { echo "run-ephemeral: no JIT config at $jit (prepare-runner.py failed?)" >&2; exit 1; }
ACTIONS_RUNNER_INPUT_JITCONFIG="$(cat "$jit")"
rm -f "$jit"
export ACTIONS_RUNNER_INPUT_JITCONFIG
cd "${RUNNER_ROOT:?}"
exec "$RUNNER_ROOT/bin/Runner.Listener" run --startuptype service
