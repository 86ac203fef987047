/* Implementation of common/fsio.h. */
#include "common/fsio.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

sq_status sq_fs_pread_full(int fd, void *buf, size_t len, uint64_t offset, const char *path) {
  uint8_t *p = (uint8_t *)buf;
  while (len > 0) {
    ssize_t n = pread(fd, p, len, (off_t)offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sq_error_errno(path, "read failed");
    }
    if (n == 0)
      return sq_error_set(SQ_ERR_FORMAT, "%s: file is truncated (wanted %zu more bytes at offset %llu)",
                          path, len, (unsigned long long)offset);
    p += n;
    len -= (size_t)n;
    offset += (uint64_t)n;
  }
  return SQ_OK;
}

sq_status sq_fs_pwrite_full(int fd, const void *buf, size_t len, uint64_t offset, const char *path) {
  const uint8_t *p = (const uint8_t *)buf;
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sq_error_errno(path, "write failed");
    }
    p += n;
    len -= (size_t)n;
    offset += (uint64_t)n;
  }
  return SQ_OK;
}

sq_status sq_fs_fsync_dir_of(const char *path) {
  struct stat sb;
  char *copy = strdup(path);
  if (!copy) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  const char *dir = (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) ? path : dirname(copy);
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  sq_status st = SQ_OK;
  if (fd < 0) st = sq_error_errno(dir, "cannot open directory to fsync");
  else {
    if (fsync(fd) != 0 && errno != EINVAL) st = sq_error_errno(dir, "fsync of directory failed");
    close(fd);
  }
  free(copy);
  return st;
}

char *sq_fs_temp_name(const char *final_path) {
  char *c1 = strdup(final_path), *c2 = strdup(final_path);
  char *out = NULL;
  if (c1 && c2) {
    const char *dir = dirname(c1), *base = basename(c2);
    size_t len = strlen(dir) + strlen(base) + 64;
    out = (char *)malloc(len);
    /* pid + a per-process counter: two writers of one process never share a temp. */
    static _Atomic unsigned long counter;
    unsigned long n = counter++;
    if (out) snprintf(out, len, "%s/.%s.tmp.%ld.%lu", dir, base, (long)getpid(), n);
  }
  free(c1);
  free(c2);
  return out;
}

sq_status sq_fs_publish(int fd, const char *tmp_path, const char *final_path) {
  if (fsync(fd) != 0) {
    sq_status st = sq_error_errno(tmp_path, "fsync failed");
    close(fd);
    return st;
  }
  if (close(fd) != 0) return sq_error_errno(tmp_path, "close failed");
  if (rename(tmp_path, final_path) != 0) return sq_error_errno(final_path, "rename into place failed");
  return sq_fs_fsync_dir_of(final_path);
}

sq_status sq_fs_write_file_atomic(const char *final_path, const void *data, size_t len) {
  char *tmp = sq_fs_temp_name(final_path);
  if (!tmp) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  sq_status st;
  if (fd < 0) {
    st = sq_error_errno(tmp, "cannot create");
    free(tmp);
    return st;
  }
  st = sq_fs_pwrite_full(fd, data, len, 0, tmp);
  if (st != SQ_OK) {
    close(fd);
    unlink(tmp);
    free(tmp);
    return st;
  }
  st = sq_fs_publish(fd, tmp, final_path);
  if (st != SQ_OK) unlink(tmp);
  free(tmp);
  return st;
}

sq_status sq_fs_read_small_file(const char *path, size_t max_len, char **out, size_t *out_len) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sq_error_errno(path, "cannot open");
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    sq_status st = sq_error_errno(path, "cannot stat");
    close(fd);
    return st;
  }
  if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > max_len) {
    close(fd);
    return sq_error_set(SQ_ERR_FORMAT, "%s: not a regular file of at most %zu bytes", path, max_len);
  }
  size_t len = (size_t)sb.st_size;
  char *buf = (char *)malloc(len + 1);
  if (!buf) {
    close(fd);
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, len);
  }
  sq_status st = sq_fs_pread_full(fd, buf, len, 0, path);
  close(fd);
  if (st != SQ_OK) {
    free(buf);
    return st;
  }
  buf[len] = '\0';
  *out = buf;
  if (out_len) *out_len = len;
  return SQ_OK;
}

sq_status sq_fs_mkdirs(const char *path) {
  char *copy = strdup(path);
  if (!copy) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  for (char *p = copy + 1; *p; ++p) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
      sq_status st = sq_error_errno(copy, "cannot create directory");
      free(copy);
      return st;
    }
    *p = '/';
  }
  sq_status st = SQ_OK;
  if (mkdir(copy, 0755) != 0 && errno != EEXIST) st = sq_error_errno(copy, "cannot create directory");
  free(copy);
  return st;
}

char *sq_fs_join(const char *dir, const char *name) {
  size_t len = strlen(dir) + strlen(name) + 2;
  char *out = (char *)malloc(len);
  if (out) snprintf(out, len, "%s/%s", dir, name);
  return out;
}
