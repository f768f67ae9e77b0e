#!/bin/sh
# Run the watchdog INSIDE a real container without pulling any image (our machines cannot pull):
# the empty `hostbase:latest` image plus the host's runtime, this checkout and its .venv bind-mounted
# read-only, the Docker socket mounted, `--network host` (loopback only). Used by the sidecar
# integration test; see docs/deploy.md §2.
#   usage: run-watchdog-hostbase.sh NAME CONFIG_FILE STATE_DIR [VLLM_CONFIG_DIR] [-- extra watchdog args]
# Prints the container id. The caller removes the container (`docker rm -f NAME`), even on failure.
set -eu
name=$1 config=$2 state=$3
shift 3
vllm_dir=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then vllm_dir=$1; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
py="$repo/.venv/bin/python"
prefix=$("$py" -c 'import sys; print(sys.base_prefix)')
sock=${DOCKER_SOCK:-/var/run/docker.sock}
set -- run --config /etc/vllm-watchdog/watchdog.yaml "$@"
exec docker run -d --name "$name" --network host \
  --user "$(id -u):$(stat -c %g "$sock")" \
  -v /usr:/usr:ro -v /lib:/lib:ro -v /lib64:/lib64:ro -v /bin:/bin:ro -v /etc/ssl:/etc/ssl:ro \
  -v "$prefix":"$prefix":ro -v "$repo":"$repo":ro \
  -v "$sock":/var/run/docker.sock \
  -v "$(realpath "$config")":/etc/vllm-watchdog/watchdog.yaml:ro \
  -v "$(realpath "$state")":/var/lib/vllm-watchdog \
  ${vllm_dir:+-v "$(realpath "$vllm_dir")":/srv/vllm:rw} \
  -e PYTHONUNBUFFERED=1 -e PYTHONFAULTHANDLER=1 -e HOME=/tmp \
  --tmpfs /tmp \
  hostbase:latest "$py" -m watchdog "$@"
