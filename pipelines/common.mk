# What every pipeline's rules share; the Makefile includes this before the pipelines.

# $(call timed,FILE,COMMAND): runs COMMAND and writes its wall time in seconds to FILE.
timed = start=$$(date +%s.%N); $(2); awk -v s=$$start -v e=$$(date +%s.%N) 'BEGIN { printf "%.1f\n", e - s }' > $(1)

# $(eval $(call stamp_rule,STAMP,OTHERS)): a rule for STAMP, an empty file whose name holds a
# pipeline's settings. Targets that depend on it are rebuilt when a setting changes, as the
# name then changes; making it removes the stamps of the old settings (the glob OTHERS).
define stamp_rule
$(1):
	@mkdir -p $$(@D)
	@rm -f $(2)
	@touch $$@
endef

# What pipelines/quality.sh (one row of a quality table) runs, for the rows' prerequisites.
QUALITY_TOOLS := $(BIN)/img-classify $(BIN)/img-fid $(BIN)/vae-eval pipelines/quality.sh
