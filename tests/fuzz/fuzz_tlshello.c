/* libFuzzer target: the ClientHello reader (broker/common/tlshello.c). */
#include <stdint.h>
#include <stdlib.h>

#include "broker/common/tlshello.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tlshello h;

	if (tlshello_parse(data, size, &h) != 0)
		return 0;
	if (h.nversions < 0 || h.nversions > TLSHELLO_VERSIONS_MAX ||
	    h.nsuites < 0 || h.nsuites > TLSHELLO_SUITES_MAX)
		abort();
	for (int i = 0; i < h.nversions; i++)
		(void)tlshello_version_name(h.versions[i]);
	return 0;
}
