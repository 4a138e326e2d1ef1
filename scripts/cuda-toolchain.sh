#!/usr/bin/env bash
# Sets up a CUDA 13.0 toolchain from NVIDIA's PyPI wheels, for `make build-cuda` on a machine
# with no GPU and no system CUDA, then prints the environment a build needs (eval it).
#
#   eval "$(scripts/cuda-toolchain.sh target/cuda-toolchain)"
#   cargo build --release --locked --features cuda
#
# What the wheels lack, and what this adds (measured on the 2-core build machine):
# - The CUDA 12 wheels ship no `nvcc` program; the 13.0 ones do, and 13.0 matches the
#   driver of the GPU machines this project runs on (PTX of a newer 13.x may not load there).
#   The wheels install one tree, site-packages/nvidia/cu13/{bin,include,lib,nvvm}; CUDA_HOME
#   points at it.
# - Linkers and build scripts look for `lib64/libX.so`; the wheels ship only `libX.so.N`.
#   `lib64/` gets unversioned links.
# - No wheel ships the driver library (libcuda.so, which comes with the NVIDIA driver). The
#   build links nothing against it (candle's cudarc loads the driver, cuBLAS, cuRAND and NVRTC
#   when a CUDA device is first asked for; vendor/README.md), so no stub is needed.
# - There is no `nvidia-smi` to ask for the compute capability: CUDA_COMPUTE_CAP=90 (H100 and
#   H200; candle's kernels build for it, as sm_90a) unless the caller sets one.
#
# The first `cargo build --features cuda` then takes 25-35 minutes on 2 cores, almost all of it
# nvcc compiling candle-kernels.
set -euo pipefail

prefix=${1:?usage: scripts/cuda-toolchain.sh PREFIX}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
python=${PYTHON:-python3}

# Pinned to the 13.0 release the GPU machines' driver runs.
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35 nvidia-cuda-cccl==13.0.85
)
stamp="$prefix/.installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${wheels[*]}" ]; then
  echo "cuda-toolchain: installing ${#wheels[@]} wheels (about 1.2 GB) under $prefix" >&2
  "$python" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
    --target "$prefix/site-packages" "${wheels[@]}" >&2
  echo "${wheels[*]}" >"$stamp"
fi

cuda="$prefix/site-packages/nvidia/cu13"
[ -x "$cuda/bin/nvcc" ] || { echo "cuda-toolchain: $cuda/bin/nvcc is missing after the install" >&2; exit 1; }
chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/* 2>/dev/null || true

# Unversioned links: lib64/libcublas.so -> ../lib/libcublas.so.13, and so on. Not for the
# CUDA runtime: candle-kernels links `-lcudart` (for its statically compiled MoE kernels, which
# register themselves with the runtime at program start), and with only lib64/libcudart.a ->
# libcudart_static.a to find, the linker takes the runtime statically. The tools then need no
# libcudart.so.13 to start; the static runtime opens the driver only when CUDA is first used.
mkdir -p "$cuda/lib64"
for lib in "$cuda"/lib/lib*.so.*; do
  base=$(basename "$lib")
  name=${base%%.so.*}.so
  [ "$name" = libcudart.so ] && continue
  ln -sfn "../lib/$base" "$cuda/lib64/$name"
  ln -sfn "../lib/$base" "$cuda/lib64/$base"
done
rm -f "$cuda/lib64/libcudart.so" "$cuda/lib64/libcudart.so.13"
ln -sfn ../lib/libcudart_static.a "$cuda/lib64/libcudart.a"

cat <<EOF
export CUDA_HOME='$cuda'
export CUDA_PATH='$cuda'
export PATH='$cuda/bin':"\$PATH"
export LIBRARY_PATH='$cuda/lib64':"\${LIBRARY_PATH:-}"
export CUDA_COMPUTE_CAP='${CUDA_COMPUTE_CAP:-90}'
EOF
