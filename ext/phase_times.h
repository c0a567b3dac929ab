// Where one request's time went, for metrics: apart from the pipeline, since
// the gRPC transport (grpc_transport.h), which knows nothing of torch, carries
// it too.
#pragma once

namespace torch_serving {

// Where one request's time went, in seconds, for metrics: waiting for an
// executor thread, decoding the body, fetching and running the model, and
// encoding the answer. A phase that did not run stays 0.
struct PhaseTimes {
  double queue = 0;
  double decode = 0;
  double forward = 0;
  double encode = 0;
};

}  // namespace torch_serving
