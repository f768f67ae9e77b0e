#!/usr/bin/env bash
# Make a real Docker engine available for the runtime tests, idempotently:
#   1. install Debian's docker.io when dockerd is missing (apt-get; needs root and the Debian mirror),
#   2. start `dockerd --bridge=none --iptables=false` in the background when no engine answers
#      (no bridge: no private address range exists; containers always run with --network host),
#   3. wait until `docker info` works,
#   4. import the empty base image `hostbase:latest` when absent (no registry can be reached: tests
#      bind-mount the host's runtime read-only into it).
# Exits non-zero with a clear message when any step fails. Log of a dockerd it starts: $DOCKERD_LOG.
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/tmp/dockerd.log}
WAIT_S=${DOCKER_UP_WAIT_S:-60}

die() { echo "docker-up: $*" >&2; exit 1; }

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "dockerd/docker missing and not root: install Debian's docker.io (apt-get install docker.io)"
    echo "docker-up: installing docker.io with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq docker.io >/dev/null || die "apt-get install docker.io failed"
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still not on PATH"
fi

if ! docker info >/dev/null 2>&1; then
    if pgrep -x dockerd >/dev/null 2>&1; then
        echo "docker-up: a dockerd is running but not answering yet; waiting for it" >&2
    else
        [ "$(id -u)" = 0 ] || die "no Docker engine answers and starting dockerd needs root"
        echo "docker-up: starting dockerd --bridge=none --iptables=false (log: $DOCKERD_LOG)" >&2
        nohup dockerd --bridge=none --iptables=false >"$DOCKERD_LOG" 2>&1 &
    fi
    deadline=$(( $(date +%s) + WAIT_S ))
    until docker info >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -n 20 "$DOCKERD_LOG" >&2 2>/dev/null || true
            die "the Docker engine did not answer within ${WAIT_S}s"
        fi
        sleep 0.5
    done
fi

if ! docker image inspect hostbase:latest >/dev/null 2>&1; then
    d=$(mktemp -d)
    trap 'rm -rf "$d" "$d.tar"' EXIT
    mkdir -p "$d"/{proc,sys,dev,etc,tmp}
    tar -C "$d" -cf "$d.tar" .
    docker import "$d.tar" hostbase:latest >/dev/null || die "docker import of hostbase:latest failed"
fi

echo "docker-up: engine $(docker version --format '{{.Server.Version}}') ready, hostbase:latest present" >&2
