# bench/: `make bench` (issue 9). Load generators and references in C, run
# by bench/bench.py, which prints the results table and writes it to
# bench/results/latest.md (raw outputs under bench/results/run/, not
# committed). Never part of `make test`; a missed target does not fail it.

BENCH_BINS := $(B)/bench/rdpload $(B)/bench/tlsref $(B)/bench/placebench \
	$(B)/bench/hbload $(B)/bench/splicebench
BENCH_PY   ?= /usr/bin/python3
ALL_OBJ    += $(BENCH_BINS:%=%.o)

$(B)/bench/placebench.o: TS_CPPFLAGS += $(call PKG_CFLAGS,sqlite3)
$(B)/bench/hbload.o: TS_CPPFLAGS += $(call PKG_CFLAGS,libcurl)

$(B)/bench/rdpload: $(B)/bench/rdpload.o
	$(LINK) -o $@ $^ $(call PKG_LIBS,openssl) $(LDLIBS_BASE)
$(B)/bench/tlsref: $(B)/bench/tlsref.o $(B)/broker/common/net.o $(B)/broker/common/util.o
	$(LINK) -o $@ $^ $(call PKG_LIBS,openssl) $(LDLIBS_BASE)
$(B)/bench/placebench: $(B)/bench/placebench.o $(STORE_OBJ) $(COMMON_OBJ)
	$(LINK) -o $@ $^ $(call PKG_LIBS,sqlite3 libpq) $(COMMON_LIBS) $(LDLIBS_BASE)
$(B)/bench/hbload: $(B)/bench/hbload.o
	$(LINK) -o $@ $^ $(call PKG_LIBS,libcurl) $(LDLIBS_BASE)
$(B)/bench/splicebench: $(B)/bench/splicebench.o $(B)/broker/common/net.o $(B)/broker/common/util.o
	$(LINK) -o $@ $^ $(LDLIBS_BASE)

.PHONY: bench-bins bench-deps
bench-bins: $(BENCH_BINS)
# the benchmark's own packages (HAProxy for the splice reference, valgrind
# for the profile); tools/deps.sh installs the build's
bench-deps:
	@sh bench/deps.sh
bench: bench-deps all bench-bins
	@$(BENCH_PY) bench/bench.py --build $(B) $(BENCH_ARGS) || \
	  echo "bench: the run did not complete (see above); benchmarks never fail the build"
