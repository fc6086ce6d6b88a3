/*
 * scripts/test.sh --sanitize: a stand-in for an uninstrumented program (openssl, nginx) that
 * loads the instrumented provider or engine. It runs the real program (SKS_REAL_PROGRAM) with
 * the sanitizer runtime (SKS_SANITIZER_RUNTIME) preloaded. It is an executable, not a shell
 * script, so that the tests that run openssl under gdb can still do so (gdb follows the exec).
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *old = getenv("LD_PRELOAD");
    char preload[8192];

    (void)argc;
    if (snprintf(preload, sizeof(preload), "%s%s%s", SKS_SANITIZER_RUNTIME, old && *old ? ":" : "",
                 old ? old : "") >= (int)sizeof(preload)
        || setenv("LD_PRELOAD", preload, 1) != 0) {
        fprintf(stderr, "sanitize-exec: LD_PRELOAD too long\n");
        return 127;
    }
    execv(SKS_REAL_PROGRAM, argv);
    perror(SKS_REAL_PROGRAM);
    return 127;
}
