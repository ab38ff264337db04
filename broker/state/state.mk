# broker/state/: the state. The store (SQLite), placement, the farm's n+1
# summary, health, and the schema embedded from schema/NNN_*.sql.
STATE_SRC := broker/state/store.c broker/state/placement.c broker/state/health.c broker/state/farm.c
STATE_LIBS := $(call PKG_LIBS,sqlite3)
$(B)/broker/state/store.o: TS_CPPFLAGS += $(call PKG_CFLAGS,sqlite3)

# schema/NNN_*.sql embedded in the binary, applied in order by store.c
SCHEMA_SQL := $(sort $(wildcard schema/[0-9][0-9][0-9]_*.sql))
$(B)/schema.c: $(SCHEMA_SQL) tools/embed-schema.sh
	@mkdir -p $(B)
	sh tools/embed-schema.sh $(SCHEMA_SQL) > $@
$(B)/schema.o: $(B)/schema.c
	$(COMPILE) -c -o $@ $<

$(eval $(call unit_test,test_placement,$(B)/broker/state/placement.o,))
$(eval $(call unit_test,test_store,$(B)/broker/state/store.o $(B)/broker/state/placement.o \
	$(B)/broker/state/health.o $(B)/broker/core/conf.o $(B)/schema.o $(COMMON_OBJ),\
	$(call PKG_LIBS,sqlite3) $(COMMON_LIBS)))
$(eval $(call unit_test,test_farm,$(B)/broker/state/farm.o $(B)/broker/common/util.o,))
FUZZERS += fuzz_heartbeat
fuzz_heartbeat_SRCS := broker/state/store.c broker/state/placement.c $(B)/schema.c
fuzz_heartbeat_LIBS := $(call PKG_LIBS,sqlite3)
