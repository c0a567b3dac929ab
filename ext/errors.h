// Error types of the native core. Each one stands for one way a request can
// fail; the Python layer maps them to HTTP statuses in a single place.
#pragma once

#include <stdexcept>
#include <string>

namespace torch_serving {

// Base of every error the core raises on purpose.
struct ServeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The request body is not valid JSON or breaks a rule of the typed format.
struct DecodeError : ServeError {
  using ServeError::ServeError;
};

// The decoded arguments do not fit the model's forward signature.
struct SignatureError : ServeError {
  using ServeError::ServeError;
};

// The model raised while running on the given arguments.
struct ExecutionError : ServeError {
  using ServeError::ServeError;
};

// The model file vanished between resolution and loading.
struct ModelNotFoundError : ServeError {
  using ServeError::ServeError;
};

// The file exists but is not a loadable TorchScript module.
struct ModelLoadError : ServeError {
  using ServeError::ServeError;
};

// The model file exists, but the server cannot read it (permissions, an
// I/O error): the server's fault, not the client's.
struct ModelAccessError : ServeError {
  using ServeError::ServeError;
};

// The server ran out of memory or file descriptors for this request; a
// retry may succeed.
struct ResourceError : ServeError {
  using ServeError::ServeError;
};

// The executor already holds as many calls as it may; nothing ran.
struct BusyError : ServeError {
  using ServeError::ServeError;
};

// The call did not finish within its deadline; it runs on without its caller.
struct DeadlineError : ServeError {
  using ServeError::ServeError;
};

// A client asked for an output the model's result does not have.
struct UnknownOutputError : ServeError {
  using ServeError::ServeError;
};

// The model returned a value the protocol cannot encode.
struct EncodeError : ServeError {
  using ServeError::ServeError;
};

}  // namespace torch_serving
