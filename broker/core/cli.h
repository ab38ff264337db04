/* cli: the admin commands on the tsbroker binary (docs/operations.md
 * "Admin commands").
 * They work on the state database directly, safely while the broker runs. */
#ifndef TS_CLI_H
#define TS_CLI_H

struct conf;

/* Runs argv[0..argc) ("server add NAME ...", ...). Returns the process exit
 * status: 0 ok, 1 failure (message on stderr), 2 usage error. */
int cli_run(const struct conf *c, int argc, char **argv);

#endif
