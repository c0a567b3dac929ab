// Opening model files beneath the model root without a check-then-open race.
#pragma once

#include <cstdint>
#include <string>

namespace torch_serving {

// What makes a file on disk the same file: replacing or rewriting it changes
// at least one of these, and so yields a new model.
struct FileIdentity {
  uint64_t device = 0;
  uint64_t inode = 0;
  int64_t size = 0;
  int64_t mtime_ns = 0;

  bool operator==(const FileIdentity& other) const {
    return device == other.device && inode == other.inode && size == other.size && mtime_ns == other.mtime_ns;
  }
};

// An open regular file beneath the model root. Everything about the model
// (identity, size, content) is read through this one descriptor, so what
// was checked is what gets loaded.
class ModelFile {
 public:
  // Opens `relative` (a path without symlinks or `..`, as the Python layer
  // resolved it) beneath the directory `root_fd`.
  //
  // On Linux 5.6+ the kernel refuses any symlink or escape on the way
  // (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a component
  // swapped for a symlink after the Python checks is refused too.
  // Throws ModelNotFoundError (naming the model `name`) unless a regular
  // file is there, and ModelLoadError when it is larger than `max_size`
  // bytes (0: no limit).
  static ModelFile open(int root_fd, const std::string& relative, const std::string& name, int64_t max_size);

  // Reads the identity of the regular file `relative` beneath `root_fd`, as
  // open() would find it, without keeping it open: returns 0 and fills
  // `identity`; ENOENT when no regular file is there (nothing, a folder, a
  // path through a file); or the errno that refused it (a symlink: ELOOP).
  static int identify(int root_fd, const std::string& relative, FileIdentity& identity);

  ModelFile(ModelFile&& other) noexcept;
  ModelFile& operator=(ModelFile&&) = delete;
  ModelFile(const ModelFile&) = delete;
  ~ModelFile();

  int fd() const { return fd_; }
  const FileIdentity& identity() const { return identity_; }

 private:
  ModelFile(int fd, FileIdentity identity) : fd_(fd), identity_(identity) {}

  int fd_;
  FileIdentity identity_;
};

}  // namespace torch_serving
