#!/usr/bin/env bash
# The GPU check, run once on a GPU machine from the repository root (no Rust there):
#   scripts/gpu-check.sh KIT OUT
# KIT is what `make gpu-kit` made here (target/gpu-kit: genimg.xz, every tool in one CUDA
# executable, and device.xz, the tests/device executable). Writes under OUT: nvidia-smi.txt,
# one log per stage, summary.txt (the exit status of each stage). Every stage has its own
# time limit and runs whatever the others did. DEVICE=cpu runs the same stages on the CPU (a
# check of the script itself on a machine without a GPU, with a CPU-build kit; the bench then
# on BENCH_QUICK's tiny budget).
#
# The groups of stages, all by default, fewer with ONLY=a,b (to split the check over two calls
# of a device's time budget):
#   tests   the device tests (tests/device: every network, the samplers, against the CPU)
#   smoke   the four SMOKE pipelines with DEVICE=cuda
#   bench   the speed table against PyTorch on the same GPU: benches/whole_process.sh with
#           BENCH_DEVICE (stages BENCH_STAGES, by default the table of docs/gpu.md) -> bench.log,
#           its JSON lines and a Markdown table
set -uo pipefail
kit=${1:?usage: scripts/gpu-check.sh KIT OUT}
out=${2:?usage: scripts/gpu-check.sh KIT OUT}
device=${DEVICE:-cuda}
mkdir -p "$out/bin"
out=$(cd "$out" && pwd)
summary="$out/summary.txt"
: >"$summary"

# The CUDA 13 libraries a CUDA build opens (cuBLAS, cuRAND, NVRTC) come with PyTorch's wheels;
# libcuda.so.1 is the driver's, already on the system.
py_libs=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
dirs = set()
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for pattern in ("nvidia/*/lib", "nvidia/*/*/lib", "torch/lib"):
        dirs.update(d for d in glob.glob(os.path.join(base, pattern)) if os.path.isdir(d))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="${py_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >"$out/env.txt"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1

xz -dc "$kit/genimg.xz" >"$out/bin/genimg" && xz -dc "$kit/device.xz" >"$out/device" && chmod +x "$out/bin/genimg" "$out/device"
"$out/bin/genimg" --install "$out/bin"

stage() { # NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$summary"
}

only=",${ONLY:-tests,smoke,bench},"
wants() { [[ $only == *",$1,"* ]]; }

wants tests && stage device-tests 240 env GENIMG_TEST_DEVICE="$device" "$out/device" --test-threads 1
# The kit's tools are newer than the sources here, so make does not try to rebuild them
# (the Makefile's build rule); -o says so outright.
tools=$(cd "$out/bin" && ls | grep -v '^genimg$')
keep=$(for t in $tools; do printf -- '-o %s ' "$out/bin/$t"; done)
if wants smoke; then
  for p in vae vqvae2 ddpm; do
    # shellcheck disable=SC2086
    stage "smoke-$p" 150 make --no-print-directory $keep pipeline-$p SMOKE=1 DEVICE="$device" BIN="$out/bin" OUT="$out/smoke/$p"
  done
  # shellcheck disable=SC2086
  stage smoke-vqvae2-emoji 150 make --no-print-directory $keep pipeline-vqvae2 SMOKE=1 DATA=emoji DEVICE="$device" BIN="$out/bin" OUT="$out/smoke/vqvae2-emoji"
fi
if wants bench; then
  quick=0
  [[ $device == cpu ]] && quick=1
  stage bench 420 env BENCH_DEVICE="$device" BENCH_QUICK=$quick BIN="$out/bin" \
    BENCH_STAGES="${BENCH_STAGES:-vae-mlp,vqvae2-64,vqvae2-256,prior-32,ddpm-cifar10,ddim,sample-256}" \
    benches/whole_process.sh
fi
cat "$summary"
