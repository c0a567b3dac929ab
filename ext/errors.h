// Error types of the native core. Each one stands for one way a request can
// fail; the Python layer maps them to HTTP statuses in a single place.
//
// TORCH_SERVING_ERRORS is the one list of them: it declares the C++ types
// below, and bindings.cpp makes from it the Python classes, their docstrings
// and the translation of each C++ error into its class.
#pragma once

#include <stdexcept>

// X(Name, also a Python ValueError, what it means)
#define TORCH_SERVING_ERRORS(X)                                                                              \
  X(DecodeError, true, "The request body is not valid JSON or breaks a rule of the typed format.")          \
  X(SignatureError, false, "The arguments do not fit forward's signature.")                                 \
  X(ExecutionError, false, "The model raised while running.")                                               \
  X(ModelNotFoundError, false, "The model file does not exist.")                                            \
  X(ModelLoadError, false, "The file is not a loadable TorchScript module.")                                \
  X(ModelAccessError, false, "The model file exists, but the server cannot read it.")                       \
  X(ResourceError, false, "The server ran out of memory or file descriptors for the request.")              \
  X(UnknownOutputError, false, "A requested output is not among the model's outputs.")                      \
  X(DeadlineError, false, "The call did not finish within its timeout; it runs on without its caller.")     \
  X(EncodeError, false, "The model returned a value the protocol cannot encode.")

namespace torch_serving {

// Base of every error the core raises on purpose.
struct ServeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#define TORCH_SERVING_DECLARE_ERROR(Name, value_error, doc) \
  struct Name : ServeError {                                \
    using ServeError::ServeError;                           \
  };
TORCH_SERVING_ERRORS(TORCH_SERVING_DECLARE_ERROR)
#undef TORCH_SERVING_DECLARE_ERROR

// DeadlineError's message for a call that ran past its deadline (one still
// queued then says so instead).
inline constexpr const char* kRanPastDeadline = "the call did not finish in time";

}  // namespace torch_serving
