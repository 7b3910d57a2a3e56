#!/bin/sh
# The image's third entrypoint (installed as medgate-ray-worker): make this container a Ray
# worker node of the cluster whose head is MEDGATE_RAY_HEAD (host:port, default
# medgate-head:6379) until the container is stopped. Compose starts both nodes at once, so the
# head's GCS may not answer yet: wait for it (MEDGATE_RAY_WAIT seconds, default 300) instead of
# failing. Extra arguments go to `ray start` (e.g. --num-cpus=4, --num-gpus=1).
set -eu
head="${MEDGATE_RAY_HEAD:-medgate-head:6379}"
wait="${MEDGATE_RAY_WAIT:-300}"
python - "$head" "$wait" <<'PY'
import socket, sys, time
host, _, port = sys.argv[1].rpartition(":")
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"medgate-ray-worker: Ray head {sys.argv[1]} not reachable: {exc}")
        time.sleep(2)
PY
# Not `ray start --block` as PID 1: PID 1 ignores an unhandled SIGTERM, so `docker stop` would
# wait for its kill timeout. This shell leaves the cluster cleanly (`ray stop`) on TERM / INT.
ray start --address="$head" --disable-usage-stats "$@"
trap 'ray stop --grace-period 10 >/dev/null 2>&1; exit 0' TERM INT
sleep infinity &
wait $!
