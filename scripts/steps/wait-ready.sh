#!/usr/bin/env bash
# keel readiness gate: waits until cloud-init has finished the first boot, and fails closed if it
# reported any error. Runs as the deploy user over SSH before any other step.
# Usage: wait-ready.sh TIMEOUT_SECONDS
# Exit: 0 cloud-init done without errors; 1 errors or timeout (the reason on stderr); 2 usage.
set -euo pipefail

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+$ ]]; then
  echo "usage: wait-ready.sh TIMEOUT_SECONDS" >&2
  exit 2
fi
limit=$1
deadline=$((SECONDS + limit))

# `cloud-init status --wait` exits 2 for recoverable errors on newer cloud-init and can return while
# the final stage still runs after an earlier module failed, so its exit code alone decides nothing:
# wait for boot-finished, then read the result file that the final stage writes.
timeout "$limit" cloud-init status --wait >/dev/null 2>&1 || true
until [[ -f /var/lib/cloud/instance/boot-finished && -f /run/cloud-init/result.json ]]; do
  if ((SECONDS >= deadline)); then
    echo "keel: cloud-init did not finish within ${limit}s. Look at 'cloud-init status --long' and /var/log/cloud-init.log on the host (ssh in), then run pulumi up again." >&2
    exit 1
  fi
  sleep 2
done

errors=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["v1"]; print("\n".join(map(str, r.get("errors") or [])))' /run/cloud-init/result.json)
if [[ -n $errors ]]; then
  echo "keel: cloud-init finished with errors; the first boot did not complete its hardening:" >&2
  echo "$errors" >&2
  echo "Look at /var/log/cloud-init.log on the host. A server that failed its first boot should be rebuilt (pulumi up --replace on the server), not patched." >&2
  exit 1
fi
echo "cloud-init done"
