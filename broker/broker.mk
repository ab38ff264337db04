# broker/: the tsbroker daemon and its admin commands.
BROKER_SRC := broker/main.c broker/conf.c broker/store.c broker/placement.c \
	broker/health.c broker/http.c broker/api_agent.c broker/cli.c \
	broker/crypto.c broker/broker.c broker/rdp.c broker/x224.c
BROKER_OBJ := $(BROKER_SRC:%.c=$(B)/%.o)
BROKER_LIBS := $(call PKG_LIBS,freerdp-server2 freerdp2 winpr2 libmicrohttpd sqlite3 openssl) $(COMMON_LIBS)

$(B)/broker/rdp.o: CFLAGS += $(call PKG_CFLAGS,freerdp-server2 freerdp2 winpr2)
$(B)/broker/http.o: CFLAGS += $(call PKG_CFLAGS,libmicrohttpd)
$(B)/broker/store.o: CFLAGS += $(call PKG_CFLAGS,sqlite3)

PROGS += $(B)/tsbroker
$(B)/tsbroker: $(BROKER_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(BROKER_LIBS) $(LDLIBS_BASE)

UNIT_TESTS += test_placement test_cfg test_wire
test_placement_OBJS := $(B)/broker/placement.o
test_cfg_OBJS := $(B)/broker/conf.o $(B)/broker/common/cfg.o $(B)/broker/common/util.o
test_cfg_LIBS := $(call PKG_LIBS,inih)
test_wire_OBJS := $(B)/broker/common/wire.o $(B)/broker/common/util.o
test_wire_LIBS := $(call PKG_LIBS,jansson)
