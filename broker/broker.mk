# broker/: the tsbroker daemon and its admin commands, one fragment per part:
# core/ (the daemon), front/ (the RDP front door), state/ (store, rules),
# http/ (HTTPS: agent API, admin API, page). common/ is shared with the agent
# (the top Makefile builds it).
include broker/core/core.mk
include broker/front/front.mk
include broker/state/state.mk
include broker/http/http.mk

BROKER_SRC := $(CORE_SRC) $(FRONT_SRC) $(STATE_SRC) $(HTTP_SRC)
BROKER_OBJ := $(BROKER_SRC:%.c=$(B)/%.o) $(B)/schema.o
BROKER_LIBS := $(FRONT_LIBS) $(HTTP_LIBS) $(STATE_LIBS) $(CORE_LIBS) $(COMMON_LIBS)

PROGS += $(B)/tsbroker
$(B)/tsbroker: $(BROKER_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(BROKER_LIBS) $(LDLIBS_BASE)

# broker/common/ (wire format) tests
UNIT_TESTS += test_wire test_wire_admin
test_wire_OBJS := $(B)/broker/common/wire.o $(B)/broker/common/util.o
test_wire_LIBS := $(call PKG_LIBS,jansson)
test_wire_admin_OBJS := $(B)/broker/common/wire.o $(B)/broker/common/util.o
test_wire_admin_LIBS := $(call PKG_LIBS,jansson)
