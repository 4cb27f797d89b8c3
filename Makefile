# The one driver for people and CI:
#   make demo   install what is missing, build the tool, run the main job on the local backend
#   make test   install what is missing, build, start Ceph + Glance + Keystone, run every test
#   make bench  the benchmarks against their baselines (bench/README.md)
#   make deb    the Debian packages cachemgr and libcachemgr-dev, checked by lintian
# Variables: BUILD (build dir), JOBS (parallel compile jobs), DEMO_BUILD, DEB_OUT.
BUILD ?= build
JOBS ?= $(shell nproc)
BUILD_TYPE ?= RelWithDebInfo
DEB_OUT ?= $(BUILD)/deb
# The demo's own build: the library and the tool only, unoptimised and without debug
# information, which compiles in half the time (the demo's work is done by qemu-img).
DEMO_BUILD ?= build-demo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian 12 packages. The demo needs only the toolchain, the libraries and qemu-utils;
# tests and benchmarks add the real services they start and their tools (qemu-block-extra:
# qemu-img's rbd driver, a baseline of the bench).
DEMO_PKGS := cmake g++ make pkg-config \
        libsqlitecpp-dev libsqlite3-dev sqlite3 librbd-dev librados-dev libyaml-cpp-dev \
        libspdlog-dev libfmt-dev libcurl4-openssl-dev nlohmann-json3-dev \
        libcli11-dev libssl-dev libre2-dev libmicrohttpd-dev zlib1g-dev qemu-utils
TEST_PKGS := $(DEMO_PKGS) clang libclang-rt-14-dev doctest-dev pybind11-dev python3-dev \
        ceph-mon ceph-osd ceph-common python3-rbd \
        glance-api python3-glance-store python3-boto3 keystone python3-cryptography \
        prometheus gnuplot-nox procps iproute2 curl jq xfsprogs util-linux gdb \
        qemu-block-extra strace
# What `make deb` needs (debian/control's Build-Depends and the packaging tools); `make
# test` installs them too, for the package test.
DEB_PKGS := cmake g++ pkg-config libsqlitecpp-dev libsqlite3-dev librbd-dev librados-dev \
        libyaml-cpp-dev libspdlog-dev libfmt-dev libcurl4-openssl-dev nlohmann-json3-dev \
        libcli11-dev libssl-dev libre2-dev libmicrohttpd-dev zlib1g-dev qemu-utils \
        debhelper dpkg-dev lintian help2man git xz-utils
PKGS ?= $(TEST_PKGS) $(DEB_PKGS)

FULL_CONFIG := -DCACHEMGR_BUILD_TESTS=ON -DCACHEMGR_BUILD_BENCH=ON -DCACHEMGR_BUILD_EXAMPLES=ON
DEMO_CONFIG := -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS=-O0 -DCACHEMGR_BUILD_TESTS=OFF \
               -DCACHEMGR_BUILD_BENCH=OFF -DCACHEMGR_BUILD_EXAMPLES=OFF

.PHONY: all deps demo-deps deb-deps build demo test bench deb clean
all: build

# $(call install_missing,PACKAGES[,APT-FLAGS]): apt-get install those not installed yet.
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) $$missing; \
	else echo "deps: all Debian packages present"; fi
endef

deps:
	$(call install_missing,$(PKGS))

# The demo skips recommended packages (documentation, extra tools): only what it runs.
demo-deps:
	$(call install_missing,$(DEMO_PKGS),--no-install-recommends)

deb-deps:
	$(call install_missing,$(DEB_PKGS))

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(FULL_CONFIG)
	cmake --build $(BUILD) -j $(JOBS)

demo: demo-deps
	cmake -S . -B $(DEMO_BUILD) $(DEMO_CONFIG)
	cmake --build $(DEMO_BUILD) -j $(JOBS) --target cachemgr_cli
	BUILD=$(DEMO_BUILD) examples/demo.sh

test: build
	BUILD=$(BUILD) tests/run-all.sh

bench: build
	BUILD=$(BUILD) bench/run.sh

deb: deb-deps
	rm -rf $(DEB_OUT)
	JOBS=$(JOBS) tools/build-debs.sh $(DEB_OUT)
	lintian --fail-on error --display-info $(DEB_OUT)/*.changes

clean:
	rm -rf $(BUILD) $(DEMO_BUILD)
