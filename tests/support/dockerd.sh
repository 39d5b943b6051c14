#!/usr/bin/env bash
# A private Docker engine for tests: Debian's dockerd on its own unix socket, data root and
# exec root, without touching the host's networking (--iptables=false --bridge=none) or any
# system docker. Registries on 127.0.0.0/8 need no TLS; others can be listed as insecure.
#
#   tests/support/dockerd.sh start DIR     start (idempotent), wait until it answers, print
#                                          `export DOCKER_HOST=unix://DIR/docker.sock`
#   tests/support/dockerd.sh stop DIR      SIGTERM, wait (20 s, then SIGKILL), unmount leftovers
#   tests/support/dockerd.sh load DIR SRC NAME:TAG
#                                          put an image into the engine: SRC is anything skopeo
#                                          reads (oci:layout:tag, docker://...); it is copied to a
#                                          docker-archive and `docker load`ed as NAME:TAG
#   tests/support/dockerd.sh env DIR       print the export line again
#
# Environment: DOCKERD_INSECURE_REGISTRIES ("host:port ..."), DOCKERD_ARGS (more flags),
# DOCKERD_TIMEOUT (seconds to wait for the socket, 60). DIR should be short (the engine's
# containerd socket lives under DIR/exec; unix socket paths are limited to 108 bytes).
# Needs root (dockerd) and installs docker.io with apt when dockerd is missing.
set -euo pipefail

cmd="${1:-}"
DIR="${2:-}"
[[ -n "$cmd" && -n "$DIR" ]] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
LOG="$DIR/dockerd.log"
# The client: Debian's, or any docker CLI on PATH.
DOCKER="$(command -v docker || echo /usr/bin/docker)"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answers() { "$DOCKER" -H "unix://$SOCK" version >/dev/null 2>&1; }

case "$cmd" in
start)
    if ! command -v dockerd >/dev/null; then
        echo "dockerd.sh: installing docker.io (apt)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq docker.io >/dev/null
        DOCKER="$(command -v docker)"
    fi
    if running && answers; then
        echo "export DOCKER_HOST=unix://$SOCK"
        exit 0
    fi
    args=(--host "unix://$SOCK" --data-root "$DIR/data" --exec-root "$DIR/exec"
          --pidfile "$PIDFILE" --iptables=false --ip6tables=false --bridge=none
          --ip-masq=false --userland-proxy=false --log-level warn)
    for r in ${DOCKERD_INSECURE_REGISTRIES:-}; do args+=(--insecure-registry "$r"); done
    # shellcheck disable=SC2206
    args+=(${DOCKERD_ARGS:-})
    # setsid: its own session, so the caller's job control and signals leave it alone.
    setsid dockerd "${args[@]}" >"$LOG" 2>&1 </dev/null &
    for _ in $(seq $((${DOCKERD_TIMEOUT:-60} * 10))); do
        answers && { echo "export DOCKER_HOST=unix://$SOCK"; exit 0; }
        if ! kill -0 $! 2>/dev/null; then
            echo "dockerd.sh: dockerd exited; log $LOG:" >&2
            tail -n 30 "$LOG" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "dockerd.sh: dockerd did not answer on $SOCK; log $LOG:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
    ;;
stop)
    if [[ -f "$PIDFILE" ]]; then
        pid="$(cat "$PIDFILE")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$PIDFILE"
    fi
    # Mounts the engine left behind (a killed engine does not clean up).
    grep -F " $DIR/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    ;;
load)
    src="${3:?SRC}"; ref="${4:?NAME:TAG}"
    answers || { echo "dockerd.sh: the engine in $DIR is not running" >&2; exit 1; }
    archive="$DIR/load-$$.tar"
    rm -f "$archive"
    skopeo --insecure-policy copy -q "$src" "docker-archive:$archive:$ref" >&2
    "$DOCKER" -H "unix://$SOCK" load -q -i "$archive" >&2
    rm -f "$archive"
    ;;
env)
    echo "export DOCKER_HOST=unix://$SOCK"
    ;;
*)
    echo "dockerd.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
