/* SIGTERM / SIGUSR1 set a flag that the layer loop polls (see stop_signal.h).
 * The handler is async-signal-safe: it only stores to volatile sig_atomic_t. */
#include "coordinator/stop_signal.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t sq_stop_flag;
static volatile sig_atomic_t sq_stop_signo;
static struct sigaction sq_stop_old_term, sq_stop_old_usr1;
static int sq_stop_installed;

static void sq_stop_handler(int sig) {
  if (!sq_stop_signo) sq_stop_signo = sig;
  sq_stop_flag = 1;
}

sq_status sq_stop_install(void) {
  if (sq_stop_installed) return SQ_OK;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = sq_stop_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGTERM, &sa, &sq_stop_old_term) != 0)
    return sq_error_errno("SIGTERM", "cannot install the stop handler");
  if (sigaction(SIGUSR1, &sa, &sq_stop_old_usr1) != 0) {
    sigaction(SIGTERM, &sq_stop_old_term, NULL);
    return sq_error_errno("SIGUSR1", "cannot install the stop handler");
  }
  sq_stop_installed = 1;
  return SQ_OK;
}

void sq_stop_uninstall(void) {
  if (!sq_stop_installed) return;
  sigaction(SIGTERM, &sq_stop_old_term, NULL);
  sigaction(SIGUSR1, &sq_stop_old_usr1, NULL);
  sq_stop_installed = 0;
}

int sq_stop_requested(void) {
  return sq_stop_flag != 0;
}

int sq_stop_signal(void) {
  return (int)sq_stop_signo;
}

void sq_stop_reset(void) {
  sq_stop_flag = 0;
  sq_stop_signo = 0;
}
