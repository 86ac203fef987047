/* The stop flag: raise(SIGUSR1) and raise(SIGTERM) set it and record which
 * signal; and a child process that polls the flag, sent SIGTERM by its parent
 * through kill(2), exits with the documented requeue code 75 (the value is
 * written here literally, not taken from cli.h, so a changed constant fails). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/cli.h"
#include "coordinator/stop_signal.h"
#include "test_util.h"

static void test_raise(void) {
  sq_stop_reset();
  SQ_EXPECT(sq_stop_install() == SQ_OK);
  SQ_EXPECT_EQ_INT(sq_stop_requested(), 0);
  SQ_EXPECT_EQ_INT(sq_stop_signal(), 0);
  raise(SIGUSR1);
  SQ_EXPECT_EQ_INT(sq_stop_requested(), 1);
  SQ_EXPECT_EQ_INT(sq_stop_signal(), SIGUSR1);
  raise(SIGTERM); /* the first signal is the one recorded */
  SQ_EXPECT_EQ_INT(sq_stop_signal(), SIGUSR1);
  sq_stop_reset();
  SQ_EXPECT_EQ_INT(sq_stop_requested(), 0);
  raise(SIGTERM);
  SQ_EXPECT_EQ_INT(sq_stop_requested(), 1);
  SQ_EXPECT_EQ_INT(sq_stop_signal(), SIGTERM);
  sq_stop_uninstall();
  sq_stop_reset();
  /* After uninstall the old disposition is back: ignore, then raise. */
  signal(SIGUSR1, SIG_IGN);
  raise(SIGUSR1);
  SQ_EXPECT_EQ_INT(sq_stop_requested(), 0);
  signal(SIGUSR1, SIG_DFL);
}

static void test_child_exit_code(void) {
  SQ_EXPECT_EQ_INT(SQ_EXIT_REQUEUE, 75);
  int ready[2];
  SQ_EXPECT(pipe(ready) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(ready[0]);
    sq_stop_reset();
    if (sq_stop_install() != SQ_OK) _exit(3);
    if (write(ready[1], "r", 1) != 1) _exit(4);
    /* The "layer loop": work until a stop is requested, at most 20 s. */
    for (int i = 0; i < 20000 && !sq_stop_requested(); i++) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    _exit(sq_stop_requested() ? SQ_EXIT_REQUEUE : 5);
  }
  close(ready[1]);
  char c;
  SQ_EXPECT(read(ready[0], &c, 1) == 1);
  close(ready[0]);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  SQ_EXPECT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 75, "child status %d, want exit 75",
                status);
}

int main(void) {
  test_raise();
  test_child_exit_code();
  return sq_test_result("test_restart_signal");
}
