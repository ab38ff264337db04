/* fronts: the core's side of the front processes (privilege separation,
 * README "Security"). What a client sends before it is placed (X.224, TLS,
 * MCS/GCC, Client Info) is parsed by the lean engine in [rdp] fronts
 * processes started by fork+exec of this binary (tsbroker --front,
 * frontproc.h) as [rdp] front_user, with no capabilities, no_new_privs and
 * a seccomp filter, holding only the RDP certificate and key.
 *
 * The core keeps accept(), the per-address limits and the admission slots
 * (admit.h): each connection in a slot is passed to a front (round robin)
 * by SCM_RIGHTS and keeps its slot until the front says it is done with it
 * (frontmsg.h). The front asks through the seam (door.h) and the core
 * answers on a few decision threads per front (decisions block on the
 * store); a DOOR_CONNECT answer (a splice) is carried out here on the
 * core's own descriptor of the socket, so splices never live in a front.
 * A front that dies costs the handshakes in it (reported failed): it is
 * started again with a backoff, logged once with its signal, counted. */
#ifndef TS_FRONTS_H
#define TS_FRONTS_H

#include <stddef.h>
#include <stdint.h>

struct admit_conn;
struct door_ops;
struct lean_pem;
struct rdp_conf;
struct fronts;

/* Resolves the front user and keeps what the fronts need (conf, pem and
 * ops copied; restarts borrowed). Starts nothing. NULL with the reason. */
struct fronts *fronts_new(const struct rdp_conf *conf, const struct lean_pem *pem,
    const struct door_ops *ops, uint64_t *restarts, char *err, size_t n);
/* A reload: conf's live keys and pem (copied) to every running front (each
 * swaps its TLS context whole: handshakes in flight keep theirs) and to
 * those started later. 0, or -1 with the reason in err (nothing changed). */
int fronts_reload(struct fronts *f, const struct rdp_conf *conf, const struct lean_pem *pem,
    char *err, size_t n);
/* Starts the fronts and their supervisor. 0 or -1 (logged). */
int fronts_start(struct fronts *f);
/* The admission handler (admit.h handle): passes c to a front, ADMIT_KEPT;
 * 0 (reported failed) if no front takes it. */
int fronts_pass(struct fronts *f, struct admit_conn *c);
/* Stops the fronts and gives back every connection they held (reported
 * "broker stopping"); fronts_pass refuses from then on. NULL ok. */
void fronts_stop(struct fronts *f);
/* After fronts_stop and once no fronts_pass can come (admit_free). NULL ok. */
void fronts_free(struct fronts *f);

#endif
