#!/usr/bin/env bash
# Whole-process benchmark of every main-job stage: each genimg tool run as the pipelines
# run it (pipelines/*.mk: the same flags and data, --seed 0), then its PyTorch peer
# (benches/peer/torch_stages.py: the same network and loop, on the same input files), each
# under /usr/bin/time (wall seconds, peak RSS). Prints one JSON line per stage, then a
# Markdown table of the same:
#
#   {"stage", "genimg_seconds", "genimg_peak_rss_mib", "torch_seconds",
#    "torch_seconds_without_import", "torch_peak_rss_mib", "ratio"}
#
# ratio = torch_seconds_without_import / genimg_seconds: genimg's whole process, startup
# included, against PyTorch's without its import (the conservative figure). vq-encode's line
# also carries "code_agreement": the fraction of the first 100 images' top and bottom codes
# on which the peer, loading genimg's checkpoint, agrees with genimg.
#
# The colour stages (preset vqvae2 at the data's geometry, priors over its 32x32 and 64x64
# codes, all unconditioned on labels, one epoch) also carry "genimg_images_per_s" (images
# over genimg's whole-process seconds) and "torch_images_per_s" (over the peer's seconds
# without import), the figures the issue gives for PyTorch (2 threads):
#   vqvae2-64    vae-train --preset vqvae2, 3x64x64, batch 32: the first 640 bundled emoji of
#                the train split (20 steps)
#   vqvae2-256   the same at 3x256x256, batch 4: the first 40 emoji of the test split upscaled
#                by img-pack --size 256 (10 steps)
#   prior-32     prior-fit --level top, 32x32 codes (n_embed 512), batch 16: vq-encode of the
#                first 160 upscaled emoji by vqvae2-256's checkpoint (10 steps)
#   prior-64     prior-fit --level bottom, 64x64 codes on the 32x32 top codes, batch 16: the
#                first 48 of them (3 steps)
#   sample-256   prior-sample --model prior-32's --bottom prior-64's -n 16 (cached sampler).
#                PyTorch has no cached sampler; its plain one (the whole network per code,
#                the peer's prior-sample) takes about 260 s for ONE sample on this CPU (1,024
#                forwards at 16 ms + 4,096 at 59 ms), so it runs only with a GPU
#                BENCH_DEVICE (torch null on the CPU).
#   ddpm-cifar10 ddpm-train --preset ddpm-cifar10 --batch-size 16, one epoch of the first
#                160 bundled emoji at 32x32 (10 steps; issue 13's training figure).
# BENCH_QUICK cuts them to 64, 8, 32 and 16 images (16 for ddpm-cifar10), the priors to 2
# layers of 16 channels, and samples 2.
#
# BENCH_DEVICE=cuda[:N] runs both sides on that GPU (the speed table of docs/gpu.md), the
# colour stages and ddpm-cifar10 on budgets that keep start-up small beside the work: all
# 3,416 train emoji at 64 px, the 370 test emoji at 256 px (batch 4), their 32x32 and 64x64
# codes, 3,416 emoji at 32 px for ddpm-cifar10. Without /usr/bin/time (a bare GPU machine)
# the seconds come from the shell and peak RSS is null.
#
# Builds nothing (the Makefile builds first); binaries come from ${BIN:-target/release}.
# Environment:
#   BENCH_STAGES=a,b,...  only these stages (vae-mlp vib-mlp vqvae2-mnist vq-encode
#                         prior-top prior-bottom vq-decode ddpm-train ddim vqvae2-64
#                         vqvae2-256 prior-32 prior-64 sample-256 ddpm-cifar10); a checkpoint or code file
#                         that a chosen stage needs is made by genimg, untimed
#   BENCH_QUICK=1         every stage on a tiny budget (the 1,000 test digits, one epoch,
#                         priors of 2 layers of 16 channels, ddpm-train on 256 digits,
#                         DDIM -n 8 --steps 5), to check the harness in a few minutes
#   BENCH_DEVICE=D        cpu (default) or cuda[:N], for genimg's --device and the peer's
#   BENCH_THREADS=N       PyTorch's threads (default: the number of CPUs)
#   PYTHON=python3        the interpreter with torch and numpy
#   BENCH_KEEP=1          keep the temporary folder (inputs, checkpoints, logs)
#   BENCH_REPEATS=N       run every timed command N times (default 1) and report the median
#                         seconds and the largest peak memory: on a VM whose neighbours
#                         move single figures by 20-40 %
# Budgets of the full run: vae-mlp and vib-mlp 10 epochs of the 9,000 train digits;
# vqvae2-mnist 1 epoch; both priors 2 epochs; ddpm-train 1 epoch of the 1,000 TEST digits
# (a full epoch of the U-Net on 9,000 digits takes several minutes per side).
# Without torch the torch columns are null, and the script still exits 0.
set -euo pipefail

BIN=${BIN:-target/release}
PYTHON=${PYTHON:-python3}
QUICK=${BENCH_QUICK:-0}
DEVICE=${BENCH_DEVICE:-cpu}
THREADS=${BENCH_THREADS:-$(nproc)}
ALL_STAGES="vae-mlp,vib-mlp,vqvae2-mnist,vq-encode,prior-top,prior-bottom,vq-decode,ddpm-train,ddim"
ALL_STAGES+=",vqvae2-64,vqvae2-256,prior-32,prior-64,sample-256,ddpm-cifar10"
STAGES=${BENCH_STAGES:-$ALL_STAGES}
PEER="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/peer/torch_stages.py"

for tool in img-pack vae-train vq-encode vq-decode prior-fit prior-sample ddpm-train ddpm-denoise; do
  if [[ ! -x "$BIN/$tool" ]]; then
    echo "whole_process.sh: $BIN/$tool is missing: build first (make build)" >&2
    exit 1
  fi
done
HAVE_TIME=1
if [[ ! -x /usr/bin/time ]]; then
  HAVE_TIME=0
  echo "whole_process.sh: no /usr/bin/time (apt-get install time): peak RSS is null" >&2
fi
for s in ${STAGES//,/ }; do
  if [[ ",$ALL_STAGES," != *",$s,"* ]]; then
    echo "whole_process.sh: BENCH_STAGES: unknown stage '$s' (stages: $ALL_STAGES)" >&2
    exit 2
  fi
done

HAVE_TORCH=1
if ! "$PYTHON" -c 'import torch, numpy' 2>/dev/null; then
  HAVE_TORCH=0
  echo "whole_process.sh: PyTorch is not installed, so the torch columns are null;" \
    "install it with: pip install torch --index-url https://download.pytorch.org/whl/cpu" >&2
fi

BIN=$(cd "$BIN" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/genimg-bench.XXXXXX")
if [[ ${BENCH_KEEP:-0} == 1 ]]; then
  echo "whole_process.sh: keeping $WORK" >&2
else
  trap 'rm -rf "$WORK"' EXIT
fi
cd "$WORK"

SEED=(--seed 0 --device "$DEVICE")
if [[ $QUICK == 1 ]]; then
  TRAIN_SPLIT=test MLP_EPOCHS=1 VQ_EPOCHS=1 PRIOR_EPOCHS=1 DDIM_N=8 DDIM_STEPS=5
  PRIOR_NET=(--layers 2 --channels 16) # as pipelines/vqvae2.mk with SMOKE=1
  # The colour stages: images at 64 and 256 px, top and bottom code maps, samples.
  N_64=64 N_256=8 N_TOP=32 N_BOTTOM=16 SAMPLE_N=2 N_C10=16
else
  TRAIN_SPLIT=train MLP_EPOCHS=10 VQ_EPOCHS=1 PRIOR_EPOCHS=2 DDIM_N=64 DDIM_STEPS=50
  PRIOR_NET=()
  if [[ $DEVICE == cpu ]]; then
    N_64=640 N_256=40 N_TOP=160 N_BOTTOM=48 SAMPLE_N=16 N_C10=160
  else # a GPU: budgets that keep start-up small beside the work (see the top)
    N_64=3416 N_256=370 N_TOP=370 N_BOTTOM=370 SAMPLE_N=16 N_C10=3416
  fi
fi

REPEATS=${BENCH_REPEATS:-1}
if ! [[ $REPEATS =~ ^[1-9][0-9]*$ ]]; then
  echo "whole_process.sh: BENCH_REPEATS must be a positive integer, got '$REPEATS'" >&2
  exit 2
fi

wants() { [[ ",$STAGES," == *",$1,"* ]]; }

# $(mib KIB): KiB to MiB, one decimal (null stays null).
mib() { awk -v k="$1" 'BEGIN { if (k == "null") print "null"; else printf "%.1f", k / 1024 }'; }

# timed NAME COMMAND...: runs COMMAND under /usr/bin/time, REPEATS times, its stdout to
# NAME.out and stderr to NAME.err (the last run's); leaves "seconds peak_kib" in NAME.time,
# the median seconds and the largest peak. A failure shows the log and stops.
timed() {
  local name=$1
  shift
  local rc=0 r
  : > "$name.times"
  for ((r = 0; r < REPEATS; r++)); do
    if [[ $HAVE_TIME == 1 ]]; then
      /usr/bin/time -f '%e %M' -o "$name.time" "$@" > "$name.out" 2> "$name.err" || rc=$?
    else
      local start=$EPOCHREALTIME
      "$@" > "$name.out" 2> "$name.err" || rc=$?
      awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f null\n", b - a }' > "$name.time"
    fi
    if [[ $rc != 0 ]]; then
      echo "whole_process.sh: $name failed: $*" >&2
      tail -n 20 "$name.err" >&2
      exit 1
    fi
    cat "$name.time" >> "$name.times"
  done
  sort -n -k1,1 "$name.times" | awk '
    { s[NR] = $1; if ($2 == "null") none = 1; else if ($2 + 0 > peak) peak = $2 + 0 }
    END { printf "%s %s\n", s[int((NR + 1) / 2)], (none ? "null" : peak) }' > "$name.time"
}

# A JSON field's value from a one-line object (numbers only).
field() { sed -n "s/.*\"$1\": *\([-0-9.eE+]*\).*/\1/p" "$2" | head -n 1; }

# $(per_s COUNT SECONDS): COUNT / SECONDS with two decimals, null without seconds.
per_s() { awk -v n="$1" -v s="$2" 'BEGIN { if (s == "null" || s <= 0) print "null"; else printf "%.2f", n / s }'; }

ROWS=()
# stage_line STAGE GENIMG_NAME [TORCH_NAME] [EXTRA_JSON] [IMAGES]: one result line from the
# timings; with IMAGES (genimg's; the peer's come from its "images") also images per second.
stage_line() {
  local stage=$1 g=$2 t=${3:-} extra=${4:-} images=${5:-}
  local g_sec g_kib t_sec=null t_wo=null t_mib=null ratio=null g_ips="" t_ips=""
  read -r g_sec g_kib < "$g.time"
  if [[ -n $t ]]; then
    local t_kib import
    read -r t_sec t_kib < "$t.time"
    import=$(field import_seconds "$t.out")
    t_wo=$(awk -v a="$t_sec" -v b="$import" 'BEGIN { printf "%.2f", a - b }')
    t_mib=$(mib "$t_kib")
    ratio=$(awk -v a="$t_wo" -v b="$g_sec" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  fi
  if [[ -n $images ]]; then
    g_ips=$(per_s "$images" "$g_sec")
    t_ips=null
    if [[ -n $t ]]; then
      t_ips=$(per_s "$(field images "$t.out")" "$t_wo")
    fi
    extra+=", \"genimg_images_per_s\": $g_ips, \"torch_images_per_s\": $t_ips"
  fi
  local line
  line=$(printf '{"stage": "%s", "genimg_seconds": %s, "genimg_peak_rss_mib": %s, "torch_seconds": %s, "torch_seconds_without_import": %s, "torch_peak_rss_mib": %s, "ratio": %s, "repeats": %s%s}' \
    "$stage" "$g_sec" "$(mib "$g_kib")" "$t_sec" "$t_wo" "$t_mib" "$ratio" "$REPEATS" "$extra")
  echo "$line"
  ROWS+=("$stage|$g_sec|$(mib "$g_kib")|$t_sec|$t_wo|$t_mib|$ratio|$g_ips|$t_ips")
}

PEER_CMD=("$PYTHON" "$PEER" --threads "$THREADS" --seed 0 --device "$DEVICE")

# Inputs, untimed: the bundled digits as .npy with labels.
"$BIN/img-pack" mnist --split train -o train.npy --labels-out train-labels.npy
"$BIN/img-pack" mnist --split test -o test.npy --labels-out test-labels.npy
DATA=$TRAIN_SPLIT.npy
LABELS=$TRAIN_SPLIT-labels.npy
# Held-out data as genimg takes it: with the bundled train split, its test split.
EVAL=()
if [[ $TRAIN_SPLIT == train ]]; then
  EVAL=(--eval-data test.npy)
fi

# torch_stage NAME ARGS...: the peer, timed, when torch is there.
torch_stage() {
  local name=$1
  shift
  if [[ $HAVE_TORCH == 1 ]]; then
    timed "$name" "${PEER_CMD[@]}" "$@"
    echo "$name"
  fi
}

# vae-mlp and vib-mlp, as pipelines/vae.mk trains them.
for preset in vae-mlp vib-mlp; do
  if wants "$preset"; then
    timed "g-$preset" "$BIN/vae-train" --preset "$preset" --data mnist --split "$TRAIN_SPLIT" \
      --epochs "$MLP_EPOCHS" "${SEED[@]}" --metrics "$preset.jsonl" -o "$preset.safetensors"
    peer_eval=("${EVAL[@]}")
    if [[ $preset == vib-mlp && ${#EVAL[@]} -gt 0 ]]; then
      peer_eval+=(--eval-labels test-labels.npy)
    fi
    t=$(torch_stage "t-$preset" "$preset" --data "$DATA" --labels "$LABELS" "${peer_eval[@]}" \
      --epochs "$MLP_EPOCHS" -o "torch-$preset.safetensors")
    stage_line "$preset" "g-$preset" "$t"
  fi
done

# vqvae2-mnist, as pipelines/vqvae2.mk trains it; made untimed when a later stage needs it.
if wants vqvae2-mnist; then
  timed g-vqvae2 "$BIN/vae-train" --preset vqvae2-mnist --data mnist --split "$TRAIN_SPLIT" \
    --epochs "$VQ_EPOCHS" "${SEED[@]}" --metrics vqvae2.jsonl -o vq.safetensors
  t=$(torch_stage t-vqvae2 vqvae2-mnist --data "$DATA" "${EVAL[@]}" --epochs "$VQ_EPOCHS" \
    -o torch-vq.safetensors)
  stage_line vqvae2-mnist g-vqvae2 "$t"
elif wants vq-encode || wants prior-top || wants prior-bottom || wants vq-decode; then
  REPEATS=1 timed g-vqvae2 "$BIN/vae-train" --preset vqvae2-mnist --data mnist --split "$TRAIN_SPLIT" \
    --epochs "$VQ_EPOCHS" "${SEED[@]}" -o vq.safetensors
fi

# vq-encode of the training split (timed) and of the test split (untimed, the priors'
# held-out codes); the peer loads genimg's checkpoint and its codes are compared.
if wants vq-encode || wants prior-top || wants prior-bottom || wants vq-decode; then
  timed g-encode "$BIN/vq-encode" --model vq.safetensors --data mnist --split "$TRAIN_SPLIT" \
    --device "$DEVICE" -o codes-train.safetensors
  if [[ $TRAIN_SPLIT == train ]]; then
    "$BIN/vq-encode" --model vq.safetensors --data mnist --split test --device "$DEVICE" -o codes-test.safetensors
  else
    cp codes-train.safetensors codes-test.safetensors
  fi
fi
if wants vq-encode; then
  t=$(torch_stage t-encode vq-encode --model vq.safetensors --data "$DATA" --labels "$LABELS" \
    -o torch-codes.safetensors)
  extra=""
  if [[ -n $t ]]; then
    "${PEER_CMD[@]}" agree --genimg codes-train.safetensors --peer torch-codes.safetensors --first 100 > agree.json
    echo "whole_process.sh: vq-encode: the peer's codes agree with genimg's on the first 100 images: $(cat agree.json)" >&2
    extra=", \"code_agreement\": $(cat agree.json)"
  fi
  stage_line vq-encode g-encode "$t" "$extra"
fi

# Both priors, as pipelines/vqvae2.mk fits them (class-conditional; the bottom one on the
# top codes), with held-out bits per code after each epoch.
for level in top bottom; do
  if wants "prior-$level"; then
    timed "g-prior-$level" "$BIN/prior-fit" codes-train.safetensors --level "$level" \
      --eval-data codes-test.safetensors --epochs "$PRIOR_EPOCHS" "${PRIOR_NET[@]}" "${SEED[@]}" \
      --metrics "prior-$level.jsonl" -o "prior-$level.safetensors"
    t=$(torch_stage "t-prior-$level" "prior-$level" --data codes-train.safetensors \
      --eval-data codes-test.safetensors --epochs "$PRIOR_EPOCHS" "${PRIOR_NET[@]}" \
      -o "torch-prior-$level.safetensors")
    stage_line "prior-$level" "g-prior-$level" "$t"
  fi
done

if wants vq-decode; then
  timed g-decode "$BIN/vq-decode" --model vq.safetensors codes-train.safetensors --device "$DEVICE" -o decoded.npy
  t=$(torch_stage t-decode vq-decode --model vq.safetensors --codes codes-train.safetensors \
    -o torch-decoded.npy)
  stage_line vq-decode g-decode "$t"
fi

# ddpm-unet-mnist: one epoch of the 1,000 test digits (see above), with BENCH_QUICK of their
# first 256 (when numpy is there to cut them); DDIM as pipelines/ddpm.mk.
# genimg's ddpm-train is class-conditional on the bundled digits' labels; so is the peer's.
DDPM_DATA=(--data mnist --split test)
DDPM_PEER_DATA=(--data test.npy --labels test-labels.npy)
if [[ $QUICK == 1 && $HAVE_TORCH == 1 ]]; then
  "$PYTHON" -c 'import numpy as np; np.save("digits-256.npy", np.load("test.npy")[:256])'
  DDPM_DATA=(--data digits-256.npy)
  DDPM_PEER_DATA=(--data digits-256.npy)
fi
if wants ddpm-train; then
  timed g-ddpm "$BIN/ddpm-train" --preset ddpm-unet-mnist "${DDPM_DATA[@]}" --epochs 1 \
    "${SEED[@]}" --metrics ddpm.jsonl -o ddpm.safetensors
  t=$(torch_stage t-ddpm ddpm-train "${DDPM_PEER_DATA[@]}" --epochs 1 -o torch-ddpm.safetensors)
  stage_line ddpm-train g-ddpm "$t"
elif wants ddim; then
  REPEATS=1 timed g-ddpm "$BIN/ddpm-train" --preset ddpm-unet-mnist "${DDPM_DATA[@]}" --epochs 1 \
    "${SEED[@]}" -o ddpm.safetensors
fi
if wants ddim; then
  timed g-ddim "$BIN/ddpm-denoise" --model ddpm.safetensors -n "$DDIM_N" --sampler ddim \
    --steps "$DDIM_STEPS" --clip "${SEED[@]}" --png ddim.png
  t=$(torch_stage t-ddim ddim --model ddpm.safetensors -n "$DDIM_N" --steps "$DDIM_STEPS" -o torch-ddim.npy)
  stage_line ddim g-ddim "$t"
fi

# The colour stages (see the top): inputs made untimed; each genimg command as a user runs it,
# then the peer on the same files.
colour() { wants vqvae2-64 || wants vqvae2-256 || wants prior-32 || wants prior-64 || wants sample-256 || wants ddpm-cifar10; }

# npy_head IN N OUT: the first N images of an .npy (version 1-3 header, C order), with the
# standard library only, so genimg's side needs no numpy.
npy_head() {
  "$PYTHON" - "$@" <<'PY'
import ast, struct, sys
src, n, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(src, "rb") as f:
    magic = f.read(8)
    size = struct.unpack("<H" if magic[6] == 1 else "<I", f.read(2 if magic[6] == 1 else 4))[0]
    header = ast.literal_eval(f.read(size).decode("latin1"))
    shape = header["shape"]
    if header["fortran_order"] or shape[0] < n:
        sys.exit(f"npy_head: {src}: {shape[0]} images in C order needed, at least {n}")
    row = int(header["descr"][2:])
    for d in shape[1:]:
        row *= d
    header["shape"] = (n,) + tuple(shape[1:])
    text = repr(header).encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    with open(dst, "wb") as out:
        out.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + f.read(n * row))
PY
}

if colour; then
  "$BIN/img-pack" emoji --split train -o emoji.npy
  npy_head emoji.npy "$N_64" emoji-64px.npy
  "$BIN/img-pack" emoji --split test --size 256 -o emoji-256px-all.npy
  npy_head emoji-256px-all.npy "$N_256" emoji-256px.npy
  "$BIN/img-pack" emoji --split train --size 32 -o emoji-32px-all.npy
  npy_head emoji-32px-all.npy "$N_C10" emoji-32px.npy
fi

if wants vqvae2-64; then
  timed g-vqvae2-64 "$BIN/vae-train" --preset vqvae2 --data emoji-64px.npy --batch-size 32 \
    --epochs 1 "${SEED[@]}" --metrics vqvae2-64.jsonl -o vq64.safetensors
  t=$(torch_stage t-vqvae2-64 vqvae2 --data emoji-64px.npy --batch-size 32 --epochs 1 \
    -o torch-vq64.safetensors)
  stage_line vqvae2-64 g-vqvae2-64 "$t" "" "$N_64"
fi

# vqvae2-256; made untimed when a prior stage needs its codes.
VQ256=(--preset vqvae2 --data emoji-256px.npy --batch-size 4 --epochs 1 "${SEED[@]}")
if wants vqvae2-256; then
  timed g-vqvae2-256 "$BIN/vae-train" "${VQ256[@]}" --metrics vqvae2-256.jsonl -o vq256.safetensors
  t=$(torch_stage t-vqvae2-256 vqvae2 --data emoji-256px.npy --batch-size 4 --epochs 1 \
    -o torch-vq256.safetensors)
  stage_line vqvae2-256 g-vqvae2-256 "$t" "" "$N_256"
elif wants prior-32 || wants prior-64 || wants sample-256; then
  REPEATS=1 timed g-vqvae2-256 "$BIN/vae-train" "${VQ256[@]}" -o vq256.safetensors
fi

# 32x32 top and 64x64 bottom codes of the upscaled emoji, by vqvae2-256's checkpoint.
if wants prior-32 || wants prior-64 || wants sample-256; then
  for level in top bottom; do
    n=$N_TOP
    [[ $level == bottom ]] && n=$N_BOTTOM
    npy_head emoji-256px-all.npy "$n" "codes-$level-images.npy"
    "$BIN/vq-encode" --model vq256.safetensors "codes-$level-images.npy" --device "$DEVICE" \
      -o "codes-$level.safetensors"
  done
fi

# prior-32 (top) and prior-64 (bottom, on the top codes); made untimed (once) for sample-256.
for level in top bottom; do
  stage=prior-32 n=$N_TOP
  [[ $level == bottom ]] && stage=prior-64 n=$N_BOTTOM
  fit=(prior-fit "codes-$level.safetensors" --level "$level" --no-labels --batch-size 16 --epochs 1
    "${PRIOR_NET[@]}" "${SEED[@]}")
  if wants "$stage"; then
    timed "g-$stage" "$BIN/${fit[0]}" "${fit[@]:1}" --metrics "$stage.jsonl" -o "$stage.safetensors"
    t=$(torch_stage "t-$stage" "prior-$level" --data "codes-$level.safetensors" --no-labels \
      --batch-size 16 --epochs 1 "${PRIOR_NET[@]}" -o "torch-$stage.safetensors")
    stage_line "$stage" "g-$stage" "$t" "" "$n"
  elif wants sample-256; then
    REPEATS=1 timed "g-$stage" "$BIN/${fit[0]}" "${fit[@]:1}" -o "$stage.safetensors"
  fi
done

if wants sample-256; then
  timed g-sample-256 "$BIN/prior-sample" --model prior-32.safetensors --bottom prior-64.safetensors \
    -n "$SAMPLE_N" "${SEED[@]}" -o sample-256.safetensors
  t=""
  if [[ $DEVICE != cpu ]]; then
    t=$(torch_stage t-sample-256 prior-sample -n "$SAMPLE_N" --top-size 32 "${PRIOR_NET[@]}")
  fi
  stage_line sample-256 g-sample-256 "$t" "" "$SAMPLE_N"
fi

# ddpm-cifar10 (google/ddpm-cifar10-32's U-Net, 35.7 M parameters) on the emoji at 32 px.
if wants ddpm-cifar10; then
  timed g-ddpm-cifar10 "$BIN/ddpm-train" --preset ddpm-cifar10 --data emoji-32px.npy --batch-size 16 \
    --epochs 1 "${SEED[@]}" --metrics ddpm-cifar10.jsonl -o ddpm-cifar10.safetensors
  t=$(torch_stage t-ddpm-cifar10 ddpm-train --preset ddpm-cifar10 --data emoji-32px.npy --batch-size 16 \
    --epochs 1 -o torch-ddpm-cifar10.safetensors)
  stage_line ddpm-cifar10 g-ddpm-cifar10 "$t" "" "$N_C10"
fi

echo
echo "| stage | genimg s | genimg MiB | PyTorch s | PyTorch s without import | PyTorch MiB | ratio | genimg images/s | PyTorch images/s |"
echo "|---|---|---|---|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
  IFS='|' read -r s gs gm ts tw tm r gi ti <<< "$row"
  echo "| $s | $gs | $gm | $ts | $tw | $tm | $r | $gi | $ti |"
done
