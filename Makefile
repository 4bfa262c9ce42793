# The two set-up commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-full ablation-bccd test test-slow install clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# the main job, small: is the slim neck a real gain over yolov8n, or noise? Two seeds each on a 64-image synthetic set
# at 128 px (under 3 minutes on 2 idle cores: 100 s measured, about 130 s of CPU time; a second `make demo` reuses the finished runs).
# `make demo-full` runs the same comparison on the built-in 200-image set at 256 px (about 13 minutes).
DEMO_DATA := runs/demo-data/data.yaml
DEMO_RECIPE := seeds=2 batch=16 nbs=16 optimizer=AdamW warmup_bias_lr=0.1 warmup_epochs=1

$(DEMO_DATA): | $(STAMP)
	$(PY) -c "from yololab.data import make_synthetic; make_synthetic('$(dir $(DEMO_DATA))', n_train=64, n_val=32, \
		imgsz=128, objects=(2, 5), small_share=0.3)"

demo: $(STAMP) $(DEMO_DATA)
	$(VENV)/bin/yololab compare models=yolov8n.yaml,yolov8n-slimneck.yaml data=$(DEMO_DATA) epochs=8 imgsz=128 \
		lr0=0.004 close_mosaic=3 workers=0 $(DEMO_RECIPE) name=demo
	@echo "This was the small demo. The full-size version (200 images at 256 px, about 13 minutes on 2 cores): make demo-full"

demo-full: $(STAMP)
	$(VENV)/bin/yololab compare models=yolov8n.yaml,yolov8n-slimneck.yaml data=synthetic epochs=5 imgsz=256 \
		lr0=0.002 close_mosaic=2 $(DEMO_RECIPE) name=demo-full

# the BCCD ablation: yolov8n vs yolov8n + each research module, 3 seeds, 30 epochs at 320, under the default recipe
# pinned (what optimizer=auto picks there). Hours of CPU; run it again to resume. Finished runs are recorded in
# benchmarks/ablation-bccd/ (result.json, results.csv: committed, so a fresh checkout resumes where the last one stopped).
ablation-bccd: $(STAMP)
	$(VENV)/bin/yololab compare models=yolov8n.yaml,yolov8n-slimneck.yaml,yolov8n-spconv.yaml,yolov8n-repvit.yaml,yolov8n-revcol.yaml,yolov8n-elan.yaml \
		data=../shared/datasets/bccd/data.yaml seeds=3 epochs=30 imgsz=320 batch=16 optimizer=AdamW lr0=0.001429 \
		momentum=0.9 warmup_bias_lr=0 workers=2 project=benchmarks name=ablation-bccd

# the layering contracts (pyproject's [tool.importlinter]) and ruff's rules, then the test suite
test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -n 2 -q -m "not slow"

# the heavy tests (real trainings and comparisons, every config exported): run before resolving what they cover
test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -q -m slow

clean:
	rm -rf $(VENV) runs build *.egg-info
