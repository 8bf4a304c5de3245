#!/usr/bin/env bash
# Install a self-hosted GitHub Actions runner on the Ray head node, as a systemd service.
#
#   sudo deploy/runner/setup-runner.sh --url https://github.com/OWNER/REPO --token TOKEN \
#        [--name NAME] [--ray-address 127.0.0.1:6379] [--mlflow-uri URI] \
#        [--version 2.328.0 --sha256 HASH] [--dry-run]
#
# TOKEN is a registration token (repo Settings -> Actions -> Runners -> New self-hosted runner,
# or `gh api -X POST repos/OWNER/REPO/actions/runners/registration-token`); it expires in an
# hour and is not stored. The runner gets the labels `self-hosted` (automatic) and `ray`, which
# the training workflows ask for, and runs as the unprivileged user `ghrunner` with
# RAY_ADDRESS pointing at this node's Ray cluster. --dry-run prints the steps, changes nothing.
set -euo pipefail

URL="" TOKEN="" NAME="$(hostname)-ray" RAY_ADDRESS_VALUE="127.0.0.1:6379"
MLFLOW_URI="" VERSION="2.328.0" SHA256="" DRY_RUN=0
RUNNER_USER="ghrunner" RUNNER_DIR="/opt/actions-runner" LABELS="ray"
UNIT_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/github-actions-runner.service"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --url) URL="$2"; shift 2 ;;
    --token) TOKEN="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --ray-address) RAY_ADDRESS_VALUE="$2"; shift 2 ;;
    --mlflow-uri) MLFLOW_URI="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --sha256) SHA256="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [[ -z "$URL" || -z "$TOKEN" ]]; then
  echo "error: --url and --token are required" >&2; usage >&2; exit 2
fi

run() {  # print every step; execute unless --dry-run
  echo "+ $*"
  if [[ "$DRY_RUN" -eq 0 ]]; then "$@"; fi
}
as_runner() { run sudo -u "$RUNNER_USER" --preserve-env=RUNNER_ALLOW_RUNASROOT "$@"; }

if [[ "$DRY_RUN" -eq 0 && "$(id -u)" -ne 0 ]]; then
  echo "error: run as root (it creates a user and a systemd unit)" >&2; exit 1
fi

TARBALL="actions-runner-linux-x64-${VERSION}.tar.gz"
id "$RUNNER_USER" >/dev/null 2>&1 || run useradd --system --create-home --shell /bin/bash "$RUNNER_USER"
run mkdir -p "$RUNNER_DIR"
run curl -fsSL -o "/tmp/${TARBALL}" \
  "https://github.com/actions/runner/releases/download/v${VERSION}/${TARBALL}"
if [[ -n "$SHA256" ]]; then
  run bash -c "echo '${SHA256}  /tmp/${TARBALL}' | sha256sum -c -"
fi
run tar -xzf "/tmp/${TARBALL}" -C "$RUNNER_DIR"
run chown -R "$RUNNER_USER:$RUNNER_USER" "$RUNNER_DIR"
as_runner "$RUNNER_DIR/config.sh" --unattended --replace --url "$URL" --token "$TOKEN" \
  --name "$NAME" --labels "$LABELS" --work _work

# The runner reads .env at start: jobs see the cluster and the tracking server.
ENV_FILE="$RUNNER_DIR/.env"
run bash -c "printf 'RAY_ADDRESS=%s\nMLFLOW_TRACKING_URI=%s\nRAY_USAGE_STATS_ENABLED=0\n' \
  '$RAY_ADDRESS_VALUE' '$MLFLOW_URI' > '$ENV_FILE'"
run chown "$RUNNER_USER:$RUNNER_USER" "$ENV_FILE"

run install -m 0644 "$UNIT_SRC" /etc/systemd/system/github-actions-runner.service
run systemctl daemon-reload
run systemctl enable --now github-actions-runner.service
echo "runner '$NAME' (labels: self-hosted, $LABELS) installed; logs: journalctl -u github-actions-runner -f"
