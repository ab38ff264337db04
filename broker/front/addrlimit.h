/* addrlimit: what one client address may cost the RDP endpoint, per broker:
 * connections in a handshake at once, and new placements per minute (a
 * sliding minute, estimated from this minute's count and the last one's,
 * weighted by how much of the last one is still in the window). Networks
 * on the exempt list are never limited (an office NAT).
 *
 * Pure: no I/O, no clock (callers pass monotonic ms). Bounded memory: a
 * fixed table of ADDRLIMIT_SLOTS addresses; an address whose counts have
 * run out frees its slot, and when every slot near its hash is busy the
 * address is not limited (counted in addrlimit_untracked): a flood from
 * that many addresses at once is max_handshakes' business. One short lock;
 * any thread. */
#ifndef TS_ADDRLIMIT_H
#define TS_ADDRLIMIT_H

#include <stddef.h>
#include <stdint.h>

#define ADDRLIMIT_SLOTS		8192
#define ADDRLIMIT_NETS_MAX	64
#define ADDRLIMIT_MINUTE_MS	60000

enum addrlimit_error {
	ADDRLIMIT_OK = 0,
	ADDRLIMIT_EHANDSHAKES = -1,	/* max_handshakes reached for the address */
	ADDRLIMIT_EPLACEMENTS = -2,	/* placements_per_minute reached */
	ADDRLIMIT_EINVAL = -3,		/* not a numeric address / a bad network */
	ADDRLIMIT_ENOMEM = -4,
};

/* One network of the exempt list: IPv4 as IPv4-mapped IPv6. */
struct addrlimit_net {
	uint8_t addr[16];
	int prefix;			/* 0..128 */
};

struct addrlimit_conf {
	int max_handshakes;		/* per address at once; 0: no limit */
	int placements_per_minute;	/* per address; 0: no limit */
	struct addrlimit_net exempt[ADDRLIMIT_NETS_MAX];
	int nexempt;
	uint64_t seed;			/* hash seed (random, so slots cannot be aimed at) */
};

struct addrlimit;

/* Parses a list of networks ("10.0.0.0/8 192.168.1.7, fd00::/8"; spaces
 * or commas; a bare address is one host) into c->exempt. 0, or
 * ADDRLIMIT_EINVAL with the bad entry named in err. */
int addrlimit_exempt_parse(struct addrlimit_conf *c, const char *list, char *err, size_t n);

/* NULL when memory is short. conf is copied. */
struct addrlimit *addrlimit_new(const struct addrlimit_conf *conf);
/* New limits and exempt list (a reload; conf copied, the seed kept): the
 * counts so far stay and are judged by the new limits from now on. */
void addrlimit_set_conf(struct addrlimit *a, const struct addrlimit_conf *conf);
void addrlimit_free(struct addrlimit *a);

/* A connection from addr (numeric) begins: 0 (counted: end it with
 * addrlimit_handshake_end), or ADDRLIMIT_EHANDSHAKES (not counted). Exempt,
 * untracked or unparsable addresses pass uncounted: *counted says whether
 * to call addrlimit_handshake_end. */
int addrlimit_handshake_begin(struct addrlimit *a, const char *addr, int64_t now_ms,
    int *counted);
void addrlimit_handshake_end(struct addrlimit *a, const char *addr, int64_t now_ms);

/* Takes one of addr's new placements of the sliding minute: 0, or
 * ADDRLIMIT_EPLACEMENTS. *counted as above; give a taken one back with
 * addrlimit_placement_return (the logon was no new placement). */
int addrlimit_placement_take(struct addrlimit *a, const char *addr, int64_t now_ms,
    int *counted);
void addrlimit_placement_return(struct addrlimit *a, const char *addr, int64_t now_ms);

/* 1 if a refusal of addr may be logged now (at most one line per address a
 * second, as loglimit.h), *quiet the refusals left out since its last one;
 * 0 if this one is left out. */
int addrlimit_log_pass(struct addrlimit *a, const char *addr, int64_t now_ms,
    uint64_t *quiet);

/* Addresses seen that had no free slot (not limited), since addrlimit_new. */
uint64_t addrlimit_untracked(struct addrlimit *a);
/* Slots holding counts at now_ms (tests). */
int addrlimit_used(struct addrlimit *a, int64_t now_ms);

#endif
