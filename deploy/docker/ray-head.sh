#!/bin/sh
# The image's second entrypoint (installed as medgate-ray-head): make this container a Ray head
# node that other nodes can join on port 6379 (`ray start --address=<this host>:6379`), then
# run the gateway joined to it. Extra arguments go to `medgate serve`.
#   MEDGATE_RAY_HEAD_CPUS   CPUs this node offers to Ray (default: all it sees)
#   MEDGATE_RAY_PORT        the GCS port (default 6379)
set -eu
port="${MEDGATE_RAY_PORT:-6379}"
set -- --ray-address "127.0.0.1:${port}" "$@"
if [ -n "${MEDGATE_RAY_HEAD_CPUS:-}" ]; then
  ray start --head --port="$port" --num-cpus="$MEDGATE_RAY_HEAD_CPUS" --disable-usage-stats
else
  ray start --head --port="$port" --disable-usage-stats
fi
exec medgate serve "$@"
