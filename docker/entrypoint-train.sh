#!/bin/sh
# Entry point of one worker of the multi-worker training Job (k8s/training/job.yaml).
#
# Builds TF_CONFIG for tf.distribute.MultiWorkerMirroredStrategy from the Indexed Job's
# JOB_COMPLETION_INDEX: every worker is <JOB_NAME>-<i>.<WORKER_SERVICE>:<WORKER_PORT>, the
# pod's hostname under the headless Service. All workers train; worker 0, the chief, writes the
# run directory and then evaluates it and exports a new version into the model store.
#
# Environment: JOB_COMPLETION_INDEX (set by Kubernetes), NUM_WORKERS, JOB_NAME, WORKER_SERVICE,
# WORKER_PORT (12345), RUN_DIR, MODEL_BASE_PATH, DATASET (movielens-100k), INDEX (brute-force or
# scann), PEER_DNS_TIMEOUT_SECONDS (300; 0 skips waiting for the other workers' DNS names).
set -eu

: "${JOB_COMPLETION_INDEX:?not set: run this as a pod of an Indexed Job}"
: "${NUM_WORKERS:?set NUM_WORKERS to the Job's parallelism}"
: "${JOB_NAME:?set JOB_NAME to the Job's name}"
: "${WORKER_SERVICE:?set WORKER_SERVICE to the headless Service's name}"
: "${RUN_DIR:?set RUN_DIR}"
: "${MODEL_BASE_PATH:?set MODEL_BASE_PATH}"
port=${WORKER_PORT:-12345}
dataset=${DATASET:-movielens-100k}
index=${INDEX:-brute-force}
dns_timeout=${PEER_DNS_TIMEOUT_SECONDS:-300}

log() { echo "entrypoint-train[$JOB_COMPLETION_INDEX]: $*" >&2; }

if [ "$JOB_COMPLETION_INDEX" -ge "$NUM_WORKERS" ]; then
  log "JOB_COMPLETION_INDEX $JOB_COMPLETION_INDEX >= NUM_WORKERS $NUM_WORKERS: keep them equal"
  exit 2
fi

hosts=""
workers=""
i=0
while [ "$i" -lt "$NUM_WORKERS" ]; do
  host="$JOB_NAME-$i.$WORKER_SERVICE"
  hosts="$hosts $host"
  workers="$workers${workers:+,}\"$host:$port\""
  i=$((i + 1))
done
TF_CONFIG="{\"cluster\":{\"worker\":[$workers]},\"task\":{\"type\":\"worker\",\"index\":$JOB_COMPLETION_INDEX}}"
export TF_CONFIG
log "TF_CONFIG=$TF_CONFIG"

# A worker's DNS name exists only once its pod runs: wait for all of them, so that the
# strategy's first collective does not race pod scheduling.
if [ "$dns_timeout" -gt 0 ]; then
  for host in $hosts; do
    waited=0
    until getent hosts "$host" >/dev/null 2>&1; do
      if [ "$waited" -ge "$dns_timeout" ]; then
        log "$host did not resolve within ${dns_timeout}s; is the headless Service there?"
        exit 1
      fi
      sleep 2
      waited=$((waited + 2))
    done
  done
fi

twotower train --dataset "$dataset" --out "$RUN_DIR" --strategy multi-worker

# The other workers have left by now: evaluate and export on the chief alone, without TF_CONFIG.
if [ "$JOB_COMPLETION_INDEX" -eq 0 ]; then
  unset TF_CONFIG
  twotower evaluate --run "$RUN_DIR" --split test --json "$RUN_DIR/eval-test.json"
  twotower export --run "$RUN_DIR" --model-base-path "$MODEL_BASE_PATH" --index "$index"
  log "exported a new version under $MODEL_BASE_PATH"
fi
