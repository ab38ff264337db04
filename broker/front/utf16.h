/* utf16: UTF-16LE <-> UTF-8 for the names RDP carries (Client Info,
 * Client Core Data, the Server Redirection PDU). Pure, no allocation.
 * Surrogate pairs are joined; an unpaired surrogate, an overlong or invalid
 * UTF-8 sequence and a code point past U+10FFFF are errors. */
#ifndef TS_UTF16_H
#define TS_UTF16_H

#include <stddef.h>
#include <stdint.h>

#define UTF16_EINVAL	(-1)	/* malformed input */
#define UTF16_ESPACE	(-2)	/* out too small */

/* Converts n bytes of UTF-16LE (n even; a U+0000 ends the string early)
 * into out (size outlen) as a NUL-terminated UTF-8 string. Returns its
 * length in bytes, or a negative UTF16_E* (out then holds ""). */
int utf16_to_utf8(const uint8_t *in, size_t n, char *out, size_t outlen);
/* Converts the UTF-8 string s into out as UTF-16LE with a terminating
 * U+0000. Returns the bytes written (terminator included), or a negative
 * UTF16_E*. With out NULL, returns the bytes it would write. */
int utf8_to_utf16(const char *s, uint8_t *out, size_t outlen);
/* Copies the UTF-8 name s into out (size outlen > 0) fit to show and
 * store: each control character (U+0000-U+001F, U+007F-U+009F) and each
 * byte of a malformed sequence becomes '?', and a name too long is cut at
 * a character's boundary. Returns the length written. */
size_t utf8_name_clean(const char *s, char *out, size_t outlen);

#endif
