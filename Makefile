# hybridcloud.migration: `make test` on a fresh clone installs what the tests need and runs them all.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
REPO := $(abspath .)
BUILD := $(REPO)/.build
SANITY_ROOT := $(BUILD)/sanity
SANITY_DIR := $(SANITY_ROOT)/ansible_collections/hybridcloud/migration
# The checkout, linked where Ansible looks for hybridcloud.migration (lint, pytest, playbooks).
COLLECTIONS := $(BUILD)/collections
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
# Downloads and built roots that survive `make clean` and fresh clones (Debian roots, ...).
export HCM_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/hybridcloud-migration
PYTEST_ARGS ?=

.PHONY: help test deps venv system-packages collections collection-link sanity-bootstrap lint sanity units integration molecule clean lab-build

help:
	@echo "make demo         on a fresh clone: a worker dies in the lab, migrate.yml brings its workloads back on the cloud cluster"
	@echo "make test         install everything needed, then lint, sanity, unit and integration tests, molecule, the demo"
	@echo "make deps         only install: virtualenv, Python deps, collections, Debian packages"
	@echo "make lint | sanity | units | integration | molecule   one layer of the test pyramid"
	@echo "make lab-build    build the lab's Kubernetes, etcd and kwok from Go modules (cached by version)"
	@echo "make lab-build-velero   build Velero and its AWS plugin from Go modules (cached by version)"
	@echo "make lab-build-packer   build Packer and its amazon, openstack and ansible plugins from Go modules (cached by version)"
	@echo "make lab-build-containerd  build containerd, its runc shim and ctr from Go modules for the lab's worker VMs (cached by version)"
	@echo "make clean        remove .venv and .build (caches in $(HCM_CACHE_DIR) stay)"

# The demo last: the user's own entry point, run as a user runs it (it is also the end-to-end test
# from a real node to a real node).
# The Debian roots the tests use are built in the background meanwhile the Go builds, lint, sanity
# and unit tests run (debootstrap waits on the network and the disk, the builds on the CPU).
test: deps
	@start=$$(date +%s); mkdir -p $(BUILD); \
	PYTHONPATH=$(REPO):$(COLLECTIONS) $(BIN)/python tests/tools/prebuild_roots.py > $(BUILD)/debian-roots.log 2>&1 & roots=$$!; \
	trap 'kill $$roots 2>/dev/null || true' EXIT; \
	$(MAKE) --no-print-directory lab-build lab-build-velero lab-build-packer lab-build-containerd lint sanity units; \
	echo "[make test $$(date +%H:%M:%S)] waiting for the Debian roots (tests/tools/prebuild_roots.py, log $(BUILD)/debian-roots.log)"; \
	wait $$roots || echo "make test: a Debian root could not be built ahead (its tests build it again and say why): $(BUILD)/debian-roots.log"; \
	cat $(BUILD)/debian-roots.log; \
	$(MAKE) --no-print-directory integration molecule demo; \
	echo "make test: all layers passed in $$(( $$(date +%s) - start ))s (after install)"

deps: venv system-packages collections collection-link sanity-bootstrap

# The virtualenv is rebuilt only when a requirements file changes.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

system-packages: venv
	BINDEP=$(BIN)/bindep tests/tools/install_system_packages.sh test

# requirements.yml is satisfied by the copies in the PyPI `ansible` package when they fit its
# ranges (ansible-galaxy sees them and installs nothing); Galaxy is asked only when they do not.
collections: venv
	$(BIN)/ansible-galaxy collection install -r requirements.yml

collection-link:
	mkdir -p $(COLLECTIONS)/ansible_collections/hybridcloud
	ln -sfn $(REPO) $(COLLECTIONS)/ansible_collections/hybridcloud/migration

# ansible-test bootstraps its sanity virtualenvs with a get-pip.py it downloads from a host
# this network cannot reach; it uses a cached copy when there is one. See the stand-in's docstring.
sanity-bootstrap:
	install -D -m 0644 tests/tools/get_pip_standin.py $(HOME)/.ansible/test/cache/get_pip_24_2.py

lint: venv collection-link
	$(BIN)/ansible-lint --offline
	$(BIN)/antsibull-changelog lint

sanity: venv sanity-bootstrap
	$(BIN)/python tests/tools/stage_collection.py $(REPO) $(SANITY_ROOT) >/dev/null
	cd $(SANITY_DIR) && $(BIN)/ansible-test sanity --local --python 3.11 --requirements --color no

units: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# The lab's Kubernetes control planes are real binaries built from Go modules (cached by version).
integration: venv system-packages lab-build lab-build-velero lab-build-packer lab-build-containerd
	PATH=$(BIN):$$PATH $(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# The main command: the demo site of demo/ (the lab, S3, moto as the cloud's EC2 API and Velero on
# loopback; real worker nodes in lab VMs); a backed-up worker of onprem dies; playbooks/migrate.yml
# brings its workloads back on cloud and reports. DEMO_ARGS="--keep" keeps it up, to look around.
# Only the collection's path is given: the demo imports nothing of tests/.
.PHONY: demo demo-checks
demo: demo-checks
	@echo "[make demo $$(date +%H:%M:%S)] installing: the virtualenv, the collections, Debian packages, the lab's builds (cached)"
	@$(MAKE) --no-print-directory deps lab-build lab-build-velero lab-build-containerd
	@echo "[make demo $$(date +%H:%M:%S)] installed"
	PATH=$(BIN):$$PATH PYTHONPATH=$(COLLECTIONS) $(BIN)/python -m demo $(DEMO_ARGS)

# Before anything is installed: what only the user can fix.
demo-checks:
	@if [ "$$(id -u)" -ne 0 ]; then \
	    echo "make demo: needs root (the lab's VMs are network, mount and pid namespaces; make deps installs Debian packages). Fix: run it as root." >&2; \
	    exit 1; fi
	@go=$${GO:-$$(command -v go || echo /usr/local/go/bin/go)}; if ! "$$go" version >/dev/null 2>&1; then \
	    echo "make demo: no Go toolchain (looked for $${GO:-'go' on PATH and /usr/local/go/bin/go}); the lab's Kubernetes, etcd, kwok," \
	        "Velero and containerd are built from Go modules on first use. Fix: install Go >= 1.26 or set GO=/path/to/go." >&2; \
	    exit 1; fi

# One scenario per role under molecule/; instances are Debian roots made by tests/helpers, or a private lab (velero).
molecule: venv system-packages collection-link lab-build
	PATH=$(BIN):$$PATH $(BIN)/molecule test --all

clean:
	rm -rf $(VENV) $(BUILD) tests/output .ansible

# The lab's Kubernetes (one multi-call binary), etcd and kwok, built from Go modules (lab/go/)
# into $(HCM_CACHE_DIR)/lab/<key>/bin once per version; .build/lab/bin points there. Needs Go
# (>= the go lines in lab/go/*/go.mod), not the virtualenv. FORCE=1 rebuilds.
lab-build:
	bash lab/build.sh $(if $(FORCE),--force)

# Velero (server and CLI) and its AWS object-store plugin, built from Go modules (lab/go/velero)
# into $(HCM_CACHE_DIR)/lab/<key>/{bin,plugins} once per version; .build/lab/velero points there.
# Only the Velero tests use them. FORCE=1 rebuilds.
.PHONY: lab-build-velero
lab-build-velero:
	bash lab/build-velero.sh $(if $(FORCE),--force)

# Packer and its amazon, openstack and ansible plugins, built from Go modules (lab/go/packer) into
# $(HCM_CACHE_DIR)/lab/<key>/{bin,plugins} once per version; .build/lab/packer points there.
# The worker_image tests use them. FORCE=1 rebuilds.
.PHONY: lab-build-packer
lab-build-packer:
	bash lab/build-packer.sh $(if $(FORCE),--force)

# containerd (daemon with its CRI plugin, runc shim, ctr), built from Go modules (lab/go/containerd)
# into $(HCM_CACHE_DIR)/lab/<key>/bin once per version; .build/lab/containerd points there. The
# lab's worker VMs run it (CRI-O can't be had here); the worker_node role installs it from there.
.PHONY: lab-build-containerd
lab-build-containerd:
	bash lab/build-containerd.sh $(if $(FORCE),--force)
