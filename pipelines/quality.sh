#!/usr/bin/env bash
# pipelines/quality.sh BIN CLASSIFIER "IMAGE FLAGS" REFERENCE LABELS SEED DEVICE EXTRA_JSON
#
# One JSON line of sample quality, for the pipelines' quality tables: the classifier's
# features of the images (img-classify --features) against the REFERENCE features (a .npy of
# img-classify --features, or a statistics file of img-fid --save-stats), as img-fid reports
# them (fid, kid_mean, kid_std, precision, recall, density, coverage, n_a, n_b, dim), and
# with LABELS (a .npy, or `-` for none) class_accuracy: the fraction the classifier assigns
# to their label (1 - vae-eval's error). EXTRA_JSON ('"temperature": 0.5, "acceptance": 0.1'
# or empty) comes first. IMAGE FLAGS name the images as both img-classify and vae-eval take
# them (`--data FILE.npy`, `--data mnist --split test`, `--data noise.npy --range 11`).
set -euo pipefail
if [[ $# -ne 8 ]]; then
  echo "usage: quality.sh BIN CLASSIFIER \"IMAGE FLAGS\" REFERENCE LABELS|- SEED DEVICE EXTRA_JSON" >&2
  exit 2
fi
bin=$1 clf=$2 images=$3 reference=$4 labels=$5 seed=$6 device=$7 extra=$8
tmp=$(mktemp -d "${TMPDIR:-/tmp}/genimg-quality.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086 # IMAGE FLAGS are several words on purpose
"$bin/img-classify" --model "$clf" $images --features --seed "$seed" --device "$device" -o "$tmp/features.npy"
metrics=$("$bin/img-fid" "$tmp/features.npy" "$reference" --seed "$seed")
accuracy=""
if [[ $labels != - ]]; then
  # shellcheck disable=SC2086
  error=$("$bin/vae-eval" --model "$clf" $images --labels "$labels" --seed "$seed" --device "$device" \
    | sed -E 's/.*"error": *([-0-9.eE+]+).*/\1/')
  accuracy=$(awk -v e="$error" 'BEGIN { printf "\"class_accuracy\": %.6g, ", 1 - e }')
fi
# img-fid's object without its braces, after the extra fields and the accuracy.
printf '{%s%s%s}\n' "${extra:+$extra, }" "$accuracy" "$(sed -E 's/^[[:space:]]*\{//; s/\}[[:space:]]*$//' <<< "$metrics")"
