# make pipeline-vae [OUT=runs/vae] [EPOCHS=10] [K=5000] [SEED=0] [DEVICE=cpu] [SMOKE=1]
#
# Bundled MNIST -> train vae-mlp -> evaluate (ELBO, importance-weighted log p(x)) -> 64 samples
# from the prior as a PNG grid; a 2-D vae-mlp for the latent-manifold figure; vib-mlp trained
# and evaluated; everything gathered in summary.json. Each file is a target, so changing one
# stage rebuilds only what depends on it. SMOKE=1 runs the same graph on a tiny budget.

# OUT applies to the pipeline named on the command line; the others keep their defaults, so
# that two pipelines never share a folder (and the targets in it).
VAE_OUT := $(if $(filter pipeline-vae,$(MAKECMDGOALS)),$(or $(OUT),runs/vae),runs/vae)
VAE_SEED := $(or $(SEED),0)
VAE_DEVICE := $(or $(DEVICE),cpu)
ifeq ($(SMOKE),1)
VAE_EPOCHS := 1
VAE_K := 10
else
VAE_EPOCHS := $(or $(EPOCHS),10)
VAE_K := $(or $(K),5000)
endif
VAE_COMMON := --seed $(VAE_SEED) --device $(VAE_DEVICE)
VAE_STAMP := $(VAE_OUT)/.settings-$(VAE_EPOCHS)-$(VAE_K)-$(VAE_SEED)-$(VAE_DEVICE)

.PHONY: pipeline-vae
pipeline-vae: $(VAE_OUT)/summary.json
	@cat $<

# A changed setting (epochs, k, seed, device) retrains: the stamp's name holds them.
$(eval $(call stamp_rule,$(VAE_STAMP),$(VAE_OUT)/.settings-*))

$(VAE_OUT)/vae.safetensors: $(VAE_STAMP) $(BIN)/vae-train
	$(BIN)/vae-train --preset vae-mlp --data mnist --epochs $(VAE_EPOCHS) $(VAE_COMMON) \
	  --metrics $(VAE_OUT)/vae-train.jsonl -o $@

$(VAE_OUT)/vae-eval.json: $(VAE_OUT)/vae.safetensors $(BIN)/vae-eval
	$(BIN)/vae-eval --model $< --data mnist --split test -k $(VAE_K) $(VAE_COMMON) -o $@

$(VAE_OUT)/samples.png: $(VAE_OUT)/vae.safetensors $(BIN)/vae-decode $(BIN)/img-grid
	$(BIN)/vae-decode --model $< --prior 64 $(VAE_COMMON) | $(BIN)/img-grid --cols 8 --scale 2 -o $@

$(VAE_OUT)/vae2d.safetensors: $(VAE_STAMP) $(BIN)/vae-train
	$(BIN)/vae-train --preset vae-mlp --latent 2 --data mnist --epochs $(VAE_EPOCHS) $(VAE_COMMON) \
	  --metrics $(VAE_OUT)/vae2d-train.jsonl -o $@

$(VAE_OUT)/manifold.png: $(VAE_OUT)/vae2d.safetensors $(BIN)/vae-decode $(BIN)/img-grid
	$(BIN)/vae-decode --model $< --manifold 20 $(VAE_COMMON) | $(BIN)/img-grid --cols 20 --pad 0 -o $@

$(VAE_OUT)/vib.safetensors: $(VAE_STAMP) $(BIN)/vae-train
	$(BIN)/vae-train --preset vib-mlp --data mnist --epochs $(VAE_EPOCHS) $(VAE_COMMON) \
	  --metrics $(VAE_OUT)/vib-train.jsonl -o $@

$(VAE_OUT)/vib-eval.json: $(VAE_OUT)/vib.safetensors $(BIN)/vae-eval
	$(BIN)/vae-eval --model $< --data mnist --split test $(VAE_COMMON) -o $@

$(VAE_OUT)/summary.json: $(VAE_OUT)/vae-eval.json $(VAE_OUT)/vib-eval.json $(VAE_OUT)/samples.png $(VAE_OUT)/manifold.png
	{ printf '{"epochs": %s, "seed": %s,\n' $(VAE_EPOCHS) $(VAE_SEED); \
	  printf ' "vae": %s,\n "vae_last_epoch": %s,\n' "$$(cat $(VAE_OUT)/vae-eval.json)" "$$(tail -n 1 $(VAE_OUT)/vae-train.jsonl)"; \
	  printf ' "vib": %s,\n "vib_last_epoch": %s,\n' "$$(cat $(VAE_OUT)/vib-eval.json)" "$$(tail -n 1 $(VAE_OUT)/vib-train.jsonl)"; \
	  printf ' "files": ["vae.safetensors", "vae2d.safetensors", "vib.safetensors", "samples.png", "manifold.png"]}\n'; } > $@
