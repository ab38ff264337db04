# broker/: the tsbroker daemon and its admin commands, one fragment per part:
# core/ (the daemon), front/ (the RDP front door), state/ (store, rules),
# http/ (HTTPS: agent API, admin API, page). common/ is shared with the agent
# (the top Makefile builds it).
include broker/core/core.mk
include broker/front/front.mk
include broker/state/state.mk
include broker/http/http.mk

BROKER_SRC := $(CORE_SRC) $(FRONT_SRC) $(STATE_SRC) $(HTTP_SRC)
BROKER_OBJ := $(BROKER_SRC:%.c=$(B)/%.o) $(B)/schema.o $(B)/schema_pg.o
BROKER_LIBS := $(FRONT_LIBS) $(HTTP_LIBS) $(STATE_LIBS) $(CORE_LIBS) $(COMMON_LIBS)

PROGS += $(B)/tsbroker
ALL_OBJ += $(BROKER_OBJ)
$(B)/tsbroker: $(BROKER_OBJ) $(COMMON_OBJ)
	$(LINK) -o $@ $^ $(BROKER_LIBS) $(LDLIBS_BASE)

# broker/common/ (wire format) tests
$(eval $(call unit_test,test_wire,$(B)/broker/common/wire.o $(B)/broker/common/util.o,\
	$(call PKG_LIBS,jansson)))
$(eval $(call unit_test,test_wire_admin,$(B)/broker/common/wire.o $(B)/broker/common/util.o,\
	$(call PKG_LIBS,jansson)))
# the ClientHello reader of the doors' tls_refused events
$(eval $(call unit_test,test_tlshello,$(B)/broker/common/tlshello.o,))
FUZZERS += fuzz_tlshello
fuzz_tlshello_SRCS :=
