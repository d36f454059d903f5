#!/usr/bin/env bash
# Run visctl on a model in CI and leave the pictures in one folder to upload as an artifact.
#
#   examples/ci/visctl-ci.sh IMAGES CONFIG [CHECKPOINT]        (OUT=visctl-artifacts by default)
#
# visctl's exit status, which this script passes on:
#   exit status 0 -> every input was processed;
#   exit status 1 -> some inputs failed (unreadable files...): the rest finished, manifest.json lists them;
#   exit status 2 -> a usage error (missing file, bad layer name, unknown method, wrong checkpoint): nothing ran.
set -uo pipefail
images=${1:?usage: visctl-ci.sh IMAGES CONFIG [CHECKPOINT]}
config=${2:?usage: visctl-ci.sh IMAGES CONFIG [CHECKPOINT]}
checkpoint=${3:-}
out=${OUT:-visctl-artifacts}
status=0
run() {  # run one visctl command; keep the worst status (2 beats 1 beats 0)
  visctl "$@" --quiet --json > "$out/$1.json"
  local rc=$?
  if [ "$rc" -gt "$status" ]; then status=$rc; fi
  echo "visctl $1: exit status $rc" >&2
}
mkdir -p "$out"
run cam "$images" "$config" $checkpoint --method gradcam,layercam --out-dir "$out/cam"
run featmap "$images" "$config" $checkpoint --normalize per-layer --out-dir "$out/featmap"
exit "$status"
