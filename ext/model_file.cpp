// openat2-based opening of model files, with a plain O_NOFOLLOW fallback.
#include "model_file.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.h"

namespace torch_serving {
namespace {

int open_beneath(int root_fd, const std::string& relative) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused
  // below as not a regular file.
  const uint64_t flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
  struct open_how how = {};
  how.flags = flags;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, root_fd, relative.c_str(), &how, sizeof how));
  if (fd < 0 && errno == ENOSYS) {
    // Kernels before 5.6: only the last component is protected.
    fd = ::openat(root_fd, relative.c_str(), static_cast<int>(flags));
  }
  return fd;
}

// Opens `relative` beneath the root as a regular file and returns its
// descriptor, its status in `st`; or returns -1 with errno saying why
// (ENOENT for something there that is not a regular file).
int open_regular(int root_fd, const std::string& relative, struct stat& st) {
  const int fd = open_beneath(root_fd, relative);
  if (fd < 0) return -1;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) return fd;
  ::close(fd);
  errno = ENOENT;
  return -1;
}

// Throws the error that `open_errno`, from opening the model `name`, means.
[[noreturn]] void fail_open(int open_errno, const std::string& name) {
  switch (open_errno) {
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      throw ResourceError("the server could not open model file " + name + ": " + std::strerror(open_errno));
    case EACCES:
    case EPERM:
    case EIO:
      throw ModelAccessError("the server may not read model file " + name + ": " + std::strerror(open_errno));
    default:
      // ENOENT, ENOTDIR, and the refusals of symlinks (ELOOP) and escapes
      // (EXDEV): nothing the client may reach is there.
      throw ModelNotFoundError("no model file " + name + " under the model root");
  }
}

FileIdentity identity_of(const struct stat& st) {
  return FileIdentity{uint64_t(st.st_dev), uint64_t(st.st_ino), int64_t(st.st_size),
                      int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

}  // namespace

int ModelFile::identify(int root_fd, const std::string& relative, FileIdentity& identity) {
  struct stat st;
  const int fd = open_regular(root_fd, relative, st);
  if (fd < 0) return errno == ENOTDIR ? ENOENT : errno;
  ::close(fd);
  identity = identity_of(st);
  return 0;
}

ModelFile ModelFile::open(int root_fd, const std::string& relative, const std::string& name, int64_t max_size) {
  struct stat st;
  const int fd = open_regular(root_fd, relative, st);
  if (fd < 0) fail_open(errno, name);
  if (max_size > 0 && st.st_size > max_size) {
    ::close(fd);
    throw ModelLoadError(name + " is " + std::to_string(st.st_size) + " bytes, over the model size limit of " +
                         std::to_string(max_size) + " bytes");
  }
  return ModelFile(fd, identity_of(st));
}

ModelFile::ModelFile(ModelFile&& other) noexcept : fd_(other.fd_), identity_(other.identity_) { other.fd_ = -1; }

ModelFile::~ModelFile() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace torch_serving
