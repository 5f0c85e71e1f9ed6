/* What a redb checkpoint asks of the disk (docs/architecture.md, "Where a checkpoint's time
 * goes"): N random 4 KiB pages of a 1 GiB file written one pwrite each, then fdatasync; and the
 * same through a shared mmap. Four rounds each, on an otherwise idle machine.
 *
 *   gcc -O2 -o /tmp/random-pages load-tests/disk-probe/random-pages.c
 *   /tmp/random-pages [DIR] [PAGES]      (default: the current directory, 11000 pages)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  int n = argc > 2 ? atoi(argv[2]) : 11000;
  size_t size = 1UL << 30;
  char path[4096], page[4096];
  snprintf(path, sizeof path, "%s/random-pages.probe", dir);
  memset(page, 7, sizeof page);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || fallocate(fd, 0, 0, size) != 0) {
    perror(path);
    return 1;
  }
  long *at = malloc(n * sizeof *at);
  srandom(1);
  for (int r = 0; r < 4; r++) {
    for (int i = 0; i < n; i++) at[i] = (random() % (size / 4096)) * 4096;
    double t0 = now_ms();
    for (int i = 0; i < n; i++)
      if (pwrite(fd, page, sizeof page, at[i]) != sizeof page) { perror("pwrite"); return 1; }
    double t1 = now_ms();
    fdatasync(fd);
    printf("pwrite %d pages: %.1f ms, then fdatasync %.1f ms\n", n, t1 - t0, now_ms() - t1);
  }
  char *m = mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) { perror("mmap"); return 1; }
  for (int r = 0; r < 4; r++) {
    for (int i = 0; i < n; i++) at[i] = (random() % (size / 4096)) * 4096;
    double t0 = now_ms();
    for (int i = 0; i < n; i++) memcpy(m + at[i], page, sizeof page);
    double t1 = now_ms();
    fdatasync(fd);
    printf("mmap   %d pages: %.1f ms, then fdatasync %.1f ms\n", n, t1 - t0, now_ms() - t1);
  }
  unlink(path);
  return 0;
}
