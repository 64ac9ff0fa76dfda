#!/usr/bin/env sh
# Serve the MLflow UI on the pipeline's tracking store (the one pipeline/tracking.py logs to):
#   scripts/mlflow_ui.sh [port]        then open http://127.0.0.1:<port> (default 5000)
# MLFLOW_TRACKING_URI, if set, names the store; an http(s) one already has its own UI.
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
port="${1:-5000}"
store="${MLFLOW_TRACKING_URI:-sqlite:///$root/mlflow.db}"
case "$store" in
  http://*|https://*) echo "runs are on the tracking server: open $store" >&2; exit 0 ;;
esac
mlflow="$root/.venv/bin/mlflow"
[ -x "$mlflow" ] || mlflow=mlflow
echo "MLflow UI on $store: http://127.0.0.1:$port/#/experiments" >&2
# No background job runner (a tree of worker processes that browsing runs does not need).
MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
  exec "$mlflow" server --backend-store-uri "$store" --host 127.0.0.1 --port "$port" --workers 1
