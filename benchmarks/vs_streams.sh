#!/usr/bin/env bash
# rqueue's consumers beside raw Redis Streams (and dramatiq), one worker process each, rounds
# alternated on one throwaway server, all through the peers' harness (../shared/bench-peers).
#   benchmarks/vs_streams.sh                 # ROUNDS=3 N=50000 PORT=6395
# Needs ../shared/bench-peers/setup.sh's /tmp/peers venv for streams and dramatiq (PEERS_PY).
# BEFORE_PY=<python of another checkout's venv> also runs that checkout's consumers (labelled
# "before") in every round, for a before/after table from one run.
# Prints each run's RESULT line; summarize with ../shared/bench-peers/summarize.py or by eye.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
N=${N:-50000}
PORT=${PORT:-6395}
PY=${PY:-.venv/bin/python}
PEERS_PY=${PEERS_PY:-/tmp/peers/bin/python}
PEERS_DIR=${RQUEUE_BENCH_PEERS:-$(cd .. && pwd)/shared/bench-peers}
EXTRA=${EXTRA:-dramatiq}
SERVER=$("$PY" -c 'from rqueue._transport.embedded import server_binary; print(server_binary())')
"$SERVER" --port "$PORT" --save '' --appendonly no --daemonize yes --logfile "/tmp/vs_streams_$PORT.log"
trap '"$PY" -c "import redis; redis.Redis(port=$PORT).shutdown(nosave=True)" 2>/dev/null || true' EXIT
for _ in $(seq 50); do "$PY" -c "import redis; redis.Redis(port=$PORT).ping()" 2>/dev/null && break; sleep 0.1; done
echo "# $(date -u '+%F %T') UTC | $(nproc) cpu | $("$SERVER" --version | cut -d' ' -f1-3) | rqueue $(git rev-parse --short HEAD) | N=$N"
for r in $(seq "$ROUNDS"); do
  echo "## round $r"
  (cd "$PEERS_DIR" && "$PEERS_PY" streams_bench.py --port "$PORT" --n "$N" --workers 1) | grep RESULT
  "$PY" benchmarks/peer_rqueue.py --mode asyncio --port "$PORT" --n "$N" --workers 1 | grep RESULT
  "$PY" benchmarks/peer_rqueue.py --mode threads --port "$PORT" --n "$N" --workers 1 | grep RESULT
  if [ -n "${BEFORE_PY:-}" ]; then
    for mode in asyncio threads; do
      "$BEFORE_PY" benchmarks/peer_rqueue.py --mode "$mode" --port "$PORT" --n "$N" --workers 1 | grep RESULT \
        | sed 's/"peer": "rqueue-/"peer": "before-rqueue-/'
    done
  fi
  for peer in $EXTRA; do
    (cd "$PEERS_DIR" && "$PEERS_PY" "${peer}_bench.py" --port "$PORT" --n 20000 --workers 1 --concurrency 32) | grep RESULT
  done
done
