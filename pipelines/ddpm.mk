# make pipeline-ddpm [DATA=mnist|emoji] [OUT=runs/ddpm] [EPOCHS=15] [SEED=0] [DEVICE=cpu] [SMOKE=1]
#
# A bundled labelled set (MNIST padded to 32x32, or the emoji at 32x32 in colour) -> train a
# class-conditional ddpm-unet-mnist (labels dropped to the null class one time in ten, for
# classifier-free guidance) -> 10 samples of each class with DDIM (50 steps) at guidance W = 0,
# 1 and 3 (10 steps with SMOKE=1), as PNG grids of one class per row, and 16 with the full 1000-step ancestral chain ->
# a vib-mlp classifier trained on the same data scores each guided set (the fraction of samples
# of their class) -> ddpm-eval's variational bound in bits/dim on held-out images. summary.json
# gathers the wall times, the final loss, the held-out noise-prediction error, the class
# accuracy per W and the bound. SMOKE=1 runs the same graph with a tiny U-Net trained on the
# test split, in about a minute.
#
# Sample quality as numbers (quality.jsonl, in summary.json as "quality"): a clf-conv
# classifier trained on the data gives features; pipelines/quality.sh reports FID, KID,
# precision, recall, density, coverage of each DDIM set (W = 0, 1, 3) and of the ancestral
# chain's samples against the test split's features, and their class accuracy; beside them
# the floor (as many train images against the test split) and the ceiling (as much Gaussian
# noise against it). With 100 samples a row (16 for the chain) these are small-sample
# figures: FID's bias grows as the sets shrink, so compare rows of one size.

# OUT applies to the pipeline named on the command line (see vae.mk).
DDPM_DATA_SET := $(or $(DATA),mnist)
ifeq ($(DDPM_DATA_SET),mnist)
DDPM_SET := --data mnist
DDPM_CLASSES := 10
else ifeq ($(DDPM_DATA_SET),emoji)
DDPM_SET := --data emoji --size 32
DDPM_CLASSES := 9
else
$(error pipeline-ddpm: DATA=$(DDPM_DATA_SET): expected mnist or emoji)
endif
DDPM_DEFAULT_OUT := runs/ddpm$(if $(filter mnist,$(DDPM_DATA_SET)),,-$(DDPM_DATA_SET))
DDPM_OUT := $(if $(filter pipeline-ddpm,$(MAKECMDGOALS)),$(or $(OUT),$(DDPM_DEFAULT_OUT)),$(DDPM_DEFAULT_OUT))
DDPM_SEED := $(or $(SEED),0)
DDPM_DEVICE := $(or $(DEVICE),cpu)
ifeq ($(SMOKE),1)
DDPM_EPOCHS := 1
DDPM_NET := --base-channels 8 --channel-mult 1,2,2 --res-blocks 1
# The test split trains; the held-out error is on (a copy of) it, metrics eval_*.
DDPM_TRAIN := $(DDPM_SET) --split test --eval-data $(DDPM_OUT)/test.npy --eval-labels $(DDPM_OUT)/test-labels.npy --batch-size 32
DDPM_HELD_OUT := eval
DDPM_TEST := $(DDPM_OUT)/test.npy
DDPM_VIB := $(DDPM_SET) --split test --epochs 1
DDPM_CHAIN := 8
DDPM_BOUND_IMAGES := 4
DDPM_DDIM_STEPS := 10
else
DDPM_EPOCHS := $(or $(EPOCHS),15)
DDPM_NET :=
# The train split trains; the held-out error is on the bundled test split, metrics test_*.
DDPM_TRAIN := $(DDPM_SET)
DDPM_HELD_OUT := test
DDPM_TEST :=
DDPM_VIB := $(DDPM_SET) --epochs 10
DDPM_CHAIN := 16
DDPM_BOUND_IMAGES := 25
DDPM_DDIM_STEPS := 50
endif
DDPM_COMMON := --seed $(DDPM_SEED) --device $(DDPM_DEVICE)
DDPM_STAMP := $(DDPM_OUT)/.settings-$(DDPM_EPOCHS)-$(DDPM_SEED)-$(DDPM_DEVICE)-$(SMOKE)-$(DDPM_DATA_SET)
DDPM_SAMPLES := $(shell echo $$(( 10 * $(DDPM_CLASSES) )))
DDPM_GUIDANCE := 0 1 3
# The floor's and the ceiling's shares of the train split and of the test split's noise:
# about DDPM_SAMPLES images each (9,000 and 1,000 digits; 3,416 and 370 emoji).
DDPM_FLOOR_SHARD := $(if $(filter mnist,$(DDPM_DATA_SET)),0/90,0/38)
DDPM_NOISE_SHARD := $(if $(filter mnist,$(DDPM_DATA_SET)),0/10,0/4)
DDPM_Q := $(DDPM_OUT)/quality

.PHONY: pipeline-ddpm
pipeline-ddpm: $(DDPM_OUT)/summary.json
	@cat $<

# A changed setting retrains: the stamp's name holds them.
$(eval $(call stamp_rule,$(DDPM_STAMP),$(DDPM_OUT)/.settings-*))

# SMOKE's held-out copy of the training images (the emoji resized by img-pack's filter).
$(DDPM_OUT)/test.npy: $(DDPM_STAMP) $(BIN)/img-pack
	$(BIN)/img-pack $(DDPM_DATA_SET) $(if $(filter emoji,$(DDPM_DATA_SET)),--size 32) --split test \
	  --labels-out $(DDPM_OUT)/test-labels.npy -o $@

$(DDPM_OUT)/ddpm.safetensors: $(DDPM_STAMP) $(DDPM_TEST) $(BIN)/ddpm-train
	rm -f $(DDPM_OUT)/ddpm-train.jsonl
	$(call timed,$(DDPM_OUT)/train.seconds,$(BIN)/ddpm-train --preset ddpm-unet-mnist $(DDPM_NET) $(DDPM_TRAIN) \
	  --epochs $(DDPM_EPOCHS) $(DDPM_COMMON) --metrics $(DDPM_OUT)/ddpm-train.jsonl -o $@)

$(DDPM_OUT)/vib.safetensors: $(DDPM_STAMP) $(BIN)/vae-train
	$(BIN)/vae-train --preset vib-mlp $(DDPM_VIB) $(DDPM_COMMON) --metrics $(DDPM_OUT)/vib-train.jsonl -o $@

# $(DDPM_OUT)/samples-wW.npy: 10 samples of each class with guidance W, and their classes.
$(DDPM_OUT)/samples-w%.npy: $(DDPM_OUT)/ddpm.safetensors $(BIN)/ddpm-denoise
	$(call timed,$(DDPM_OUT)/ddim-w$*.seconds,$(BIN)/ddpm-denoise --model $< -n $(DDPM_SAMPLES) --sampler ddim \
	  --steps $(DDPM_DDIM_STEPS) --clip --guidance $* --labels-out $(DDPM_OUT)/samples-w$*.labels.npy $(DDPM_COMMON) -o $@)

.PRECIOUS: $(DDPM_OUT)/samples-w%.npy

$(DDPM_OUT)/samples-w%.png: $(DDPM_OUT)/samples-w%.npy $(BIN)/img-grid
	$(BIN)/img-grid $< --cols 10 --scale 2 -o $@

# The classifier's error on the samples of guidance W (32x32 digits are centre-cropped to its 28x28).
$(DDPM_OUT)/classes-w%.json: $(DDPM_OUT)/vib.safetensors $(DDPM_OUT)/samples-w%.npy $(BIN)/vae-eval
	$(BIN)/vae-eval --model $< --data $(DDPM_OUT)/samples-w$*.npy --labels $(DDPM_OUT)/samples-w$*.labels.npy \
	  $(DDPM_COMMON) -o $@

$(DDPM_OUT)/samples-ddpm.npy: $(DDPM_OUT)/ddpm.safetensors $(BIN)/ddpm-denoise
	$(call timed,$(DDPM_OUT)/ddpm.seconds,$(BIN)/ddpm-denoise --model $< -n $(DDPM_CHAIN) --sampler ddpm \
	  --clip --labels-out $(DDPM_OUT)/samples-ddpm.labels.npy $(DDPM_COMMON) -o $@)

$(DDPM_OUT)/samples-ddpm.png: $(DDPM_OUT)/samples-ddpm.npy $(BIN)/img-grid
	$(BIN)/img-grid $< --scale 2 -o $@

# The bound on the first images of the bundled test split.
$(DDPM_OUT)/bound.json: $(DDPM_OUT)/ddpm.safetensors $(BIN)/ddpm-eval
	$(call timed,$(DDPM_OUT)/bound.seconds,$(BIN)/ddpm-eval --model $< $(DDPM_SET) --split test \
	  -n $(DDPM_BOUND_IMAGES) $(DDPM_COMMON) -o $@)

# The classifier whose features the quality table uses.
$(DDPM_OUT)/clf.safetensors: $(DDPM_STAMP) $(BIN)/vae-train
	$(BIN)/vae-train --preset clf-conv $(DDPM_SET) $(if $(filter 1,$(SMOKE)),--split test --epochs 1,--epochs 5 --lr-schedule cosine) \
	  $(DDPM_COMMON) --metrics $(DDPM_OUT)/clf-train.jsonl -o $@

$(DDPM_Q)/test-features.npy: $(DDPM_OUT)/clf.safetensors $(BIN)/img-classify
	@mkdir -p $(@D)
	$(BIN)/img-classify --model $< $(DDPM_SET) --split test --features $(DDPM_COMMON) -o $@

$(DDPM_Q)/noise.npy: $(DDPM_STAMP) $(BIN)/ddpm-noise
	@mkdir -p $(@D)
	$(BIN)/ddpm-noise --t 999 --clip $(DDPM_SET) --split test $(DDPM_COMMON) -o $@

DDPM_QUALITY = pipelines/quality.sh $(BIN) $(DDPM_OUT)/clf.safetensors

$(DDPM_Q)/floor.json: $(DDPM_Q)/test-features.npy $(QUALITY_TOOLS)
	$(DDPM_QUALITY) "$(DDPM_SET) --split train --shard $(DDPM_FLOOR_SHARD)" $< - $(DDPM_SEED) $(DDPM_DEVICE) \
	  '"row": "floor: train against test"' > $@

$(DDPM_Q)/ceiling.json: $(DDPM_Q)/test-features.npy $(DDPM_Q)/noise.npy $(QUALITY_TOOLS)
	$(DDPM_QUALITY) "--data $(DDPM_Q)/noise.npy --range 11 --shard $(DDPM_NOISE_SHARD)" $< - $(DDPM_SEED) $(DDPM_DEVICE) \
	  '"row": "ceiling: noise against test"' > $@

$(DDPM_Q)/ddim-w%.json: $(DDPM_OUT)/samples-w%.npy $(DDPM_Q)/test-features.npy $(QUALITY_TOOLS)
	$(DDPM_QUALITY) "--data $<" $(DDPM_Q)/test-features.npy $(DDPM_OUT)/samples-w$*.labels.npy $(DDPM_SEED) $(DDPM_DEVICE) \
	  '"sampler": "ddim", "steps": $(DDPM_DDIM_STEPS), "guidance": $*' > $@

$(DDPM_Q)/ddpm.json: $(DDPM_OUT)/samples-ddpm.npy $(DDPM_Q)/test-features.npy $(QUALITY_TOOLS)
	$(DDPM_QUALITY) "--data $<" $(DDPM_Q)/test-features.npy $(DDPM_OUT)/samples-ddpm.labels.npy $(DDPM_SEED) $(DDPM_DEVICE) \
	  '"sampler": "ddpm", "steps": 1000, "guidance": 0' > $@

$(DDPM_OUT)/quality.jsonl: $(DDPM_Q)/floor.json $(DDPM_Q)/ceiling.json $(foreach w,$(DDPM_GUIDANCE),$(DDPM_Q)/ddim-w$(w).json) $(DDPM_Q)/ddpm.json
	cat $^ > $@

DDPM_PARTS := $(foreach w,$(DDPM_GUIDANCE),$(DDPM_OUT)/samples-w$(w).png $(DDPM_OUT)/classes-w$(w).json) \
  $(DDPM_OUT)/samples-ddpm.png $(DDPM_OUT)/bound.json $(DDPM_OUT)/quality.jsonl

$(DDPM_OUT)/summary.json: $(DDPM_PARTS)
	{ last=$$(tail -n 1 $(DDPM_OUT)/ddpm-train.jsonl); \
	  field() { sed -E "s/.*\"$$1\": *([^,}]*).*/\1/" <<< "$$2"; }; \
	  accuracy() { awk '{ print 1 - $$1 }' <<< "$$(field error "$$(cat $(DDPM_OUT)/classes-w$$1.json)")"; }; \
	  printf '{"data": "%s", "epochs": %s, "seed": %s, "smoke": %s,\n' $(DDPM_DATA_SET) $(DDPM_EPOCHS) $(DDPM_SEED) $(if $(filter 1,$(SMOKE)),true,false); \
	  printf ' "final_loss": %s, "held_out_mse": %s, "held_out_ema_mse": %s,\n' "$$(field train_mse "$$last")" \
	    "$$(field $(DDPM_HELD_OUT)_mse "$$last")" "$$(field $(DDPM_HELD_OUT)_ema_mse "$$last")"; \
	  printf ' "sample_class_accuracy": {%s},\n' "$$(for w in $(DDPM_GUIDANCE); do printf '"w%s": %s, ' $$w "$$(accuracy $$w)"; done | sed 's/, $$//')"; \
	  printf ' "bits_per_dim": %s, "bound_images": %s,\n' "$$(field bits_per_dim "$$(cat $(DDPM_OUT)/bound.json)")" $(DDPM_BOUND_IMAGES); \
	  printf ' "seconds": {"train": %s, %s "ddpm_1000_steps_%s_images": %s, "bound": %s},\n' "$$(cat $(DDPM_OUT)/train.seconds)" \
	    "$$(for w in $(DDPM_GUIDANCE); do printf '"ddim_$(DDPM_DDIM_STEPS)_steps_w%s": %s, ' $$w "$$(cat $(DDPM_OUT)/ddim-w$$w.seconds)"; done)" \
	    $(DDPM_CHAIN) "$$(cat $(DDPM_OUT)/ddpm.seconds)" "$$(cat $(DDPM_OUT)/bound.seconds)"; \
	  printf ' "quality": [%s],\n' "$$(paste -sd, $(DDPM_OUT)/quality.jsonl)"; \
	  printf ' "last_epoch": %s,\n' "$$last"; \
	  printf ' "files": ["ddpm.safetensors", %s "samples-ddpm.png", "bound.json", "quality.jsonl"]}\n' \
	    "$$(for w in $(DDPM_GUIDANCE); do printf '"samples-w%s.png", ' $$w; done)"; } > $@
