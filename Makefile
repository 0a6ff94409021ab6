# Image Tokenization Labs: `make lab` to learn, `make test` to check everything.
# Every target creates the virtual environment in .venv when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
SUBMISSIONS ?= submissions
LAB_ARGS ?=
# `make test` runs the tests and notebooks in this many processes of one torch thread each (pytest-xdist);
# each notebook stays whole on one of them (tests/conftest.py)
TEST_WORKERS ?= 2
# tests and tools never write into the user's Jupyter, IPython or matplotlib settings
SANDBOX = $(CURDIR)/build/.config
CONFIG_ENV = JUPYTER_CONFIG_DIR=$(SANDBOX)/jupyter JUPYTER_DATA_DIR=$(SANDBOX)/jupyter-data \
	JUPYTER_RUNTIME_DIR=$(SANDBOX)/jupyter-runtime JUPYTER_PLATFORM_DIRS=1 \
	IPYTHONDIR=$(SANDBOX)/ipython MPLCONFIGDIR=$(SANDBOX)/matplotlib

# the browser test drives Debian's chromium (never a browser Playwright downloads)
CHROMIUM ?= $(or $(COURSE_CHROMIUM),/usr/bin/chromium)
# the students' lab: etc/jupyter turns nbgrader's instructor menus and server extensions off
LAB_ENV = JUPYTER_CONFIG_PATH=$(CURDIR)/etc/jupyter

.PHONY: setup bwrap browser lab test course student checkpoints grade clean

setup: $(STAMP)

# uv installs the pinned packages (about 6 GB, torch's CUDA build) several times faster than pip; compiled to
# bytecode at install time, so that no kernel or test process compiles torch's sources when it starts
UV_VERSION ?= 0.13.10

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(PY) -m uv pip install --quiet --compile-bytecode --python $(PY) -e '.[dev]'
	@touch $(STAMP)

# the grader's sandbox is bubblewrap (Debian's bubblewrap package): installed here when missing and root
bwrap:
	@command -v bwrap >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap; \
		else \
			echo "bubblewrap (bwrap) is missing: install it with 'sudo apt-get install bubblewrap' (Debian/Ubuntu), then run make again"; \
			exit 1; \
		fi; }

browser: $(CHROMIUM)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser test (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "the browser test needs chromium at $(CHROMIUM): run 'sudo apt-get install chromium' (Debian/Ubuntu) or make test COURSE_CHROMIUM=/path/to/chromium" >&2; \
		exit 1; \
	fi

lab: $(STAMP)
	$(LAB_ENV) $(VENV)/bin/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir=$(CURDIR) \
		--LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb $(LAB_ARGS)

# nbval runs the student notebooks; the instructor's solutions run to the end inside the grader's sandbox
# (tests/test_grade_lessons.py: full marks, notebook "ran"), so no notebook is executed twice for one purpose
test: $(STAMP) bwrap browser
	@rm -rf $(SANDBOX) && mkdir -p $(SANDBOX)
	$(CONFIG_ENV) COURSE_QUICK=1 COURSE_CHROMIUM=$(CHROMIUM) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
		$(PY) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder tests \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=300 notebooks

course: $(STAMP)
	@mkdir -p $(SANDBOX)
	$(CONFIG_ENV) $(PY) -m course_lib.tools.build_course --out build/course

student: $(STAMP)
	$(PY) -m course_lib.tools.nbtools student

checkpoints: $(STAMP)
	$(PY) -m course_lib.tools.make_checkpoints --jobs 2

grade: $(STAMP) bwrap
	@mkdir -p $(SANDBOX)
	$(CONFIG_ENV) $(PY) -m course_lib.grading $(SUBMISSIONS) --out grades.csv $(if $(LESSON),--lesson $(LESSON))

clean:
	rm -rf build
