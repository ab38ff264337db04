/* Shared by the lean engine's parser tests: the real PDUs the engine's
 * debug dump (TSBROKER_LEAN_DUMP, lean.h) captured from xfreerdp 2.11,
 * rdesktop 1.9 and rdpprobe, in tests/unit/fixtures/lean/. */
#ifndef TS_LEAN_FX_H
#define TS_LEAN_FX_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LEAN_FX_DIR "tests/unit/fixtures/lean/"

struct lean_fx {
	uint8_t buf[16384];
	size_t len;
};

/* Loads LEAN_FX_DIR/name; fails the test if it cannot. */
static inline void
lean_fx_load(const char *name, struct lean_fx *fx)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), LEAN_FX_DIR "%s", name);
	if ((f = fopen(path, "rb")) == NULL)
		fail_msg("cannot open %s (run from the repository root)", path);
	fx->len = fread(fx->buf, 1, sizeof(fx->buf), f);
	fclose(f);
}

/* Rewrites the TPKT length after changing a PDU's size. */
static inline void
lean_fx_set_len(struct lean_fx *fx, size_t len)
{
	fx->len = len;
	fx->buf[2] = (uint8_t)(len >> 8);
	fx->buf[3] = (uint8_t)len;
}

static const char *const lean_fx_clients[] = { "xfreerdp", "rdesktop", "rdpprobe" };

#endif
