/* le: little-endian reads of the RDP structures' fields, for the pure
 * codecs (mcs.c, clientinfo.c). The caller checks the bounds. */
#ifndef TS_LE_H
#define TS_LE_H

#include <stdint.h>

static inline uint16_t
le_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t
le_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

#endif
