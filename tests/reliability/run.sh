#!/usr/bin/env bash
# Reliability suite (issue 14): floods of idle and slow connections with victims measuring
# /_health, kill -9 during uploads, a full disk on a tmpfs, abandoned-upload cleanup.
# Loopback only; every part is bounded in time and connection count and stops by itself.
#
#   ATCR_BIN=target/debug/atcr bash tests/reliability/run.sh     (builds target/debug/atcr if unset)
#   PARTS=idle,slow-body bash tests/reliability/run.sh           (a subset: cleanup, idle,
#                                                                  slow-body, kill9, disk-full)
# Knobs: FLOOD_CONNECTIONS (1100), FLOOD_SECS (15), VICTIM_MAX_SECS (1.0), KILL_ROUNDS (3),
# KEEP_TMP=1 keeps the work dir (server logs). The disk-full part mounts a tmpfs: run as root.
# Uses no fixed port (every server binds a free one), so it cannot collide with other suites.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
if [[ -z "${ATCR_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --quiet)
    ATCR_BIN="$ROOT/target/debug/atcr"
fi
[[ -x "$ATCR_BIN" ]] || { echo "no executable at ATCR_BIN=$ATCR_BIN" >&2; exit 1; }
ATCR_BIN="$(cd "$(dirname "$ATCR_BIN")" && pwd)/$(basename "$ATCR_BIN")"

# 1,100 hostile sockets on each side of loopback, plus the server's own files.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open files limit: $(ulimit -n)"

WORK="$(mktemp -d /tmp/atcr-reliability.XXXXXX)"
cleanup() {
    local rc=$?
    umount -l "$WORK/tmpfs" 2>/dev/null || true
    if [[ "${KEEP_TMP:-0}" == 1 || $rc != 0 ]]; then echo "work dir (logs): $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

# Hard cap on the whole run, whatever happens inside.
timeout --kill-after=10 "${RELIABILITY_TIMEOUT:-400}" \
    env -u ATCR_BIN python3 "$HERE/suite.py" --bin "$ATCR_BIN" --work "$WORK" \
    --parts "${PARTS:-cleanup,idle,slow-body,kill9,disk-full}"
