# broker/state/: the state. The store (engine-independent layer, the SQL both
# engines share, the SQLite and PostgreSQL connections, the rules of placement
# and heartbeat reconciliation, the states),
# the farm's n+1 summary, health, and the schema embedded from schema/NNN_*.sql.
# STORE_SRC/STORE_OBJ: what a program using store.h links (fuzz, bench).
STORE_SRC := broker/state/store.c broker/state/store_sql.c broker/state/sqlite_db.c \
	broker/state/store_pg.c broker/state/pg_db.c broker/state/reconcile.c \
	broker/state/states.c broker/state/placement.c broker/state/plindex.c \
	broker/state/lastseen.c broker/state/hbcache.c
STORE_OBJ := $(STORE_SRC:%.c=$(B)/%.o) $(B)/schema.o $(B)/schema_pg.o
STATE_SRC := $(STORE_SRC) broker/state/health.c broker/state/farm.c
STATE_LIBS := $(call PKG_LIBS,sqlite3) $(call PKG_LIBS,libpq)
$(B)/broker/state/sqlite_db.o: TS_CPPFLAGS += $(call PKG_CFLAGS,sqlite3)

# schema/NNN_*.sql embedded in the binary, applied in order by store.c
SCHEMA_SQL := $(sort $(wildcard schema/[0-9][0-9][0-9]_*.sql))
$(B)/schema.c: $(SCHEMA_SQL) tools/embed-schema.sh
	@mkdir -p $(B)
	sh tools/embed-schema.sh $(SCHEMA_SQL) > $@
$(B)/schema.o: $(B)/schema.c
	$(COMPILE) -c -o $@ $<
# schema/postgresql/NNN_*.sql: the PostgreSQL engine's (pg_db.c)
PG_SCHEMA_SQL := $(sort $(wildcard schema/postgresql/[0-9][0-9][0-9]_*.sql))
$(B)/schema_pg.c: $(PG_SCHEMA_SQL) tools/embed-schema.sh
	@mkdir -p $(B)
	sh tools/embed-schema.sh -p pg_ $(PG_SCHEMA_SQL) > $@
$(B)/schema_pg.o: $(B)/schema_pg.c
	$(COMPILE) -c -o $@ $<
$(B)/broker/state/pg_db.o: TS_CPPFLAGS += $(call PKG_CFLAGS,libpq)

$(eval $(call unit_test,test_placement,$(B)/broker/state/placement.o $(B)/broker/state/plindex.o $(B)/broker/state/states.o,))
$(eval $(call unit_test,test_states,$(B)/broker/state/states.o,))
$(eval $(call unit_test,test_lastseen,$(B)/broker/state/lastseen.o $(B)/broker/common/util.o,))
$(eval $(call unit_test,test_hbcache,$(B)/broker/state/hbcache.o $(B)/broker/state/reconcile.o \
	$(B)/broker/state/placement.o $(B)/broker/state/states.o $(B)/broker/common/util.o,))
$(eval $(call unit_test,test_reconcile,$(B)/broker/state/reconcile.o $(B)/broker/state/placement.o \
	$(B)/broker/state/states.o $(B)/broker/common/util.o,))
# test_store: the store contract (store.h only, any engine); test_store_sqlite:
# what only the SQLite engine has (its file, data_version, a full disk, upgrades)
STORE_TEST_OBJS := $(B)/tests/unit/store_fx.o $(STORE_OBJ) $(B)/broker/state/health.o \
	$(B)/broker/state/farm.o \
	$(B)/broker/core/conf.o $(COMMON_OBJ)
$(eval $(call unit_test,test_store,$(STORE_TEST_OBJS),$(STATE_LIBS) $(COMMON_LIBS)))
$(eval $(call unit_test,test_store_sqlite,$(STORE_TEST_OBJS),$(STATE_LIBS) $(COMMON_LIBS)))
# test_store_pg: several stores at once (on PostgreSQL by make unit-pg)
$(eval $(call unit_test,test_store_pg,$(STORE_TEST_OBJS),$(STATE_LIBS) $(COMMON_LIBS)))
# test_keys (broker/core/keys.c): the token key's check against a store
$(eval $(call unit_test,test_keys,$(B)/broker/core/keys.o $(B)/broker/core/crypto.o \
	$(B)/broker/front/token.o $(STORE_OBJ) $(COMMON_OBJ),$(call PKG_LIBS,openssl) \
	$(STATE_LIBS) $(COMMON_LIBS)))
$(eval $(call unit_test,test_farm,$(B)/broker/state/farm.o $(B)/broker/state/states.o \
	$(B)/broker/common/util.o,))
FUZZERS += fuzz_heartbeat
fuzz_heartbeat_SRCS := $(STORE_SRC) $(B)/schema.c $(B)/schema_pg.c
fuzz_heartbeat_LIBS := $(STATE_LIBS)
fuzz_heartbeat_CFLAGS := $(call PKG_CFLAGS,libpq)
# make unit-pg: the store contract suite on a throwaway PostgreSQL cluster
# (tests/pg/unit-pg.sh: one cluster, a fresh database per test); part of
# make unit.
.PHONY: unit-pg
unit: unit-pg
unit-pg: $(B)/tests/test_store $(B)/tests/test_store_pg $(B)/tsbroker
	TSBROKER=$(B)/tsbroker sh tests/pg/unit-pg.sh $(B)/tests/test_store $(B)/tests/test_store_pg
# test_faults: malloc-failure injection over the store, the wire format and
# the HTTPS handlers (tests/unit/faultalloc.c: the linker's --wrap and the
# libraries' hooks; tests/unit/http_fx.c: http.c's stand-in)
FAULTALLOC_LDFLAGS := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
$(B)/tests/unit/faultalloc.o: TS_CPPFLAGS += $(call PKG_CFLAGS,sqlite3 openssl)
$(B)/tests/unit/test_faults.o: TS_CPPFLAGS += $(call PKG_CFLAGS,sqlite3 openssl)
$(eval $(call unit_test,test_faults,$(B)/tests/unit/faultalloc.o $(B)/broker/core/crypto.o \
	$(B)/tests/unit/http_fx.o $(B)/broker/http/http_routes.o $(B)/broker/http/http_reply.o \
	$(B)/broker/http/api_admin.o $(B)/broker/http/api_agent.o $(B)/broker/http/auth.o \
	$(B)/broker/core/admin_token.o $(STORE_TEST_OBJS),\
	$(FAULTALLOC_LDFLAGS) $(STATE_LIBS) $(COMMON_LIBS) $(call PKG_LIBS,openssl)))
