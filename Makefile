# genimg: build, test, benchmark, and the pipelines in pipelines/*.mk.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules

CARGO ?= cargo
BIN := target/release
TOOLS := img-pack img-grid img-plot vae-train vae-eval vae-encode vae-decode vq-encode vq-decode prior-fit prior-sample \
  ddpm-train ddpm-noise ddpm-denoise ddpm-eval tensor-cat img-classify img-select img-fid
TOOL_PATHS := $(addprefix $(BIN)/,$(TOOLS))
SOURCES := Cargo.toml $(shell find src bin data vendor -type f)

.PHONY: all build build-cuda gpu-kit test bench bench-stages lint clean
all: build

build: $(TOOL_PATHS)

# One cargo invocation builds every tool; the marker keeps make from running it per tool.
$(TOOL_PATHS) &: $(SOURCES)
	$(CARGO) build --release --locked
	@touch $(TOOL_PATHS)

# Every tool with --features cuda, on a machine with or without a GPU: NVIDIA's CUDA 13.0
# compiler from PyPI wheels (scripts/cuda-toolchain.sh), its own target directory. The first
# build takes about 30 minutes on 2 cores (nvcc compiling candle's kernels); not part of `test`.
CUDA_TOOLCHAIN ?= target/cuda-toolchain
CUDA_TARGET := target/cuda
build-cuda:
	eval "$$(scripts/cuda-toolchain.sh $(CUDA_TOOLCHAIN))" && \
	  $(CARGO) build --release --locked --features cuda --target-dir $(CUDA_TARGET) --bins --tests

# What scripts/gpu-check.sh takes to a GPU machine (64 MiB at most carried): the CUDA build's
# multi-call `genimg` and the tests/device executable, stripped and xz-compressed.
GPU_KIT := target/gpu-kit
gpu-kit: build-cuda
	mkdir -p $(GPU_KIT)
	strip -o $(GPU_KIT)/genimg $(CUDA_TARGET)/release/genimg
	strip -o $(GPU_KIT)/device $$(ls -t $(CUDA_TARGET)/release/deps/device-* | grep -v '\.d$$' | head -1)
	xz -T2 -6 -f $(GPU_KIT)/genimg $(GPU_KIT)/device
	ls -l $(GPU_KIT)

# Unit and integration tests, then each pipeline's smoke run (same graph, tiny budget).
test:
	$(CARGO) test --release --locked
	$(MAKE) --no-print-directory pipeline-vae SMOKE=1 OUT=target/smoke/vae
	$(MAKE) --no-print-directory pipeline-vqvae2 SMOKE=1 OUT=target/smoke/vqvae2
	$(MAKE) --no-print-directory pipeline-vqvae2 SMOKE=1 DATA=emoji OUT=target/smoke/vqvae2-emoji
	$(MAKE) --no-print-directory pipeline-ddpm SMOKE=1 OUT=target/smoke/ddpm

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets --locked -- -D warnings

# Median images/s of training, encoding and decoding, the samplers' seconds; GFLOP/s of the
# fused convolutions; the FID Inception's seconds for 1,000 images; the ddpm-cifar10 U-Net
# beside diffusers (benches/unet.sh: ratios in one run); then the whole-process table
# (bench-stages).
bench: build
	$(CARGO) bench --locked --bench throughput
	$(CARGO) bench --locked --bench conv
	$(CARGO) bench --locked --bench vq
	$(CARGO) bench --locked --bench inception
	CARGO="$(CARGO)" benches/unet.sh
	BIN=$(BIN) benches/whole_process.sh

# Every main-job stage as a whole process (the tool as the pipelines run it) beside its
# PyTorch peer (benches/peer/torch_stages.py): wall seconds and peak memory, JSON lines and a
# table. BENCH_STAGES=a,b runs some stages, BENCH_QUICK=1 all on a tiny budget.
bench-stages: build
	BIN=$(BIN) benches/whole_process.sh

clean:
	$(CARGO) clean
	rm -rf runs

# The shared rules first: the pipelines expand them as they are read.
include pipelines/common.mk
include $(filter-out pipelines/common.mk,$(wildcard pipelines/*.mk))
