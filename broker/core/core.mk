# broker/core/: the daemon itself. main (argv, start and stop of the parts),
# the config's key table, the admin commands, the decisions behind the RDP
# endpoint (broker.c), the privilege drop and the crypto helpers (OpenSSL).
CORE_SRC := broker/core/main.c broker/core/conf.c broker/core/cli.c broker/core/crypto.c \
	broker/core/broker.c broker/core/privdrop.c broker/core/admin_token.c broker/core/keys.c \
	broker/core/reload.c
CORE_LIBS := $(call PKG_LIBS,openssl)

$(eval $(call unit_test,test_cfg,$(B)/broker/core/conf.o $(B)/broker/common/cfg.o $(B)/broker/common/log.o \
	$(B)/broker/common/util.o,$(call PKG_LIBS,inih)))
FUZZERS += fuzz_conf
fuzz_conf_SRCS := broker/core/conf.c
$(eval $(call unit_test,test_admin_token,$(B)/broker/core/admin_token.o $(B)/broker/core/crypto.o \
	$(COMMON_OBJ),$(call PKG_LIBS,openssl) $(COMMON_LIBS)))
