#!/bin/sh
# Mirrors a model store in object storage into the pod's model base path, one version at a time.
#
#   sync-models.sh once    mirror, publish, exit; fails if no complete version exists (init container)
#   sync-models.sh watch   mirror and publish every SYNC_INTERVAL_SECONDS until stopped (sidecar)
#
# The store is mirrored into a staging directory beside the base path; each complete version
# directory is then copied to <base>/.tmp-<N> and renamed to <base>/<N>, so the server, which
# polls the base path and ignores names that are not integers, never sees a half-copied version
# (the same guarantee `twotower export` gives on a shared volume). A version counts as complete
# once its COMPLETE_MARKER file exists: publishers upload the version directory first and the
# marker last. Versions deleted from the store are removed here too, which is how a rollback is
# done (docs/deploy.md).
#
# Environment: MODEL_STORE_URI (gs://... or s3://..., required), MODEL_BASE_PATH (default
# /models/twotower), SYNC_INTERVAL_SECONDS (default 60), COMPLETE_MARKER (default _COMPLETE;
# empty publishes a version as soon as it is mirrored).
set -eu

mode=${1:-once}
: "${MODEL_STORE_URI:?set MODEL_STORE_URI to the store, e.g. gs://my-bucket/models/twotower}"
live=${MODEL_BASE_PATH:-/models/twotower}
staging="$(dirname "$live")/.staging-$(basename "$live")"
interval=${SYNC_INTERVAL_SECONDS:-60}
marker=${COMPLETE_MARKER-_COMPLETE}

log() { echo "sync-models: $*" >&2; }

mirror() {
  case "$MODEL_STORE_URI" in
    gs://*) gcloud storage rsync --recursive --delete-unmatched-destination-objects \
              "$MODEL_STORE_URI" "$staging" ;;
    s3://*) aws s3 sync --delete --only-show-errors "$MODEL_STORE_URI" "$staging" ;;
    *) log "MODEL_STORE_URI must start with gs:// or s3://, got $MODEL_STORE_URI"; return 2 ;;
  esac
}

is_version() {
  case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac
}

publish() {
  for dir in "$staging"/*/; do
    [ -d "$dir" ] || continue
    version=$(basename "$dir")
    is_version "$version" || continue
    [ -e "$live/$version" ] && continue
    if [ -n "$marker" ] && [ ! -e "$staging/$version/$marker" ]; then
      log "version $version is not complete yet (no $marker)"
      continue
    fi
    rm -rf "$live/.tmp-$version"
    cp -R "$staging/$version" "$live/.tmp-$version"
    mv "$live/.tmp-$version" "$live/$version"
    log "published version $version"
  done
  for dir in "$live"/*/; do
    [ -d "$dir" ] || continue
    version=$(basename "$dir")
    is_version "$version" || continue
    if [ ! -d "$staging/$version" ]; then
      rm -rf "$live/$version"
      log "removed version $version (deleted from the store)"
    fi
  done
}

count_versions() {
  n=0
  for dir in "$live"/*/; do
    [ -d "$dir" ] && is_version "$(basename "$dir")" && n=$((n + 1))
  done
  echo "$n"
}

mkdir -p "$live" "$staging"
case "$mode" in
  once)
    mirror
    publish
    if [ "$(count_versions)" -eq 0 ]; then
      log "no complete version under $MODEL_STORE_URI; export one first (docs/deploy.md)"
      exit 1
    fi
    ;;
  watch)
    trap 'exit 0' TERM INT
    while :; do
      sleep "$interval" &
      wait $!
      if mirror; then publish; else log "mirror failed; retrying in ${interval}s"; fi
    done
    ;;
  *)
    log "usage: sync-models.sh once|watch"
    exit 2
    ;;
esac
