# tsbroker: one non-recursive GNU Makefile. Objects under build/.
# Each part adds its programs, objects and tests in its own fragment (*.mk).

CC      ?= cc
PKGS    := freerdp-server2 freerdp-client2 freerdp2 winpr2 libmicrohttpd sqlite3 openssl jansson inih libcurl
# The user's CFLAGS, CPPFLAGS and LDFLAGS (make CFLAGS=-O0, dpkg-buildflags'
# hardening flags) are honoured as given; the project's own flags live in
# TS_* and are always added. A fragment adds an object's flags with
# `$(B)/x.o: TS_CPPFLAGS += ...` (never CFLAGS: a command line replaces it).
CFLAGS   ?= -O2 -g
CPPFLAGS ?=
LDFLAGS  ?=
TS_CPPFLAGS := -D_GNU_SOURCE -I.
TS_CFLAGS   := -std=gnu11 -Wall -Wextra -Wshadow -Wno-unused-parameter -MMD -MP
ifeq ($(CI),true)
TS_CFLAGS   += -Werror
endif
WERROR  ?=
# SANITIZE: extra compile and link flags (make asan sets them for build-asan/)
SANITIZE ?=
TS_CFLAGS   += $(WERROR) $(SANITIZE)
COMPILE = $(CC) $(TS_CPPFLAGS) $(CPPFLAGS) $(TS_CFLAGS) $(CFLAGS)
# a link rule: $(LINK) -o $@ $^ LIBS $(LDLIBS_BASE)
LINK    = $(CC) $(TS_CFLAGS) $(CFLAGS) $(LDFLAGS)
PKG_CFLAGS = $(shell pkg-config --cflags $(1))
PKG_LIBS   = $(shell pkg-config --libs $(1))
LDLIBS_BASE := -lpthread -lm

B := build
PREFIX  ?= /usr/local
DESTDIR ?=
# make install: where the binaries and the units go, and the broker unit's
# user (empty keeps its DynamicUser=yes; the Debian package sets tsbroker)
BINDIR  ?= $(PREFIX)/bin
UNITDIR ?= /etc/systemd/system
UNIT_USER ?=

# The version's one place is debian/changelog's top entry (dch -v X, or an
# edit, before a release); the binaries' -V, the agent's heartbeat and its
# User-Agent are derived from it at build time.
TS_VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
VERSION_OBJ = $(B)/broker/core/main.o $(B)/agent/main.o $(B)/agent/report.o

PROGS :=
UNIT_TESTS :=
FUZZERS :=
# every object a fragment builds, for the dependency files (-MMD) below
ALL_OBJ :=

# A fragment registers a unit test with
#   $(eval $(call unit_test,test_NAME,OBJECTS,LIBS))
# tests/unit/test_NAME.c is linked with OBJECTS, LIBS and cmocka by the one
# rule under "tests" below.
define unit_test
UNIT_TESTS += $(1)
$(1)_OBJS := $(2)
$(1)_LIBS := $(3)
endef

.SECONDEXPANSION:
.SECONDARY:
.PHONY: all test unit unit-bins e2e web-test bench fuzz asan asan-test tsan tsan-test leakcheck install clean run \
	deps test-deps demo ha-demo check-tls check-links soak build
all:
# `make build`: the same as `make all` (a directory of that name exists)
build: all

# Shared by both daemons (logging, config, JSON wire format, helpers).
COMMON_SRC := broker/common/log.c broker/common/cfg.c broker/common/wire.c broker/common/util.c
COMMON_SRC += broker/common/loglimit.c broker/common/net.c broker/common/tlshello.c
COMMON_OBJ := $(COMMON_SRC:%.c=$(B)/%.o)
ALL_OBJ += $(COMMON_OBJ)
$(B)/broker/common/cfg.o: TS_CPPFLAGS += $(call PKG_CFLAGS,inih)
$(B)/broker/common/wire.o: TS_CPPFLAGS += $(call PKG_CFLAGS,jansson)
COMMON_LIBS := $(call PKG_LIBS,inih jansson)

include broker/broker.mk
-include agent/agent.mk
-include tools/tools.mk
-include man/man.mk
-include bench/bench.mk
-include tests/web/web.mk
-include tests/fuzz/fuzz.mk

all: $(PROGS)
$(VERSION_OBJ): TS_CPPFLAGS += -DTS_VERSION='"$(TS_VERSION)"'
$(VERSION_OBJ): debian/changelog

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(COMPILE) -c -o $@ $<

# ---- tests ---------------------------------------------------------------
# Unit tests (registered by unit_test above): tests/unit/test_NAME.c linked
# with $(test_NAME_OBJS) and $(test_NAME_LIBS).
UNIT_BINS := $(UNIT_TESTS:%=$(B)/tests/%)
$(B)/tests/%: $(B)/tests/unit/%.o
	@mkdir -p $(dir $@)
	$(LINK) -o $@ $^ $($*_LIBS) -lcmocka $(LDLIBS_BASE)
$(UNIT_BINS): $$($$(notdir $$@)_OBJS)
ALL_OBJ += $(UNIT_TESTS:%=$(B)/tests/unit/%.o) $(foreach t,$(UNIT_TESTS),$($(t)_OBJS))

unit-bins: $(UNIT_BINS)
# each binary bounded (tests/unit/bounded.sh: UNIT_TIMEOUT s)
export UNIT_TIMEOUT ?= 900
unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; sh tests/unit/bounded.sh $$t; done

# Fuzz targets: tests/fuzz/NAME.c built by clang with libFuzzer, linked with $(NAME_SRCS) and $(NAME_LIBS);
# seeds in tests/fuzz/seeds/NAME/, new inputs kept under build/ so the seed corpus stays clean.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_BINS    := $(FUZZERS:%=$(B)/fuzz/%)
$(B)/fuzz/%: tests/fuzz/%.c $$($$*_SRCS) $(COMMON_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -g -O1 -std=gnu11 $(TS_CPPFLAGS) $(CPPFLAGS) -fsanitize=fuzzer,address,undefined \
	  $($*_CFLAGS) $(LDFLAGS) -o $@ $< $($*_SRCS) $(COMMON_SRC) $(call PKG_CFLAGS,inih jansson) \
	  $($*_LIBS) $(COMMON_LIBS) $(LDLIBS_BASE)
fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZERS); do mkdir -p $(B)/fuzz/corpus-$$f; echo "== fuzz $$f ($(FUZZ_SECONDS) s)"; \
	  $(B)/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -timeout=5 -rss_limit_mb=1024 -print_final_stats=0 \
	  $(B)/fuzz/corpus-$$f tests/fuzz/seeds/$$f 2>$(B)/fuzz/$$f.log || { tail -40 $(B)/fuzz/$$f.log; exit 1; }; \
	  grep -E '^Done [0-9]+ runs' $(B)/fuzz/$$f.log || true; done

E2E_PY := /usr/bin/python3
# every test bounded (python3-pytest-timeout; without it --timeout is an
# unknown option, so the run fails): a hung one fails with its
# traceback after E2E_TIMEOUT s, its fixtures' processes stopped
E2E_TIMEOUT ?= 900
PYTEST := $(E2E_PY) -m pytest -q --timeout=$(E2E_TIMEOUT)
# CI: a skipped test fails the run (tests/e2e/conftest.py, tests/web/web.mk)
ifeq ($(CI),true)
export TSBROKER_NO_SKIP ?= 1
endif
e2e: all
	$(PYTEST) tests/e2e
# the PostgreSQL axis: the core suites once on engine = postgresql
# (TSB_E2E_ENGINE, tests/e2e/farm.py: one throwaway cluster, a database per broker)
.PHONY: e2e-pg
E2E_CORE := tests/e2e/test_journey.py tests/e2e/test_token_mode.py tests/e2e/test_admin_api.py
e2e-pg: all
	TSB_E2E_ENGINE=postgresql $(PYTEST) $(E2E_CORE)

# every relative link and #anchor in README.md and docs/*.md resolves
check-links:
	$(E2E_PY) tools/check-links

test: test-deps
	$(MAKE) check-links
	$(MAKE) all unit
	$(MAKE) e2e
	$(MAKE) e2e-pg
	$(MAKE) e2e-freerdp
	@if [ -f tests/web/package.json ]; then $(MAKE) web-test; fi
	$(MAKE) asan-test
	$(MAKE) tsan-test
	$(MAKE) fuzz FUZZ_SECONDS=5

# make check-tls: testssl.sh against both doors of a broker with a test CA
# (the RDP door through tools/rdp-tls-relay); fails on a protocol or cipher
# finding above LOW.
check-tls: test-deps all
	$(E2E_PY) tools/check-tls $(B)

# ---- sanitizers ------------------------------------------------------------
# make asan: everything (daemons, test peers, unit tests) built with ASan and
# UBSan under build-asan/. make asan-test: the unit tests and ASAN_E2E under
# it; tests/e2e/conftest.py sets ASAN_OPTIONS/UBSAN_OPTIONS (halt on error,
# reports to files) and fails a test whose processes reported anything.
# make leakcheck: the long leak loops (1,000 redirects, RSS bounded).
ASAN_B     := build-asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_E2E   ?= $(wildcard tests/e2e/test_broker.py tests/e2e/test_admin_api.py \
	tests/e2e/test_rdp_endpoint.py tests/e2e/test_hostile.py tests/e2e/test_faults.py \
	tests/e2e/test_lean.py tests/e2e/test_desk.py tests/e2e/test_reload.py)
# (a core dump of an ASan process is its shadow memory: that check runs in make e2e)
ASAN_DESELECT := --deselect tests/e2e/test_lean.py::test_password_in_no_log_and_no_core
SAN_ENV    := ASAN_OPTIONS=halt_on_error=1:abort_on_error=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/asan/lsan.supp:print_suppressions=0
# the test peers keep ASan/UBSan without LSan (tests/asan/peer_options.c)
$(B)/rdptarget $(B)/rdpprobe: $(B)/tests/asan/peer_options.o
ALL_OBJ += $(B)/tests/asan/peer_options.o
asan:
	$(MAKE) B=$(ASAN_B) SANITIZE="$(ASAN_FLAGS)" all unit-bins
asan-test: asan
	$(SAN_ENV) $(MAKE) B=$(ASAN_B) SANITIZE="$(ASAN_FLAGS)" unit
	TSBROKER_BUILD=$(CURDIR)/$(ASAN_B) $(PYTEST) $(ASAN_E2E) $(ASAN_DESELECT)
# make tsan: the broker, the agent and TSAN_UNIT built with ThreadSanitizer
# under build-tsan/.
# make tsan-test: the threaded unit tests (TSAN_UNIT; a report fails with
# TSan's exit code) and the e2e suites that exercise the broker's threads;
# tests/e2e/conftest.py sets TSAN_OPTIONS (reports to files, suppressions
# for uninstrumented libraries only: tests/tsan/tsan.supp) and fails a test
# whose processes reported. TSAN_SETARCH runs them without ASLR where the
# kernel's mmap layout is one TSan refuses ("unexpected memory mapping").
TSAN_B     := build-tsan
TSAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer
TSAN_E2E   ?= tests/e2e/test_rdp_endpoint.py tests/e2e/test_hostile.py \
	tests/e2e/test_token_mode.py tests/e2e/test_admin_api.py tests/e2e/test_reload.py
TSAN_UNIT  ?= test_admit test_lean test_splice test_store_sqlite
TSAN_SETARCH ?= $(shell $(TSAN_B)/tsbroker -x 2>&1 | grep -q 'unexpected memory mapping' && \
	echo setarch $$(uname -m) -R)
# The test peers (rdptarget, rdpprobe: FreeRDP's own threads, uninstrumented
# anyway) are built plainly under build-tsan/peers/ and linked in beside the
# daemons: a storm of 100 instrumented probes outruns its timeouts.
TSAN_PEERS := rdptarget rdpprobe
tsan:
	$(MAKE) B=$(TSAN_B) SANITIZE="$(TSAN_FLAGS)" $(TSAN_B)/tsbroker $(TSAN_B)/tsagent \
	  $(TSAN_UNIT:%=$(TSAN_B)/tests/%)
	$(MAKE) B=$(TSAN_B)/peers $(TSAN_PEERS:%=$(TSAN_B)/peers/%)
	cd $(TSAN_B) && for p in $(TSAN_PEERS); do ln -sf peers/$$p $$p; done
tsan-test: tsan
	@set -e; for t in $(TSAN_UNIT); do echo "== $(TSAN_B)/tests/$$t"; \
	  TSAN_OPTIONS=halt_on_error=1:suppressions=$(CURDIR)/tests/tsan/tsan.supp \
	  sh tests/unit/bounded.sh $(TSAN_SETARCH) $(TSAN_B)/tests/$$t; done
	TSBROKER_BUILD=$(CURDIR)/$(TSAN_B) $(TSAN_SETARCH) $(PYTEST) $(TSAN_E2E)
# make soak (not in CI): SOAK_MINUTES of mixed load, chaos and hostile
# clients on loopback (tests/soak/soak.py); prints a row a minute and fails
# on a lost or duplicated placement or RSS/fds growing over the second half.
SOAK_MINUTES ?= 30
soak: all bench-bins
	TSBROKER_BUILD=$(CURDIR)/$(B) nice $(E2E_PY) tests/soak/soak.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)
leakcheck: all
	TSBROKER_LEAK_REDIRECTS=10000 $(PYTEST) -s -k leak tests/e2e/test_hostile.py

# ---- setup ---------------------------------------------------------------
deps:
	@sh tools/deps.sh run
test-deps:
	@sh tools/deps.sh test

run: deps all
	@sh tools/run.sh

# A live farm on loopback (broker, three rdptargets with agents) until Ctrl-C.
demo: all
	@sh tools/demo.sh

# Two brokers on PostgreSQL under Patroni, three terminal servers (root).
ha-demo: all
	@sh tools/ha-demo.sh

# DESTDIR and PREFIX as usual; configs are examples, never overwritten.
install: $(B)/tsbroker $(B)/tsagent
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PREFIX)/share/tsbroker/web \
	  $(DESTDIR)$(PREFIX)/share/tsbroker/schema/postgresql $(DESTDIR)$(PREFIX)/share/doc/tsbroker \
	  $(DESTDIR)$(UNITDIR)
	install -d -m 0700 $(DESTDIR)/etc/tsbroker $(DESTDIR)/etc/tsagent
	install -m 0755 $(B)/tsbroker $(B)/tsagent $(DESTDIR)$(BINDIR)/
	install -m 0644 schema/*.sql $(DESTDIR)$(PREFIX)/share/tsbroker/schema/
	install -m 0644 schema/postgresql/*.sql $(DESTDIR)$(PREFIX)/share/tsbroker/schema/postgresql/
	if [ -n "$$(ls web 2>/dev/null)" ]; then cp -R web/. $(DESTDIR)$(PREFIX)/share/tsbroker/web/; fi
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/tsbroker/
	install -d $(DESTDIR)$(PREFIX)/share/doc/tsbroker/docs
	install -m 0644 docs/*.md docs/*.sh $(DESTDIR)$(PREFIX)/share/doc/tsbroker/docs/
	install -m 0644 broker/tsbroker.conf.example agent/tsagent.conf.example \
	  $(DESTDIR)$(PREFIX)/share/doc/tsbroker/
	install -m 0644 broker/tsbroker.service agent/tsagent.service $(DESTDIR)$(UNITDIR)/
	sed -i -e 's#/usr/local/bin/#$(BINDIR)/#g' -e 's#/usr/local/#$(PREFIX)/#g' \
	  $(DESTDIR)$(UNITDIR)/tsbroker.service $(DESTDIR)$(UNITDIR)/tsagent.service \
	  $(DESTDIR)$(PREFIX)/share/doc/tsbroker/tsbroker.conf.example
	if [ -n "$(UNIT_USER)" ]; then sed -i 's#^DynamicUser=yes$$#User=$(UNIT_USER)\nGroup=$(UNIT_USER)#' \
	  $(DESTDIR)$(UNITDIR)/tsbroker.service; fi

clean:
	rm -rf $(B)

# ---- Debian packages -------------------------------------------------------
# make deb: the tsbroker and tsagent packages (debian/, dpkg-buildpackage -b)
# into build/deb/, with the build log (build/deb/build.log, for blhc).
# dpkg-buildpackage builds in the tree it is given and writes beside it, so
# the source files (tracked and new, not build outputs) are copied to
# build/deb/src/ and that copy removed after. Its make is not this one's
# (no -s: blhc reads the commands).
DEB_DIR := $(B)/deb
.PHONY: deb deb-check
deb:
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src/tsbroker
	git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - | \
	  tar -xf - -C $(DEB_DIR)/src/tsbroker
	cd $(DEB_DIR)/src/tsbroker && MAKEFLAGS= DEB_BUILD_OPTIONS="parallel=$$(nproc) $$DEB_BUILD_OPTIONS" \
	  dpkg-buildpackage -b -us -uc >../../build.log 2>&1 || \
	  { tail -40 ../../build.log; exit 1; }
	mv $(DEB_DIR)/src/*.deb $(DEB_DIR)/
	rm -rf $(DEB_DIR)/src
	@ls $(DEB_DIR)/*.deb

# make deb-check (outside CI: root, debootstrap, systemd-nspawn): the
# packages installed, started, reloaded and purged under a real systemd in a
# booted Debian 12 tree (tools/deb-check/run.sh; the tree is cached in
# $(B)/deb-check/bookworm).
deb-check: deb
	sh tools/deb-check/run.sh $(B)

-include $(sort $(ALL_OBJ:.o=.d))
