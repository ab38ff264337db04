# broker/: the tsbroker daemon and its admin commands.
RDP_SRC ?= broker/rdp.c broker/x224.c
BROKER_SRC := broker/main.c broker/conf.c broker/store.c broker/placement.c \
	broker/health.c broker/http.c broker/http_reply.c broker/api_agent.c broker/cli.c \
	broker/crypto.c broker/broker.c broker/token.c broker/splice.c $(RDP_SRC)
# the admin API, status page and /metrics (docs/admin-api.md)
BROKER_SRC += broker/api_admin.c broker/farm.c
# [broker] user: the state directory and the change to an unprivileged user
BROKER_SRC += broker/privdrop.c
BROKER_OBJ := $(BROKER_SRC:%.c=$(B)/%.o) $(B)/schema.o
BROKER_LIBS := $(call PKG_LIBS,freerdp-server2 freerdp2 winpr2 libmicrohttpd sqlite3 openssl) $(COMMON_LIBS)

$(B)/broker/rdp.o: CFLAGS += $(call PKG_CFLAGS,freerdp-server2 freerdp2 winpr2)
$(B)/broker/http.o: CFLAGS += $(call PKG_CFLAGS,libmicrohttpd)
$(B)/broker/store.o: CFLAGS += $(call PKG_CFLAGS,sqlite3)

# schema/NNN_*.sql embedded in the binary, applied in order by store.c
SCHEMA_SQL := $(sort $(wildcard schema/[0-9][0-9][0-9]_*.sql))
$(B)/schema.c: $(SCHEMA_SQL) tools/embed-schema.sh
	@mkdir -p $(B)
	sh tools/embed-schema.sh $(SCHEMA_SQL) > $@
$(B)/schema.o: $(B)/schema.c
	$(CC) $(CFLAGS) -c -o $@ $<

PROGS += $(B)/tsbroker
$(B)/tsbroker: $(BROKER_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(BROKER_LIBS) $(LDLIBS_BASE)

UNIT_TESTS += test_placement test_cfg test_wire test_store test_token test_splice
test_placement_OBJS := $(B)/broker/placement.o
test_cfg_OBJS := $(B)/broker/conf.o $(B)/broker/common/cfg.o $(B)/broker/common/util.o
test_cfg_LIBS := $(call PKG_LIBS,inih)
test_wire_OBJS := $(B)/broker/common/wire.o $(B)/broker/common/util.o
test_wire_LIBS := $(call PKG_LIBS,jansson)
test_store_OBJS := $(B)/broker/store.o $(B)/broker/placement.o $(B)/broker/health.o $(B)/broker/conf.o $(B)/schema.o $(COMMON_OBJ)
test_store_LIBS := $(call PKG_LIBS,sqlite3) $(COMMON_LIBS)

test_token_OBJS := $(B)/broker/token.o $(B)/broker/crypto.o $(COMMON_OBJ)
test_token_LIBS := $(call PKG_LIBS,openssl) $(COMMON_LIBS)
test_splice_OBJS := $(B)/broker/splice.o $(COMMON_OBJ)
test_splice_LIBS := $(COMMON_LIBS)

UNIT_TESTS += test_farm test_wire_admin
test_farm_OBJS := $(B)/broker/farm.o $(B)/broker/common/util.o
test_wire_admin_OBJS := $(B)/broker/common/wire.o $(B)/broker/common/util.o
test_wire_admin_LIBS := $(call PKG_LIBS,jansson)
FUZZERS += fuzz_login
fuzz_login_SRCS :=

FUZZERS += fuzz_heartbeat fuzz_conf fuzz_token
fuzz_token_SRCS := broker/token.c broker/crypto.c
fuzz_token_LIBS := $(call PKG_LIBS,openssl)
fuzz_heartbeat_SRCS := broker/store.c broker/placement.c $(B)/schema.c
fuzz_heartbeat_LIBS := $(call PKG_LIBS,sqlite3)
fuzz_conf_SRCS := broker/conf.c
