# The one driver for people and CI:
#   make demo   install what is missing, build, run the main job on the local backend
#   make test   install what is missing, build, start Ceph + Glance, run every test
#   make bench  the benchmarks against their baselines (bench/README.md)
#   make deb    the Debian packages cachemgr and libcachemgr-dev in $(DEB_OUT), checked
#               by lintian (tools/build-debs.sh; the source tree is copied, not written)
# Variables: BUILD (build dir), JOBS (parallel compile jobs), DEB_OUT (default $(BUILD)/deb).
BUILD ?= build
JOBS ?= $(shell nproc)
BUILD_TYPE ?= RelWithDebInfo
DEB_OUT ?= $(BUILD)/deb
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian 12 packages: toolchain, libraries, and the real services the tests start.
PKGS := cmake g++ make pkg-config clang libclang-rt-14-dev \
        libsqlitecpp-dev libsqlite3-dev sqlite3 librbd-dev librados-dev libyaml-cpp-dev \
        libspdlog-dev libfmt-dev doctest-dev libcurl4-openssl-dev nlohmann-json3-dev \
        libcli11-dev libssl-dev libre2-dev qemu-utils \
        ceph-mon ceph-osd ceph-common python3-rbd \
        glance-api python3-glance-store python3-boto3 keystone \
        gnuplot-nox procps iproute2 curl jq xfsprogs util-linux
# What `make deb` needs (debian/control's Build-Depends and the packaging tools); `make
# test` installs them too, for the package test.
DEB_PKGS := cmake g++ pkg-config libsqlitecpp-dev libsqlite3-dev librbd-dev librados-dev \
        libyaml-cpp-dev libspdlog-dev libfmt-dev libcurl4-openssl-dev nlohmann-json3-dev \
        libcli11-dev libssl-dev libre2-dev qemu-utils \
        debhelper dpkg-dev lintian help2man git xz-utils

.PHONY: all deps build demo test test-unit bench deb deb-deps clean
all: build

# $(call install_missing,PACKAGES): apt-get install those not installed yet.
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "deps: all Debian packages present"; fi
endef

deps:
	$(call install_missing,$(PKGS) $(DEB_PKGS))

deb-deps:
	$(call install_missing,$(DEB_PKGS))

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	BUILD=$(BUILD) examples/demo.sh

test: build
	BUILD=$(BUILD) tests/run-all.sh

bench: build
	BUILD=$(BUILD) bench/run.sh

deb: deb-deps
	rm -rf $(DEB_OUT)
	JOBS=$(JOBS) tools/build-debs.sh $(DEB_OUT)
	lintian --fail-on error --display-info $(DEB_OUT)/*.changes

clean:
	rm -rf $(BUILD)
