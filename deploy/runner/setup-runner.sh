#!/usr/bin/env bash
# Install the ephemeral GitHub Actions runner of one trust tier (and this host's Ray head) as
# systemd services. One tier per host: PR code must not share a machine or a Ray cluster with
# the jobs that train what main registers or deploy what production serves.
#
#   sudo deploy/runner/setup-runner.sh --tier pr|trusted|release \
#        --url https://github.com/OWNER/REPO --token-file FILE \
#        [--runner-group-id N] [--ray-address ray://127.0.0.1:10001] [--mlflow-uri URI] \
#        [--no-ray-head] [--version 2.328.0 --sha256 HASH] [--dry-run]
#
# --url is a repository (repository runners) or an organisation (https://github.com/ORG: runner
# groups, which is what keeps the tiers apart; see docs/runbooks/repository-settings.md).
# --token-file holds a token allowed to register runners (fine-grained: "Administration: write"
# on the repository, or "Self-hosted runners: write" on the organisation). It is copied to
# /etc/gha-runner/TIER/github-token (root, 0600) and used only by the root helper that fetches
# one JIT config per job; the runner and its jobs never see it. Jobs run as gha-TIER; the Ray
# head as ray. --dry-run prints every step and changes nothing.
set -euo pipefail

TIER="" URL="" TOKEN_FILE="" GROUP_ID="1" RAY_ADDRESS_VALUE="ray://127.0.0.1:10001"
MLFLOW_URI="" VERSION="2.328.0" SHA256="" DRY_RUN=0 RAY_HEAD=1
INSTALL_DIR="/opt/actions-runner" LIBEXEC="/usr/local/libexec/gha-runner"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tier) TIER="$2"; shift 2 ;;
    --url) URL="$2"; shift 2 ;;
    --token-file) TOKEN_FILE="$2"; shift 2 ;;
    --runner-group-id) GROUP_ID="$2"; shift 2 ;;
    --ray-address) RAY_ADDRESS_VALUE="$2"; shift 2 ;;
    --mlflow-uri) MLFLOW_URI="$2"; shift 2 ;;
    --no-ray-head) RAY_HEAD=0; shift ;;
    --version) VERSION="$2"; shift 2 ;;
    --sha256) SHA256="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --token) echo "error: --token is gone: runners are ephemeral and register per job with" \
               "a JIT config; pass --token-file (see --help)" >&2; exit 2 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [[ -z "$TIER" || -z "$URL" || -z "$TOKEN_FILE" ]]; then
  echo "error: --tier, --url and --token-file are required" >&2; usage >&2; exit 2
fi
case "$TIER" in pr|trusted|release) ;; *)
  echo "error: --tier must be pr, trusted or release, not '$TIER'" >&2; exit 2 ;;
esac
if [[ ! "$URL" =~ ^https://[^/]+/[^/]+(/[^/]+)?/?$ ]]; then
  echo "error: --url must be https://github.com/OWNER/REPO or https://github.com/ORG" >&2; exit 2
fi
if [[ "$DRY_RUN" -eq 0 && "$(id -u)" -ne 0 ]]; then
  echo "error: run as root (it creates users, root-owned files and systemd units)" >&2; exit 1
fi
if [[ "$DRY_RUN" -eq 0 && ! -s "$TOKEN_FILE" ]]; then
  echo "error: --token-file $TOKEN_FILE is missing or empty" >&2; exit 2
fi

run() {  # print every step; execute unless --dry-run
  echo "+ $*"
  if [[ "$DRY_RUN" -eq 0 ]]; then "$@"; fi
}
write_root_file() {  # MODE PATH CONTENT: root-owned, created with its final mode
  echo "+ write $2 (root:root $1)"
  if [[ "$1" == 0644 ]]; then printf '%s' "$3" | sed 's/^/    /'; fi  # secrets are never printed
  if [[ "$DRY_RUN" -eq 0 ]]; then
    install -o root -g root -m "$1" /dev/null "$2" && printf '%s' "$3" > "$2"
  fi
}
system_user() {  # NAME HOME: no login shell, no sudo, no files of its own outside HOME
  if ! id "$1" >/dev/null 2>&1; then
    run useradd --system --user-group --no-create-home --home-dir "$2" \
      --shell /usr/sbin/nologin "$1"
  fi
}

RUNNER_USER="gha-${TIER}" CONF="/etc/gha-runner/${TIER}"
LABELS="self-hosted,ray-${TIER}"
TARBALL="actions-runner-linux-x64-${VERSION}.tar.gz"

# 1. Users: jobs run as gha-TIER, the Ray head as ray; neither owns the runner's files.
system_user "$RUNNER_USER" "/var/lib/gha-runner/${TIER}/home"
if [[ "$RAY_HEAD" -eq 1 ]]; then system_user ray /var/lib/ray; fi

# 2. The runner release, root-owned and read-only for everyone else.
run curl -fsSL -o "/tmp/${TARBALL}" \
  "https://github.com/actions/runner/releases/download/v${VERSION}/${TARBALL}"
if [[ -n "$SHA256" ]]; then
  run bash -c "echo '${SHA256}  /tmp/${TARBALL}' | sha256sum -c -"
fi
run install -d -o root -g root -m 0755 "$INSTALL_DIR"
run tar -xzf "/tmp/${TARBALL}" -C "$INSTALL_DIR" --no-same-owner
run chown -R root:root "$INSTALL_DIR"
run chmod -R go-w "$INSTALL_DIR"
run install -d -o root -g root -m 0755 "$LIBEXEC"
run install -o root -g root -m 0755 "$HERE/prepare-runner.py" "$LIBEXEC/prepare-runner"
run install -o root -g root -m 0755 "$HERE/run-ephemeral.sh" "$LIBEXEC/run-ephemeral"

# 3. Configuration: the token and the job environment readable by root only.
run install -d -o root -g root -m 0700 "$CONF"
write_root_file 0644 "$CONF/runner.conf" "GITHUB_URL=${URL%/}
RUNNER_LABELS=${LABELS}
RUNNER_GROUP_ID=${GROUP_ID}
RUNNER_USER=${RUNNER_USER}
"
run install -o root -g root -m 0600 "$TOKEN_FILE" "$CONF/github-token"
# What every job of this tier sees (systemd reads it as root): addresses, never credentials.
write_root_file 0600 "$CONF/job.env" "RAY_ADDRESS=${RAY_ADDRESS_VALUE}
MLFLOW_TRACKING_URI=${MLFLOW_URI}
RAY_USAGE_STATS_ENABLED=0
MLFLOW_DISABLE_TELEMETRY=true
"

# 4. This tier's Ray head, with its own cluster token.
if [[ "$RAY_HEAD" -eq 1 ]]; then
  run install -d -o root -g root -m 0700 /etc/ray
  if [[ "$DRY_RUN" -eq 1 || ! -s /etc/ray/auth.env ]]; then
    write_root_file 0600 /etc/ray/auth.env "RAY_AUTH_TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
"
  fi
  # Jobs of this tier connect to this tier's cluster only: they get its token, nothing else.
  if [[ "$DRY_RUN" -eq 0 ]]; then cat /etc/ray/auth.env >> "$CONF/job.env"; fi
  run install -o root -g root -m 0644 "$HERE/ray-head.service" /etc/systemd/system/ray-head.service
fi

# 5. The ephemeral runner: one JIT registration per job, forever.
run install -o root -g root -m 0644 "$HERE/github-actions-runner@.service" \
  /etc/systemd/system/github-actions-runner@.service
run systemctl daemon-reload
if [[ "$RAY_HEAD" -eq 1 ]]; then run systemctl enable --now ray-head.service; fi
run systemctl enable --now "github-actions-runner@${TIER}.service"
echo "tier '${TIER}' installed: ephemeral runners with labels ${LABELS} as ${RUNNER_USER}," \
  "one per job; logs: journalctl -u github-actions-runner@${TIER} -f"
