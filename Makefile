# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export GLOG_v := 3

.PHONY: test test-fast demo venv bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

# The whole suite, full-size cases included (CI runs this): a few pytest processes in a row, so no process
# carries the memory of every earlier file (tests/run_suite.py; one process peaked at 21 GB).
test: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VPY) tests/run_suite.py -q

# Quick iteration target: skips the full-size cases. Never a substitute for `make test`.
test-fast: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VPY) tests/run_suite.py -q -m "not full_size"

demo: $(STAMP)
	$(VPY) scripts/demo.py

bench: $(STAMP)
	$(VPY) benchmarks/bench_dit.py --models stdit3,stdit2,stdit --configs small,mid
	$(VPY) benchmarks/bench_convert.py
	$(VPY) benchmarks/bench_convert.py --model STDiT2-XL/2
	$(VPY) benchmarks/bench_convert.py --model STDiT-XL/2
	$(VPY) benchmarks/bench_text_encoder.py --part encoders
	$(VPY) benchmarks/bench_vae.py --frames 17 --size 32
	$(VPY) benchmarks/bench_vae.py --frames 17 --size 64
	$(VPY) benchmarks/bench_sampling.py
	$(VPY) benchmarks/bench_train.py
	$(VPY) benchmarks/bench_dit.py --models mmdit --configs small,mid --warmup 1 --repeat 3
	$(VPY) benchmarks/bench_sampling.py --part steps --samplers flow_matching --steps 3 --mid-steps 2
	$(VPY) benchmarks/bench_vae.py --vae hunyuan --model HunyuanVAE-S --frames 17 --size 64
	$(VPY) benchmarks/bench_vae.py --vae dc_ae --model DC-AE-S --frames 16 --size 64
	$(VPY) benchmarks/bench_convert.py --model OpenSora-v2-MMDiT --dtype bf16 --no-cast
	$(VPY) benchmarks/cost_model.py
	$(VPY) benchmarks/cost_model.py --device cpu

clean:
	rm -rf outputs rank_* kernel_meta .pytest_cache .hypothesis
