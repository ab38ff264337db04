/* libFuzzer target: the broker's configuration parser (inih + cfg.c + conf.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/common/cfg.h"
#include "broker/core/conf.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf c;
	char err[512], *text;

	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	(void)conf_load_string(&c, "fuzz.conf", text, err, sizeof(err));
	free(text);
	return 0;
}
