# The one driver for people and CI:
#   make demo   install what is missing, build, run the main job on the local backend
#   make test   install what is missing, build, start Ceph + Glance, run every test
#   make bench  the benchmarks against their baselines (bench/README.md)
# Variables: BUILD (build dir), JOBS (parallel compile jobs).
BUILD ?= build
JOBS ?= $(shell nproc)
BUILD_TYPE ?= RelWithDebInfo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian 12 packages. The demo needs only the toolchain, the libraries and qemu-utils;
# tests and benchmarks add the real services they start and their tools.
DEMO_PKGS := cmake g++ make pkg-config \
        libsqlitecpp-dev libsqlite3-dev sqlite3 librbd-dev librados-dev libyaml-cpp-dev \
        libspdlog-dev libfmt-dev libcurl4-openssl-dev nlohmann-json3-dev \
        libcli11-dev libssl-dev libre2-dev qemu-utils
TEST_PKGS := $(DEMO_PKGS) clang libclang-rt-14-dev doctest-dev pybind11-dev python3-dev \
        ceph-mon ceph-osd ceph-common python3-rbd \
        glance-api python3-glance-store python3-boto3 keystone python3-cryptography \
        prometheus gnuplot-nox procps iproute2 curl jq xfsprogs util-linux
PKGS ?= $(TEST_PKGS)

# The demo's build: the library and the tool only. Tests and benchmarks configure the
# same folder with everything on.
DEMO_CONFIG := -DCACHEMGR_BUILD_TESTS=OFF -DCACHEMGR_BUILD_BENCH=OFF -DCACHEMGR_BUILD_EXAMPLES=OFF
FULL_CONFIG := -DCACHEMGR_BUILD_TESTS=ON -DCACHEMGR_BUILD_BENCH=ON -DCACHEMGR_BUILD_EXAMPLES=ON

.PHONY: all deps demo-deps build demo test bench clean
all: build

# install-missing LIST[,APT-FLAGS]: apt-get install whichever of LIST is not installed yet.
define install-missing
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
	$(call install-missing,$(PKGS))

# The demo skips recommended packages (documentation, extra tools): only what it runs.
demo-deps:
	$(call install-missing,$(DEMO_PKGS),--no-install-recommends)

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(FULL_CONFIG)
	cmake --build $(BUILD) -j $(JOBS)

demo: demo-deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(DEMO_CONFIG)
	cmake --build $(BUILD) -j $(JOBS) --target cachemgr_cli
	BUILD=$(BUILD) examples/demo.sh

test: build
	BUILD=$(BUILD) tests/run-all.sh

bench: build
	BUILD=$(BUILD) bench/run.sh

clean:
	rm -rf $(BUILD)
