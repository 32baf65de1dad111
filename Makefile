# Two commands on a fresh machine (Python 3.11 and the package registries):
#   make run    word count of the bundled sample, on the local backend
#   make test   lint, format check, types, layer contracts, then the test suite
# Each sets up .venv on first use (and again when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.installed-bench

# The test cluster's control plane (built below). Defined before the rules that
# name it: make expands a rule's prerequisites as it reads the rule.
CONTROLPLANE_MOD := tests/cluster/controlplane
CONTROLPLANE := tests/cluster/bin/controlplane
GO ?= go

.PHONY: run test lint check pytest bench clean cluster cluster-down system-deps gateway-screenshot

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mrk8s run examples/wordcount.py examples/data/sample.txt

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shuffle scheduler mrk8s
	$(BIN)/lint-imports

pytest: $(STAMP) $(CONTROLPLANE) system-deps
	$(BIN)/python -m pytest

test: lint pytest

# Debian packages the job gateway's tests run: chromium (the web page in a real
# headless browser, tests/gateway/test_web.py) and postgresql (the state tests
# against a real server, tests/gateway/postgres.py). apt-get runs only when one
# is missing, so a second make does nothing; it needs root (CI is root).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "missing Debian packages:$$missing; install them: sudo apt-get install -y$$missing" >&2; \
	    exit 1; \
	  fi; \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq >/dev/null && apt-get install -y -qq$$missing >/dev/null; \
	fi

# The web page's picture in README (docs/images/gateway-web.png), taken by its
# browser test in headless chromium.
gateway-screenshot: $(STAMP) system-deps
	MRK8S_UPDATE_SCREENSHOT=1 $(BIN)/python -m pytest tests/gateway/test_web.py -q

# The peers bench/ compares with (Ray Data, Dask) and matplotlib for the charts.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Shuffle and word-count comparisons (about 30 minutes); results in bench/results/.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.compare_shuffle
	$(BIN)/python -m bench.compare_wordcount

# The test cluster (tests/cluster/): etcd and the Kubernetes control plane in
# one binary built from the official source modules through the Go module
# proxy. A file target: rebuilt only when the module or main.go changes (cold:
# about 30 minutes on 2 shared cores, see README), so a second make does no work.

$(CONTROLPLANE): $(CONTROLPLANE_MOD)/go.mod $(CONTROLPLANE_MOD)/go.sum $(CONTROLPLANE_MOD)/main.go
	@mkdir -p $(@D)
	cd $(CONTROLPLANE_MOD) && export GOTOOLCHAIN=local CGO_ENABLED=0 && \
	v=$$($(GO) list -m -f '{{.Version}}' k8s.io/kubernetes) && mm=$${v#v} && \
	major=$${mm%%.*} && minor=$${mm#*.} && minor=$${minor%%.*} && \
	x="-X k8s.io/component-base/version.gitVersion=$$v \
	   -X k8s.io/component-base/version.gitMajor=$$major \
	   -X k8s.io/component-base/version.gitMinor=$$minor \
	   -X k8s.io/component-base/version.gitTreeState=clean \
	   -X k8s.io/client-go/pkg/version.gitVersion=$$v \
	   -X k8s.io/client-go/pkg/version.gitMajor=$$major \
	   -X k8s.io/client-go/pkg/version.gitMinor=$$minor \
	   -X k8s.io/client-go/pkg/version.gitTreeState=clean" && \
	$(GO) build -trimpath -ldflags "-s -w $$x" -o $(CURDIR)/$@.tmp .
	mv $@.tmp $@

# A 3-node cluster in the background; admin kubeconfig in .cluster/kubeconfig.
cluster: $(STAMP) $(CONTROLPLANE)
	$(BIN)/python -m tests.cluster up --state .cluster --nodes 3

cluster-down: $(STAMP)
	$(BIN)/python -m tests.cluster down --state .cluster

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
