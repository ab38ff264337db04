/* peer_wlog: FreeRDP's WLog set-up shared by the test peers rdptarget and
 * rdpprobe: to stderr, quiet unless asked (WLOG_LEVEL still wins). */
#ifndef TS_PEER_WLOG_H
#define TS_PEER_WLOG_H

/* verbose_level: the WLOG_* level used when verbose is set. */
void peer_wlog_setup(int verbose, unsigned int verbose_level);

#endif
