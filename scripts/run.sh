#!/usr/bin/env bash
# Starts the simulator and the dashboard together; Ctrl-C stops both.
set -euo pipefail
host=$1 port=$2 sim_port=$3
export RUNTOOLS_API_URL="http://127.0.0.1:${sim_port}/v1"
# The simulator serves billing under /billing/v1, standing in for https://billing.runtools.ai/v1.
export RUNTOOLS_BILLING_URL="http://127.0.0.1:${sim_port}/billing/v1"
# The state `manage.py demo` seeded (its threads), kept and extended across restarts.
store=${SIM_STORE:-var/simulator-store.json}

.venv/bin/python -m simulator --host 127.0.0.1 --port "$sim_port" --store "$store" &
sim_pid=$!
trap 'kill $sim_pid 2>/dev/null; wait $sim_pid 2>/dev/null' EXIT INT TERM

echo
echo "  rtdash:    http://${host}:${port}/   (log in as demo / demo)"
echo "  simulator: ${RUNTOOLS_API_URL}  (billing: ${RUNTOOLS_BILLING_URL}; state: ${store})"
echo "  Ctrl-C stops both."
echo
# A longer websocket handshake timeout than the 5 s default: see README, "Choosing the ASGI server".
.venv/bin/daphne -e "tcp:port=${port}:interface=${host}:backlog=1024" --websocket_connect_timeout 60 \
  rtdash.asgi:application
