# Two commands on a fresh machine: `make demo` and `make test` (README.md).
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

PREFIX ?= /usr/local

.PHONY: all deps build demo test test-sanitize model bench install clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

model:
	@scripts/get-model.sh

demo: build model
	@scripts/demo.sh $(BUILD)

test: build model
	cd $(BUILD) && ctest --output-on-failure -j 2

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer.
test-sanitize: deps model
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLA_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 LONGATTN_TEST_QUICK=1 ctest --output-on-failure -j 2

# Headers, liblongattn and liblongattn_model (static and shared), pkg-config
# files and the CMake package, under PREFIX.
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	$(BUILD)/longattn bench attention

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
