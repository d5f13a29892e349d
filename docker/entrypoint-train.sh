#!/bin/sh
# Entry point of one pod of the training Job (k8s/training/job.yaml).
#
# Builds TF_CONFIG from the Indexed Job's JOB_COMPLETION_INDEX: pod i is
# <JOB_NAME>-<i>.<WORKER_SERVICE>:<WORKER_PORT>, its hostname under the headless Service.
# - STRATEGY=multi-worker (default): MultiWorkerMirroredStrategy; every pod is a worker and
#   trains; worker 0, the chief, writes the run directory.
# - STRATEGY=parameter-server (k8s/training/parameter-server): ParameterServerStrategy; pod 0 is
#   the chief (the coordinator, which writes the run), pods 1..NUM_PS the parameter servers and
#   the next NUM_WORKERS pods the workers, which serve until the Job succeeds with the chief.
# The chief then evaluates the run and exports a new version into the model store.
#
# Environment: JOB_COMPLETION_INDEX (set by Kubernetes), STRATEGY, NUM_WORKERS, NUM_PS (0; >= 1
# with parameter-server), JOB_NAME, WORKER_SERVICE, WORKER_PORT (12345), RUN_DIR,
# MODEL_BASE_PATH, DATASET (movielens-100k), INDEX (brute-force or scann),
# PEER_DNS_TIMEOUT_SECONDS (300; 0 skips waiting for the other pods' DNS names).
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
strategy=${STRATEGY:-multi-worker}
num_ps=${NUM_PS:-0}

log() { echo "entrypoint-train[$JOB_COMPLETION_INDEX]: $*" >&2; }

case "$strategy" in
  multi-worker) chiefs=0 ;;
  parameter-server)
    chiefs=1
    if [ "$num_ps" -lt 1 ]; then
      log "STRATEGY=parameter-server needs NUM_PS >= 1 parameter servers"
      exit 2
    fi ;;
  *)
    log "STRATEGY=$strategy: use multi-worker or parameter-server"
    exit 2 ;;
esac
if [ "$strategy" = multi-worker ]; then num_ps=0; fi
pods=$((chiefs + num_ps + NUM_WORKERS))
if [ "$JOB_COMPLETION_INDEX" -ge "$pods" ]; then
  log "JOB_COMPLETION_INDEX $JOB_COMPLETION_INDEX >= $pods pods ($chiefs chief + NUM_PS $num_ps + NUM_WORKERS $NUM_WORKERS): keep the Job's completions and parallelism equal to that sum"
  exit 2
fi

# Pod i's address, and the JSON list of the addresses of pods $1 .. $2 - 1.
address() { echo "$JOB_NAME-$1.$WORKER_SERVICE:$port"; }
addresses() {
  list=""
  i=$1
  while [ "$i" -lt "$2" ]; do
    list="$list${list:+,}\"$(address "$i")\""
    i=$((i + 1))
  done
  echo "$list"
}

# Task type and index of this pod: [chief] [ps ...] [worker ...], in index order.
pod=$JOB_COMPLETION_INDEX
if [ "$pod" -lt "$chiefs" ]; then
  task_type=chief; task_index=0
elif [ "$pod" -lt $((chiefs + num_ps)) ]; then
  task_type=ps; task_index=$((pod - chiefs))
else
  task_type=worker; task_index=$((pod - chiefs - num_ps))
fi
cluster="\"worker\":[$(addresses $((chiefs + num_ps)) "$pods")]"
if [ "$strategy" = parameter-server ]; then
  cluster="\"chief\":[$(addresses 0 1)],\"ps\":[$(addresses 1 $((1 + num_ps)))],$cluster"
fi
TF_CONFIG="{\"cluster\":{$cluster},\"task\":{\"type\":\"$task_type\",\"index\":$task_index}}"
export TF_CONFIG
hosts=""
i=0
while [ "$i" -lt "$pods" ]; do
  hosts="$hosts $JOB_NAME-$i.$WORKER_SERVICE"
  i=$((i + 1))
done
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

# Under parameter-server, only the chief returns from this: the other pods serve it.
twotower train --dataset "$dataset" --out "$RUN_DIR" --strategy "$strategy"

# Training is over: evaluate and export on the chief (pod 0) alone, without TF_CONFIG.
if [ "$JOB_COMPLETION_INDEX" -eq 0 ]; then
  unset TF_CONFIG
  twotower evaluate --run "$RUN_DIR" --split test --json "$RUN_DIR/eval-test.json"
  twotower export --run "$RUN_DIR" --model-base-path "$MODEL_BASE_PATH" --index "$index"
  log "exported a new version under $MODEL_BASE_PATH"
fi
