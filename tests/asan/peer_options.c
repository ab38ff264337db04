/* Linked into the test peers (rdptarget, rdpprobe): under make asan they keep
 * AddressSanitizer and UBSan but not LeakSanitizer. FreeRDP 2.11's server
 * leaks the key and certificate it parses in every tls_accept() (the broker
 * works around that in broker/front/pem_cache.c; the test peer does not),
 * and its libraries have no frame pointers, so those reports cannot be told
 * apart by a suppression. ASAN_OPTIONS in the environment still override this. */
const char *__asan_default_options(void);

const char *
__asan_default_options(void)
{
	return "detect_leaks=0";
}
