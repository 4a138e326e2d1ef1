# make pipeline-ddpm [OUT=runs/ddpm] [EPOCHS=15] [SEED=0] [DEVICE=cpu] [SMOKE=1]
#
# Bundled MNIST (padded to 32x32) -> train ddpm-unet-mnist -> 64 samples with DDIM (50
# steps) and 16 with the full 1000-step ancestral chain, as PNG grids; wall times, the final
# loss and the held-out noise-prediction error gathered in summary.json. SMOKE=1 runs the
# same graph with a tiny U-Net trained on the 1,000 test digits, in well under a minute.

# OUT applies to the pipeline named on the command line (see vae.mk).
DDPM_OUT := $(if $(filter pipeline-ddpm,$(MAKECMDGOALS)),$(or $(OUT),runs/ddpm),runs/ddpm)
DDPM_SEED := $(or $(SEED),0)
DDPM_DEVICE := $(or $(DEVICE),cpu)
ifeq ($(SMOKE),1)
DDPM_EPOCHS := 1
DDPM_NET := --base-channels 8 --channel-mult 1,2,2 --res-blocks 1
DDPM_DATA := --data mnist --split test --eval-data $(DDPM_OUT)/test.npy --batch-size 32
DDPM_CHAIN := 4
else
DDPM_EPOCHS := $(or $(EPOCHS),15)
DDPM_NET :=
DDPM_DATA := --data mnist --eval-data $(DDPM_OUT)/test.npy
DDPM_CHAIN := 16
endif
DDPM_COMMON := --seed $(DDPM_SEED) --device $(DDPM_DEVICE)
DDPM_STAMP := $(DDPM_OUT)/.settings-$(DDPM_EPOCHS)-$(DDPM_SEED)-$(DDPM_DEVICE)-$(SMOKE)

.PHONY: pipeline-ddpm
pipeline-ddpm: $(DDPM_OUT)/summary.json
	@cat $<

# A changed setting retrains: the stamp's name holds them.
$(eval $(call stamp_rule,$(DDPM_STAMP),$(DDPM_OUT)/.settings-*))

$(DDPM_OUT)/test.npy: $(DDPM_STAMP) $(BIN)/img-pack
	$(BIN)/img-pack mnist --split test -o $@

$(DDPM_OUT)/ddpm.safetensors: $(DDPM_STAMP) $(DDPM_OUT)/test.npy $(BIN)/ddpm-train
	rm -f $(DDPM_OUT)/ddpm-train.jsonl
	$(call timed,$(DDPM_OUT)/train.seconds,$(BIN)/ddpm-train --preset ddpm-unet-mnist $(DDPM_NET) $(DDPM_DATA) \
	  --epochs $(DDPM_EPOCHS) $(DDPM_COMMON) --metrics $(DDPM_OUT)/ddpm-train.jsonl -o $@)

$(DDPM_OUT)/samples-ddim.png: $(DDPM_OUT)/ddpm.safetensors $(BIN)/ddpm-denoise
	$(call timed,$(DDPM_OUT)/ddim.seconds,$(BIN)/ddpm-denoise --model $< -n 64 --sampler ddim --steps 50 \
	  --clip $(DDPM_COMMON) --png $@)

$(DDPM_OUT)/samples-ddpm.png: $(DDPM_OUT)/ddpm.safetensors $(BIN)/ddpm-denoise
	$(call timed,$(DDPM_OUT)/ddpm.seconds,$(BIN)/ddpm-denoise --model $< -n $(DDPM_CHAIN) --sampler ddpm \
	  --clip $(DDPM_COMMON) --png $@)

$(DDPM_OUT)/summary.json: $(DDPM_OUT)/samples-ddim.png $(DDPM_OUT)/samples-ddpm.png
	{ last=$$(tail -n 1 $(DDPM_OUT)/ddpm-train.jsonl); \
	  printf '{"epochs": %s, "seed": %s, "smoke": %s,\n' $(DDPM_EPOCHS) $(DDPM_SEED) $(if $(filter 1,$(SMOKE)),true,false); \
	  printf ' "final_loss": %s,\n' "$$(sed -E 's/.*"train_mse":([^,}]*).*/\1/' <<< "$$last")"; \
	  printf ' "eval_mse": %s, "eval_ema_mse": %s,\n' "$$(sed -E 's/.*"eval_mse":([^,}]*).*/\1/' <<< "$$last")" \
	    "$$(sed -E 's/.*"eval_ema_mse":([^,}]*).*/\1/' <<< "$$last")"; \
	  printf ' "seconds": {"train": %s, "ddim_50_steps_64_images": %s, "ddpm_1000_steps_%s_images": %s},\n' \
	    "$$(cat $(DDPM_OUT)/train.seconds)" "$$(cat $(DDPM_OUT)/ddim.seconds)" $(DDPM_CHAIN) "$$(cat $(DDPM_OUT)/ddpm.seconds)"; \
	  printf ' "last_epoch": %s,\n' "$$last"; \
	  printf ' "files": ["ddpm.safetensors", "samples-ddim.png", "samples-ddpm.png"]}\n'; } > $@
