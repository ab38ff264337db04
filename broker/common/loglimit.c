#include "broker/common/loglimit.h"

int
loglimit_pass(struct loglimit *l, int64_t now, uint64_t *quiet)
{
	int64_t last = __atomic_load_n(&l->last_ms, __ATOMIC_RELAXED);

	/* of threads passing at once, the one that moves last_ms logs */
	if (now - last < LOGLIMIT_INTERVAL_MS || !__atomic_compare_exchange_n(&l->last_ms,
	    &last, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
		__atomic_add_fetch(&l->quiet, 1, __ATOMIC_RELAXED);
		return 0;
	}
	*quiet = __atomic_exchange_n(&l->quiet, 0, __ATOMIC_RELAXED);
	return 1;
}
