# tools/: test peers built on FreeRDP (rdptarget: a minimal RDP server that
# records who connected and keeps a sessions file; rdpprobe: a headless client
# that follows redirections), plus the x224 parser's tests.

TOOLS_FREERDP_SERVER := freerdp-server2 freerdp2 winpr2
TOOLS_FREERDP_CLIENT := freerdp-client2 freerdp2 winpr2

$(B)/tools/rdptarget.o: TS_CPPFLAGS += $(call PKG_CFLAGS,$(TOOLS_FREERDP_SERVER) jansson)
$(B)/tools/rdpprobe.o: TS_CPPFLAGS += $(call PKG_CFLAGS,$(TOOLS_FREERDP_CLIENT))

PROGS += $(B)/rdptarget $(B)/rdpprobe
RDPTARGET_OBJ := $(B)/tools/rdptarget.o $(B)/broker/front/frpeer.o $(B)/broker/front/x224.o
RDPPROBE_OBJ := $(B)/tools/rdpprobe.o $(B)/broker/front/frpeer.o
ALL_OBJ += $(RDPTARGET_OBJ) $(RDPPROBE_OBJ)
$(B)/rdptarget: $(RDPTARGET_OBJ) $(COMMON_OBJ)
	$(LINK) -o $@ $^ $(call PKG_LIBS,$(TOOLS_FREERDP_SERVER)) $(COMMON_LIBS) $(LDLIBS_BASE)
$(B)/rdpprobe: $(RDPPROBE_OBJ) $(COMMON_OBJ)
	$(LINK) -o $@ $^ $(call PKG_LIBS,$(TOOLS_FREERDP_CLIENT)) $(COMMON_LIBS) $(LDLIBS_BASE)

$(eval $(call unit_test,test_x224,$(B)/broker/front/x224.o $(B)/broker/common/log.o,))
FUZZERS += fuzz_x224
fuzz_x224_SRCS := broker/front/x224.c
