# make pipeline-vqvae2 [DATA=mnist|emoji|FILE.npy] [OUT=runs/vqvae2] [EPOCHS=3] [PRIOR_EPOCHS=..]
#   [TEMPERATURE=0.5] [SEED=0] [DEVICE=cpu] [SMOKE=1]
#
# The main job. Bundled MNIST (or DATA below) -> train vqvae2-mnist (vqvae2 in colour) -> encode the train and test splits to
# codes -> fit a class-conditional PixelCNN prior over the top codes and one over the bottom
# codes conditioned on the top codes -> sample 10 digits of each class -> decode ->
# samples.png (one class per row), at temperature 0.5 (at 1.0 the priors of this short
# training draw many shapeless digits; at 0.5 about nine in ten are classified as their
# class). A vib-mlp classifier trained on the train split scores
# the samples: the fraction it assigns to their requested class (the classifier check of the
# VQ-VAE-2 paper). summary.json gathers test MSE, codes in use, prior NLLs, that accuracy and
# the wall time of every stage. Each file is a target, so a changed stage rebuilds only what
# depends on it. SMOKE=1 runs the same graph on a tiny budget (the test split, small priors,
# one epoch each).
#
# Sample quality as numbers (quality.jsonl, in summary.json as "quality", and tradeoff.svg): a
# clf-conv classifier trained on the train split gives features and class probabilities. For
# temperatures 1.0 and 0.5 and acceptance rates 10 %, 25 % and 100 %, prior-sample draws
# KEEP / rate samples of each class, img-classify scores them, img-select keeps the KEEP of
# each class most likely of their class (rejection sampling, VQ-VAE-2 section 3.3; 100 % keeps
# all), and pipelines/quality.sh reports FID, KID, precision, recall, density, coverage
# against the test split's features and the class accuracy of the kept samples. Every row
# compares KEEP x classes samples with the test split (1,000 digits: KEEP is 100, 40 for the
# 370 emoji), as do the floor (a ninth of the train split against the test split) and the
# ceiling (Gaussian noise, ddpm-noise at its last step, against the test split), so each
# number can be read between them. tradeoff.svg draws FID against class accuracy over the
# acceptance rates (the paper's Figure 5).
#
# The same flow as a shell pipe:
#   prior-sample --model prior-top.safetensors --bottom prior-bottom.safetensors -n 100 \
#     | vq-decode --model vqvae2.safetensors --png samples.png --cols 10

# DATA=mnist (default), emoji (the bundled 3x64x64 colour set, 9 categories: preset vqvae2,
# top codes 8x8, bottom codes 16x16) or an image array FILE.npy with LABELS=FILE.npy
# (integers), CLASSES=K (default 10) and, for the held-out codes, TEST_DATA= and TEST_LABELS=
# (default: the training files themselves, so there is no held-out set).
VQ_DATA := $(or $(DATA),mnist)
ifeq ($(VQ_DATA),mnist)
VQ_PRESET := vqvae2-mnist
VQ_CLASSES := 10
else ifeq ($(VQ_DATA),emoji)
VQ_PRESET := vqvae2
VQ_CLASSES := 9
else
VQ_PRESET := vqvae2
VQ_CLASSES := $(or $(CLASSES),10)
endif
# OUT applies to the pipeline named on the command line (see vae.mk); each data set has its own
# default directory.
VQ_DEFAULT_OUT := runs/vqvae2$(if $(filter mnist,$(VQ_DATA)),,-$(basename $(notdir $(VQ_DATA))))
VQ_OUT := $(if $(filter pipeline-vqvae2,$(MAKECMDGOALS)),$(or $(OUT),$(VQ_DEFAULT_OUT)),$(VQ_DEFAULT_OUT))
VQ_SEED := $(or $(SEED),0)
VQ_DEVICE := $(or $(DEVICE),cpu)
ifeq ($(SMOKE),1)
VQ_EPOCHS := 1
VQ_TOP_EPOCHS := 1
VQ_BOTTOM_EPOCHS := 1
VQ_TRAIN_SPLIT := test
VQ_PRIOR_NET := --layers 2 --channels 16
else
VQ_EPOCHS := $(or $(EPOCHS),3)
VQ_TOP_EPOCHS := $(or $(PRIOR_EPOCHS),10)
VQ_BOTTOM_EPOCHS := $(or $(PRIOR_EPOCHS),6)
VQ_TRAIN_SPLIT := train
VQ_PRIOR_NET :=
endif
VQ_TEMPERATURE := $(or $(TEMPERATURE),0.5)
VQ_COMMON := --seed $(VQ_SEED) --device $(VQ_DEVICE)
VQ_STAMP := $(VQ_OUT)/.settings-$(VQ_EPOCHS)-$(VQ_TOP_EPOCHS)-$(VQ_BOTTOM_EPOCHS)-$(VQ_SEED)-$(VQ_DEVICE)-$(SMOKE)-$(notdir $(VQ_DATA))
# Ten samples of each class, drawn in blocks of ten: a grid of ten columns shows one class a row.
VQ_SAMPLES := $(shell echo $$(( 10 * $(VQ_CLASSES) )))
# The quality table: samples kept per class (the test split's size over the classes), the
# rates, the temperatures; the floor's share of the train split (1/9 of a bundled one: the
# test split's size; all of a file).
VQ_KEEP := $(if $(filter 1,$(SMOKE)),2,$(if $(filter emoji,$(VQ_DATA)),40,100))
VQ_ACCEPTANCE := 10 25 100
VQ_QUALITY_TEMPERATURES := 1.0 0.5
VQ_FLOOR_SHARD := $(if $(filter mnist emoji,$(VQ_DATA)),0/9,0/1)
VQ_Q := $(VQ_OUT)/quality

# $(call vq_images,SPLIT): the flags naming the images (and labels) of a split: train or test
# of a bundled set; for a file, the training files or TEST_DATA / TEST_LABELS.
# $(call vq_pixels,SPLIT): the same images without their labels, for img-classify.
ifneq ($(filter mnist emoji,$(VQ_DATA)),)
vq_images = --data $(VQ_DATA) --split $(1)
vq_pixels = --data $(VQ_DATA) --split $(1)
VQ_INPUTS :=
else
vq_images = --data $(if $(filter test,$(1)),$(or $(TEST_DATA),$(VQ_DATA)),$(VQ_DATA)) \
  --labels $(if $(filter test,$(1)),$(or $(TEST_LABELS),$(LABELS)),$(LABELS))
vq_pixels = --data $(if $(filter test,$(1)),$(or $(TEST_DATA),$(VQ_DATA)),$(VQ_DATA))
VQ_INPUTS := $(VQ_DATA) $(LABELS) $(TEST_DATA) $(TEST_LABELS)
endif

# $(call vq_timed,STAGE,COMMAND): runs COMMAND and records its wall time in seconds, which
# summary.json gathers.
vq_timed = $(call timed,$(VQ_OUT)/.time-$(1),$(2))

.PHONY: pipeline-vqvae2
pipeline-vqvae2: $(VQ_OUT)/summary.json
	@cat $<

# A changed setting retrains: the stamp's name holds them.
$(eval $(call stamp_rule,$(VQ_STAMP),$(VQ_OUT)/.settings-*))

$(VQ_OUT)/vqvae2.safetensors: $(VQ_STAMP) $(VQ_INPUTS) $(BIN)/vae-train
	$(call vq_timed,vqvae2,$(BIN)/vae-train --preset $(VQ_PRESET) $(call vq_images,$(VQ_TRAIN_SPLIT)) \
	  $(if $(VQ_INPUTS),--eval-data $(or $(TEST_DATA),$(VQ_DATA)) --eval-labels $(or $(TEST_LABELS),$(LABELS))) \
	  --epochs $(VQ_EPOCHS) $(VQ_COMMON) --metrics $(VQ_OUT)/vqvae2-train.jsonl -o $@)

$(VQ_OUT)/codes-%.safetensors: $(VQ_OUT)/vqvae2.safetensors $(BIN)/vq-encode
	$(call vq_timed,encode-$*,$(BIN)/vq-encode --model $< $(call vq_images,$*) --device $(VQ_DEVICE) -o $@)

$(VQ_OUT)/prior-top.safetensors: $(VQ_OUT)/codes-$(VQ_TRAIN_SPLIT).safetensors $(VQ_OUT)/codes-test.safetensors $(BIN)/prior-fit
	$(call vq_timed,prior-top,$(BIN)/prior-fit $< --level top --eval-data $(VQ_OUT)/codes-test.safetensors \
	  --epochs $(VQ_TOP_EPOCHS) $(VQ_PRIOR_NET) $(VQ_COMMON) --metrics $(VQ_OUT)/prior-top.jsonl -o $@)

$(VQ_OUT)/prior-bottom.safetensors: $(VQ_OUT)/codes-$(VQ_TRAIN_SPLIT).safetensors $(VQ_OUT)/codes-test.safetensors $(BIN)/prior-fit
	$(call vq_timed,prior-bottom,$(BIN)/prior-fit $< --level bottom --eval-data $(VQ_OUT)/codes-test.safetensors \
	  --epochs $(VQ_BOTTOM_EPOCHS) $(VQ_PRIOR_NET) $(VQ_COMMON) --metrics $(VQ_OUT)/prior-bottom.jsonl -o $@)

# Ten samples per class in blocks of ten, so ten columns give one class per row. The
# temperature is part of the file's name, so changing it only resamples.
$(eval $(call stamp_rule,$(VQ_OUT)/.temperature-$(VQ_TEMPERATURE),$(VQ_OUT)/.temperature-*))

$(VQ_OUT)/sample-codes.safetensors: $(VQ_OUT)/.temperature-$(VQ_TEMPERATURE) $(VQ_OUT)/prior-top.safetensors $(VQ_OUT)/prior-bottom.safetensors $(BIN)/prior-sample
	$(call vq_timed,sample,$(BIN)/prior-sample --model $(VQ_OUT)/prior-top.safetensors --bottom $(VQ_OUT)/prior-bottom.safetensors -n $(VQ_SAMPLES) \
	  --temperature $(VQ_TEMPERATURE) $(VQ_COMMON) -o $@)

$(VQ_OUT)/samples.npy: $(VQ_OUT)/sample-codes.safetensors $(VQ_OUT)/vqvae2.safetensors $(BIN)/vq-decode
	$(call vq_timed,decode,$(BIN)/vq-decode --model $(VQ_OUT)/vqvae2.safetensors $< --device $(VQ_DEVICE) -o $@)

$(VQ_OUT)/samples.png: $(VQ_OUT)/samples.npy $(BIN)/img-grid
	$(BIN)/img-grid $< --cols 10 --scale 2 -o $@

$(VQ_OUT)/vib.safetensors: $(VQ_STAMP) $(VQ_INPUTS) $(BIN)/vae-train
	$(call vq_timed,vib,$(BIN)/vae-train --preset vib-mlp $(call vq_images,train) --epochs $(if $(filter 1,$(SMOKE)),1,10) \
	  $(if $(VQ_INPUTS),--eval-data $(or $(TEST_DATA),$(VQ_DATA)) --eval-labels $(or $(TEST_LABELS),$(LABELS))) \
	  $(VQ_COMMON) --metrics $(VQ_OUT)/vib-train.jsonl -o $@)

# The classifier's error on the samples, labelled with the classes they were drawn for
# (32x32 digits are centre-cropped to the classifier's 28x28).
$(VQ_OUT)/sample-classes.json: $(VQ_OUT)/vib.safetensors $(VQ_OUT)/samples.npy $(VQ_OUT)/sample-codes.safetensors $(BIN)/vae-eval
	$(BIN)/vae-eval --model $< --data $(VQ_OUT)/samples.npy --labels $(VQ_OUT)/sample-codes.safetensors $(VQ_COMMON) -o $@

# The classifier whose features and probabilities the quality table uses.
$(VQ_OUT)/clf.safetensors: $(VQ_STAMP) $(VQ_INPUTS) $(BIN)/vae-train
	$(call vq_timed,clf,$(BIN)/vae-train --preset clf-conv $(call vq_images,$(VQ_TRAIN_SPLIT)) $(if $(filter 1,$(SMOKE)),--epochs 1,--epochs 5 --lr-schedule cosine) \
	  $(VQ_COMMON) --metrics $(VQ_OUT)/clf-train.jsonl -o $@)

$(VQ_Q)/test-features.npy: $(VQ_OUT)/clf.safetensors $(BIN)/img-classify
	@mkdir -p $(@D)
	$(BIN)/img-classify --model $< $(call vq_pixels,test) --features $(VQ_COMMON) -o $@

# Gaussian noise of the data's geometry (x_T of the forward process, clipped to [-1, 1]).
$(VQ_Q)/noise.npy: $(VQ_STAMP) $(VQ_INPUTS) $(BIN)/ddpm-noise
	@mkdir -p $(@D)
	$(BIN)/ddpm-noise --t 999 --clip $(call vq_pixels,test) $(VQ_COMMON) -o $@

VQ_QUALITY = pipelines/quality.sh $(BIN) $(VQ_OUT)/clf.safetensors

$(VQ_Q)/floor.json: $(VQ_Q)/test-features.npy $(QUALITY_TOOLS)
	$(VQ_QUALITY) "$(call vq_pixels,train) --shard $(VQ_FLOOR_SHARD)" $< - $(VQ_SEED) $(VQ_DEVICE) '"row": "floor: train against test"' > $@

$(VQ_Q)/ceiling.json: $(VQ_Q)/test-features.npy $(VQ_Q)/noise.npy $(QUALITY_TOOLS)
	$(VQ_QUALITY) "--data $(VQ_Q)/noise.npy --range 11" $< - $(VQ_SEED) $(VQ_DEVICE) '"row": "ceiling: noise against test"' > $@

# $(call vq_draws,ACCEPTANCE): the samples drawn for a row, KEEP * 100 / ACCEPTANCE of each class.
vq_draws = $(shell echo $$(( $(VQ_CLASSES) * $(VQ_KEEP) * 100 / $(1) )))

# $(call vq_quality,TEMPERATURE,ACCEPTANCE): the rules of one row of the table: draw
# KEEP * 100 / ACCEPTANCE samples of each class, decode, score, keep the best KEEP of each.
define vq_quality
$(VQ_Q)/codes-t$(1)-a$(2).safetensors: $(VQ_OUT)/prior-top.safetensors $(VQ_OUT)/prior-bottom.safetensors $(BIN)/prior-sample
	@mkdir -p $$(@D)
	$(BIN)/prior-sample --model $(VQ_OUT)/prior-top.safetensors --bottom $(VQ_OUT)/prior-bottom.safetensors \
	  -n $(call vq_draws,$(2)) --temperature $(1) $(VQ_COMMON) -o $$@

$(VQ_Q)/samples-t$(1)-a$(2).npy: $(VQ_Q)/codes-t$(1)-a$(2).safetensors $(VQ_OUT)/vqvae2.safetensors $(BIN)/vq-decode
	$(BIN)/vq-decode --model $(VQ_OUT)/vqvae2.safetensors $$< --device $(VQ_DEVICE) -o $$@

$(VQ_Q)/probs-t$(1)-a$(2).npy: $(VQ_Q)/samples-t$(1)-a$(2).npy $(VQ_OUT)/clf.safetensors $(BIN)/img-classify
	$(BIN)/img-classify --model $(VQ_OUT)/clf.safetensors $$< $(VQ_COMMON) -o $$@

$(VQ_Q)/kept-t$(1)-a$(2).npy: $(VQ_Q)/probs-t$(1)-a$(2).npy $(BIN)/img-select
	$(BIN)/img-select $(VQ_Q)/samples-t$(1)-a$(2).npy --scores $$< --labels $(VQ_Q)/codes-t$(1)-a$(2).safetensors \
	  --keep $(VQ_KEEP) --labels-out $(VQ_Q)/kept-labels-t$(1)-a$(2).npy -o $$@

$(VQ_Q)/quality-t$(1)-a$(2).json: $(VQ_Q)/kept-t$(1)-a$(2).npy $(VQ_Q)/test-features.npy $(QUALITY_TOOLS)
	$(VQ_QUALITY) "--data $$<" $(VQ_Q)/test-features.npy $(VQ_Q)/kept-labels-t$(1)-a$(2).npy $(VQ_SEED) $(VQ_DEVICE) \
	  '"temperature": $(1), "acceptance": $(shell awk 'BEGIN { print $(2) / 100 }'), "drawn": $(call vq_draws,$(2))' > $$@
endef
$(foreach t,$(VQ_QUALITY_TEMPERATURES),$(foreach a,$(VQ_ACCEPTANCE),$(eval $(call vq_quality,$(t),$(a)))))

VQ_QUALITY_ROWS := $(VQ_Q)/floor.json $(VQ_Q)/ceiling.json \
  $(foreach t,$(VQ_QUALITY_TEMPERATURES),$(foreach a,$(VQ_ACCEPTANCE),$(VQ_Q)/quality-t$(t)-a$(a).json))

$(VQ_OUT)/quality.jsonl: $(VQ_QUALITY_ROWS)
	cat $^ > $@

$(VQ_OUT)/tradeoff.svg: $(VQ_OUT)/quality.jsonl $(BIN)/img-plot
	$(BIN)/img-plot $< -x class_accuracy -y fid --by temperature --label acceptance \
	  --title "FID against class accuracy, rejection sampling at acceptance 1, 0.25, 0.1" -o $@

$(VQ_OUT)/summary.json: $(VQ_OUT)/samples.png $(VQ_OUT)/sample-classes.json $(VQ_OUT)/quality.jsonl $(VQ_OUT)/tradeoff.svg
	{ last() { tail -n 1 $(VQ_OUT)/$$1; }; \
	  printf '{"data": "%s", "preset": "%s", "epochs": {"vqvae2": %s, "prior_top": %s, "prior_bottom": %s}, "temperature": %s, "seed": %s, "smoke": %s,\n' \
	    $(VQ_DATA) $(VQ_PRESET) $(VQ_EPOCHS) $(VQ_TOP_EPOCHS) $(VQ_BOTTOM_EPOCHS) $(VQ_TEMPERATURE) $(VQ_SEED) $(if $(filter 1,$(SMOKE)),true,false); \
	  printf ' "vqvae2_last_epoch": %s,\n' "$$(last vqvae2-train.jsonl)"; \
	  printf ' "prior_top_last_epoch": %s,\n "prior_bottom_last_epoch": %s,\n' "$$(last prior-top.jsonl)" "$$(last prior-bottom.jsonl)"; \
	  printf ' "sample_class_accuracy": %s,\n' "$$(sed -n 's/.*"error": *\([0-9.eE+-]*\).*/\1/p' $(VQ_OUT)/sample-classes.json | awk '{ print 1 - $$1 }')"; \
	  printf ' "sample_classifier": %s,\n' "$$(cat $(VQ_OUT)/sample-classes.json)"; \
	  printf ' "quality": [%s],\n' "$$(paste -sd, $(VQ_OUT)/quality.jsonl)"; \
	  printf ' "wall_seconds": {'; \
	  for f in $(VQ_OUT)/.time-*; do printf '%s"%s": %s' "$${sep:-}" "$${f##*/.time-}" "$$(cat $$f)"; sep=', '; done; \
	  printf '},\n "files": ["vqvae2.safetensors", "prior-top.safetensors", "prior-bottom.safetensors", "samples.png", "quality.jsonl", "tradeoff.svg"]}\n'; } > $@
