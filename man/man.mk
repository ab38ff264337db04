# man/: the manual pages (scdoc sources) and the generated configuration
# reference. The key sections of tsbroker.conf(5), tsagent.conf(5) and
# docs/configuration.md are written by build/confdoc-NAME from the daemons'
# own key tables (tools/confdoc.c): make man builds the pages into $(B)/man/,
# make docs-config rewrites docs/configuration.md (checked in; a test fails
# when it differs from what the tables say).
.PHONY: man docs-config
CONFDOC_BROKER_OBJ := $(B)/tools/confdoc.o $(B)/broker/core/conf.o $(B)/broker/common/cfg.o \
	$(B)/broker/common/util.o $(B)/broker/common/log.o
CONFDOC_AGENT_OBJ := $(B)/tools/confdoc.o $(B)/agent/conf.o $(B)/agent/brokers.o \
	$(B)/agent/sessions.o $(B)/agent/proc.o $(B)/agent/child.o $(COMMON_OBJ)
ALL_OBJ += $(B)/tools/confdoc.o
$(B)/confdoc-tsbroker: $(CONFDOC_BROKER_OBJ)
	$(LINK) -o $@ $^ $(call PKG_LIBS,inih) $(LDLIBS_BASE)
$(B)/confdoc-tsagent: $(CONFDOC_AGENT_OBJ)
	$(LINK) -o $@ $^ $(call PKG_LIBS,libsystemd) $(COMMON_LIBS) $(LDLIBS_BASE)

MAN_PAGES := $(patsubst man/%.scd,$(B)/man/%,$(wildcard man/*.scd))
man: $(MAN_PAGES)
# a .conf.5 page: its keys from the daemon's table, then scdoc
$(B)/man/%.conf.5: man/%.conf.5.scd $(B)/confdoc-%
	@mkdir -p $(dir $@)
	$(B)/confdoc-$* $* scdoc < $< > $@.scd
	scdoc < $@.scd > $@
$(B)/man/%: man/%.scd
	@mkdir -p $(dir $@)
	scdoc < $< > $@

docs-config: $(B)/confdoc-tsbroker $(B)/confdoc-tsagent
	$(B)/confdoc-tsbroker tsbroker md < docs/configuration.md > $(B)/configuration.md.1
	$(B)/confdoc-tsagent tsagent md < $(B)/configuration.md.1 > $(B)/configuration.md.2
	mv $(B)/configuration.md.2 docs/configuration.md
