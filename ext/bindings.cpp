// The Python module torch_serving._C: the only file that knows pybind11.
#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/extension.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "admission.h"
#include "completions.h"
#include "errors.h"
#include "executor.h"
#include "grpc_server.h"
#include "pipeline.h"
#include "serve_codec.h"

namespace py = pybind11;
using namespace torch_serving;

namespace {

constexpr double kNoTimeout = std::numeric_limits<double>::infinity();

// Python exception classes, created once at import and kept for the life of
// the interpreter: ServeError's, then one per entry of TORCH_SERVING_ERRORS.
PyObject* serve_error_class = nullptr;
#define TORCH_SERVING_ERROR_CLASS(Name, value_error, doc) PyObject* Name##_class = nullptr;
TORCH_SERVING_ERRORS(TORCH_SERVING_ERROR_CLASS)
#undef TORCH_SERVING_ERROR_CLASS

PyObject* add_exception(py::module_& m, const char* name, PyObject* bases, const char* doc) {
  std::string qualified = std::string("torch_serving._C.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  if (!cls) throw py::error_already_set();
  m.add_object(name, py::handle(cls));  // the module takes its own reference
  return cls;
}

// Raises `cls` with the message of `error`. Messages quote what clients and
// models sent, so bytes that are not UTF-8 are replaced rather than allowed
// to turn the error into a 500.
void set_error(PyObject* cls, const std::exception& error) {
  std::string_view what = error.what();
  PyObject* message = PyUnicode_DecodeUTF8(what.data(), Py_ssize_t(what.size()), "replace");
  if (!message) return;  // the decode error stays set
  PyErr_SetObject(cls, message);
  Py_DECREF(message);
}

void register_exceptions(py::module_& m) {
  serve_error_class = add_exception(m, "ServeError", PyExc_Exception, "Base of every error the native core raises.");
#define TORCH_SERVING_ADD_ERROR(Name, value_error, doc)                                                      \
  Name##_class = add_exception(                                                                              \
      m, #Name,                                                                                              \
      value_error ? py::make_tuple(py::handle(serve_error_class), py::handle(PyExc_ValueError)).ptr()        \
                  : serve_error_class,                                                                       \
      doc);
  TORCH_SERVING_ERRORS(TORCH_SERVING_ADD_ERROR)
#undef TORCH_SERVING_ADD_ERROR

  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    }
#define TORCH_SERVING_TRANSLATE_ERROR(Name, value_error, doc) \
    catch (const Name& e) {                                   \
      set_error(Name##_class, e);                             \
    }
    TORCH_SERVING_ERRORS(TORCH_SERVING_TRANSLATE_ERROR)
#undef TORCH_SERVING_TRANSLATE_ERROR
    catch (const ServeError& e) {
      set_error(serve_error_class, e);
    }
  });
}

// Converts a Python value into the IValue a TorchScript model would return
// for it; tuples stay tuples, lists and dicts hold whatever they hold.
c10::IValue to_ivalue(py::handle value) {
  if (value.is_none()) return c10::IValue();
  if (THPVariable_Check(value.ptr())) return py::cast<at::Tensor>(value);
  if (py::isinstance<py::bool_>(value)) return py::cast<bool>(value);
  if (py::isinstance<py::int_>(value)) return py::cast<int64_t>(value);
  if (py::isinstance<py::float_>(value)) return py::cast<double>(value);
  if (py::isinstance<py::str>(value)) return py::cast<std::string>(value);
  if (py::isinstance<py::tuple>(value)) {
    std::vector<c10::IValue> items;
    for (py::handle item : value) items.push_back(to_ivalue(item));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  if (py::isinstance<py::list>(value)) {
    c10::impl::GenericList list(c10::AnyType::get());
    for (py::handle item : value) list.push_back(to_ivalue(item));
    return list;
  }
  if (py::isinstance<py::dict>(value)) {
    c10::impl::GenericDict dict(c10::AnyType::get(), c10::AnyType::get());
    for (auto item : py::reinterpret_borrow<py::dict>(value)) {
      dict.insert(to_ivalue(item.first), to_ivalue(item.second));
    }
    return dict;
  }
  throw py::type_error("cannot convert a " + std::string(py::str(py::type::handle_of(value).attr("__name__"))) +
                       " to a TorchScript value");
}

std::string_view buffer_view(const py::buffer& body, py::buffer_info& info) {
  info = body.request();
  if (info.ndim > 1 || info.itemsize != 1) throw py::type_error("body must be a bytes-like object of bytes");
  return {static_cast<const char*>(info.ptr), size_t(info.size)};
}

// Runs `call(answer)` with the GIL released: on `executor` within
// `timeout` seconds (in this thread if `quick` and the executor is idle), or
// in this thread when there is no executor, and returns the answer it
// wrote. `call` owns what it uses, and the answer is shared with it, since
// after a timeout it runs on alone.
template <typename Answer, typename Call>
Answer run_released(Executor* executor, double timeout, Call call, Placement placement = Placement::kPool) {
  auto answer = std::make_shared<Answer>();
  std::function<void()> work = [answer, call = std::move(call)] { call(*answer); };
  {
    // A call an event loop runs at once is short (Admission::event_loop_route) and never waits on
    // another thread, so it keeps the GIL: handing the GIL to another thread and taking it back
    // cost more than the call itself where other threads want it (gRPC's pollers).
    std::optional<py::gil_scoped_release> release;
    if (placement != Placement::kEventLoop) release.emplace();
    if (executor) {
      executor->run(std::move(work), timeout, placement);
    } else {
      work();
    }
  }
  return std::move(*answer);  // the call finished: nothing else uses it
}

// The time `timeout` seconds from now; never for a timeout beyond what a
// clock can hold (kNoTimeout).
Deadline deadline_after(double timeout) {
  return torch_serving::deadline_after(std::chrono::steady_clock::now(), timeout);
}

// Where a call for the model file `relative` runs: a worker's event loop
// must never wait for a slot of the executor (it runs only calls it
// checked are quick, Admission::event_loop_route), and others run where
// Pipeline::placement says. A probable reload always takes the pool.
Placement placement(const Pipeline& pipeline, const std::string& relative, size_t body_size, bool on_event_loop,
                    bool may_reload = false) {
  if (on_event_loop) return Placement::kEventLoop;
  return may_reload ? Placement::kPool : pipeline.placement(relative, body_size);
}

// Logs `message` at `level` (`warning`, `info`) through the `torch_serving`
// Python logger, from any thread.
void log_in_python(const char* level, const std::string& message) {
  py::gil_scoped_acquire gil;
  try {
    py::module_::import("logging").attr("getLogger")("torch_serving").attr(level)("%s", message);
  } catch (const py::error_already_set&) {
    // Logging itself failed (the interpreter is shutting down): the line is lost, the request is not.
  }
}

// Binds a Pipeline method that writes a JSON document about a model file (its
// metadata, its configuration), run like any other call.
auto document_binding(void (Pipeline::*write)(const std::string&, const std::string&, std::string&)) {
  return [write](std::shared_ptr<Pipeline> pipeline, const std::string& relative, const std::string& name,
                 Executor* executor, double timeout) {
    auto response = run_released<std::string>(executor, timeout, [pipeline, relative, name, write](std::string& out) {
      (pipeline.get()->*write)(relative, name, out);
    });
    return py::bytes(response);
  };
}

// Measures how long a call waited for an executor thread, from when it was
// handed over until it starts, into a PhaseTimes (if there is one).
class QueueClock {
 public:
  explicit QueueClock(const std::shared_ptr<PhaseTimes>& times)
      : times_(times.get()), handed_over_(std::chrono::steady_clock::now()) {}

  void stop() const {
    if (times_) times_->queue = std::chrono::duration<double>(std::chrono::steady_clock::now() - handed_over_).count();
  }

 private:
  PhaseTimes* times_;  // kept alive by the call, which holds its shared_ptr
  std::chrono::steady_clock::time_point handed_over_;
};

// What Pipeline::infer answers: the response and the length of its JSON part.
struct InferAnswer {
  std::string response;
  size_t json_length = 0;
};

// A request queued without a thread waiting for it (Pipeline.submit_serve,
// submit_infer), with its model, kept until its answer is taken:
// the model's scheduler must outlive the request it queues.
struct Deferred {
  std::shared_ptr<DeferredCall> call;
  ModelCache::Model model;

  // Dropped unanswered (its call cancelled), it may hold the model's last reference, in an event loop.
  ~Deferred() { release_without_waiting(std::move(model)); }
};

// An event loop's route (Admission::event_loop_route) as Python's
// ``(model, name, work)``, or None.
py::object route_tuple(std::optional<EventLoopRoute> route) {
  if (!route) return py::none();
  const char* work = route->work == EventLoopRoute::Work::kAnswer       ? "answer"
                     : route->work == EventLoopRoute::Work::kQueueServe ? "serve"
                                                                        : "infer";
  return py::make_tuple(std::move(route->model), std::move(route->name), work);
}

// Runs one request's call for the model file `relative` (a body of
// `body_size` bytes) as run_released does, where placement() puts it:
// `call(answer, deadline, file_checked)`, given the request's deadline and
// whether an event loop checked the model's file a moment ago. A call made
// in an event loop (`event_loop`, the worker's admission) is timed against
// the loop's budget; the wait for a thread goes into `times`.
template <typename Answer, typename Call>
Answer run_request(const Pipeline& pipeline, const std::string& relative, size_t body_size, Executor* executor,
                   double timeout, const std::shared_ptr<PhaseTimes>& times, const Admission* event_loop,
                   bool may_reload, Call call) {
  const bool on_event_loop = event_loop != nullptr;
  EventLoopCall timed(event_loop, relative);
  return run_released<Answer>(
      executor, timeout,
      [call = std::move(call), on_event_loop, queued = QueueClock(times),
       deadline = deadline_after(timeout)](Answer& out) {
        queued.stop();
        call(out, deadline, on_event_loop);
      },
      placement(pipeline, relative, body_size, on_event_loop, may_reload));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Native core of torch-serving: codec, model cache and request pipeline.";
  register_exceptions(m);

  py::class_<PhaseTimes, std::shared_ptr<PhaseTimes>>(
      m, "PhaseTimes", "Where one request's time went, in seconds; filled by Pipeline.serve and Pipeline.infer.")
      .def(py::init<>())
      .def_readonly("queue", &PhaseTimes::queue)
      .def_readonly("decode", &PhaseTimes::decode)
      .def_readonly("forward", &PhaseTimes::forward)
      .def_readonly("encode", &PhaseTimes::encode);

  py::class_<RequestBody, std::shared_ptr<RequestBody>>(
      m, "RequestBody", py::buffer_protocol(),
      "A request body in native memory with the parser's padding after it; a writable buffer to receive into.")
      .def(py::init<size_t>(), py::arg("size"))
      .def(py::init([](const py::buffer& data) {
             py::buffer_info info;
             return RequestBody::copy_of(buffer_view(data, info));
           }),
           py::arg("data"))
      .def("__len__", &RequestBody::size)
      .def_buffer([](RequestBody& body) {
        return py::buffer_info(body.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {py::ssize_t(body.size())}, {py::ssize_t(1)}, /*readonly=*/false);
      });
  py::implicitly_convertible<py::bytes, RequestBody>();

  py::class_<Admission, std::shared_ptr<Admission>>(
      m, "Admission",
      "Which requests a worker holds (HTTP and gRPC together), which its event loop answers itself, "
      "and the loop's time budget.")
      .def(py::init([](std::shared_ptr<Pipeline> pipeline, size_t limit) {
             return std::make_shared<Admission>(std::move(pipeline), limit,
                                                [](const std::string& m) { log_in_python("warning", m); });
           }),
           py::arg("pipeline"), py::arg("limit"))
      .def_property_readonly("limit", &Admission::limit, "Requests the worker holds at most.")
      .def("enter", &Admission::enter,
           "Count one more request and return True, or return False when the worker holds its limit.")
      .def("leave", &Admission::leave, "Stop counting a request that entered.")
      .def(
          "event_loop_route",
          [](const Admission& self, std::string_view method, std::string_view target, size_t body_size) {
            return route_tuple(self.event_loop_route(method, target, body_size));
          },
          py::arg("method"), py::arg("target"), py::arg("body_size"),
          "How the event loop takes the request ``method target`` with a body of ``body_size`` bytes without a "
          "thread: ``(model, name, work)``, the model file (relative to the root), the model's name in its "
          "errors, and ``work``: \"answer\" (at once: its model loaded, unchanged, quick and within its time "
          "budget, its body small), \"serve\" or \"infer\" (queued with Pipeline.submit_serve or submit_infer: "
          "its model loaded and unchanged, its body small, its target naming the model and nothing else). "
          "None when it takes a thread. The target is read as written.");

  py::class_<Completions, std::shared_ptr<Completions>>(
      m, "Completions",
      "The keys of requests queued by Pipeline.submit_serve or submit_infer whose answers are ready, for an event loop to poll.")
      .def(py::init<>())
      .def("fileno", &Completions::fd, "An eventfd, readable while keys wait to be taken.")
      .def("take", &Completions::take, "Return the keys of the answers ready since the last take, oldest first.");

  py::class_<Deferred>(m, "Deferred", "A request queued by Pipeline.submit_serve or submit_infer.")
      .def(
          "answer",
          [](Deferred& self, std::shared_ptr<PhaseTimes> times) {
            release_without_waiting(std::move(self.model));
            if (times) *times = self.call->times;
            if (self.call->error) std::rethrow_exception(self.call->error);
            return py::bytes(self.call->response);
          },
          py::arg("times") = nullptr,
          "Return the answer, or raise what Pipeline.serve (or infer) would have raised, once Completions gave "
          "this request's key; record its phases in ``times``.")
      .def_property_readonly(
          "json_length", [](const Deferred& self) { return self.call->json_length; },
          "Of an inference answer taken (Pipeline.submit_infer), the length of its JSON part.");

  py::class_<GrpcCall, std::shared_ptr<GrpcCall>>(
      m, "GrpcCall",
      "A gRPC call the native server hands to Python (GrpcServer.take_calls): one to answer, an inference call it "
      "answered (for metrics), or one it ran that failed.")
      .def_property_readonly("method", &GrpcCall::method, "The method's full name.")
      .def_property_readonly(
          "request", [](const GrpcCall& self) { return py::bytes(self.request()); }, "The serialized request.")
      .def_property_readonly("arrived", &GrpcCall::arrived, "When it arrived, in time.monotonic()'s seconds.")
      .def_property_readonly("client_deadline", &GrpcCall::client_deadline,
                             "The client's deadline in time.monotonic()'s seconds, or None.")
      .def_property_readonly("model", &GrpcCall::model,
                             "Of an inference call run natively: its model file, relative to the root.")
      .def_property_readonly("size", &GrpcCall::size, "Of an inference call run natively: its body's size.")
      .def_property_readonly("answered", &GrpcCall::answered, "Whether the native server answered it.")
      .def_property_readonly("elapsed", &GrpcCall::elapsed,
                             "Of an inference call run natively: the seconds from its arrival to its end.")
      .def(
          "answer",
          [](const GrpcCall& self, std::shared_ptr<PhaseTimes> times) {
            if (times) *times = self.times();
            self.raise_error();
          },
          py::arg("times") = nullptr,
          "Of an inference call run natively, as Deferred.answer: record its phases in ``times`` and raise what "
          "Pipeline.infer would have raised, if it failed.")
      .def("finish", &GrpcCall::finish, py::arg("code"), py::arg("message"), py::arg("reply"),
           py::call_guard<py::gil_scoped_release>(),
           "End the call with the gRPC status ``code`` (0: ``reply`` is the serialized reply) and ``message``; "
           "only the first finish counts.");

  py::class_<GrpcServer>(m, "GrpcServer",
                         "A worker's gRPC server (grpc++), answering inference calls for loaded models natively "
                         "and handing the rest to Python.")
      .def(py::init<std::shared_ptr<Pipeline>, std::shared_ptr<Admission>, const std::string&, const std::string&,
                    int, double, bool>(),
           py::arg("pipeline"), py::arg("admission"), py::arg("transport_library"), py::arg("address"),
           py::arg("max_receive"), py::arg("timeout"), py::arg("measured"),
           "Listen on ``address`` (SO_REUSEPORT) through the grpc++ library ``transport_library`` and serve; raises "
           "RuntimeError when the library cannot be loaded or the address bound.")
      .def("take_calls", &GrpcServer::take_calls, py::call_guard<py::gil_scoped_release>(),
           "Wait for calls for Python and return them, oldest first; [] once stopped and none is left.")
      .def("stop", &GrpcServer::stop, py::arg("grace"), py::call_guard<py::gil_scoped_release>(),
           "Refuse new calls, let those under way finish for up to ``grace`` seconds, cancel the rest; "
           "return once every call has ended.");

  py::class_<Executor>(m, "Executor", "The native threads calls run on, each within its caller's deadline.")
      .def(py::init([](size_t threads, std::shared_ptr<Admission> admission) {
             return std::make_unique<Executor>(threads, std::move(admission));
           }),
           py::arg("threads"), py::arg("admission") = nullptr,
           "Starts ``threads`` threads; a call abandoned at its deadline is counted in ``admission`` until it ends.");

  // Shared-owned: a call abandoned at its deadline holds the Pipeline until it ends.
  py::class_<Pipeline, std::shared_ptr<Pipeline>>(m, "Pipeline")
      .def(py::init([](const std::string& model_root, size_t capacity, size_t buffer, const std::string& device,
                       int64_t max_model_size, int64_t max_image_pixels, size_t instances,
                       size_t batching_instances) {
             return std::make_shared<Pipeline>(model_root, capacity, buffer, c10::Device(device), max_model_size,
                                               max_image_pixels, InstanceCounts{batching_instances, instances},
                                               [](const std::string& m) { log_in_python("warning", m); },
                                               [](const std::string& m) { log_in_python("info", m); });
           }),
           py::arg("model_root"), py::arg("capacity"), py::arg("buffer"), py::arg("device") = "cpu",
           py::arg("max_model_size") = 0, py::arg("max_image_pixels") = kDefaultMaxImagePixels,
           py::arg("instances") = 1, py::arg("batching_instances") = 1)
      .def(
          "serve",
          [](std::shared_ptr<Pipeline> pipeline, const std::string& relative, const std::string& name,
             std::shared_ptr<RequestBody> body, double invalidation_prob, Executor* executor, double timeout,
             std::shared_ptr<PhaseTimes> times, const Admission* event_loop) {
            auto response = run_request<std::string>(
                *pipeline, relative, body->size(), executor, timeout, times, event_loop, invalidation_prob > 0,
                [pipeline, relative, name, body, invalidation_prob, times](std::string& out, Deadline deadline,
                                                                             bool file_checked) {
                  pipeline->serve(relative, name, *body, invalidation_prob, out, times.get(), deadline, file_checked);
                });
            return py::bytes(response);
          },
          py::arg("relative"), py::arg("name"), py::arg("body"), py::arg("invalidation_prob") = 0.0,
          py::arg("executor") = nullptr, py::arg("timeout") = kNoTimeout, py::arg("times") = nullptr,
          py::arg("event_loop") = nullptr)
      .def(
          "infer",
          [](std::shared_ptr<Pipeline> pipeline, const std::string& relative, const std::string& name,
             std::shared_ptr<RequestBody> body, int64_t header_length, Executor* executor, double timeout,
             std::shared_ptr<PhaseTimes> times, const Admission* event_loop) {
            auto answer = run_request<InferAnswer>(
                *pipeline, relative, body->size(), executor, timeout, times, event_loop, /*may_reload=*/false,
                [pipeline, relative, name, body, header_length, times](InferAnswer& out, Deadline deadline,
                                                                         bool file_checked) {
                  out.json_length = pipeline->infer(relative, name, body, header_length, out.response, times.get(),
                                                    deadline, file_checked);
                });
            return py::make_tuple(py::bytes(answer.response), answer.json_length);
          },
          py::arg("relative"), py::arg("name"), py::arg("body"), py::arg("header_length") = -1,
          py::arg("executor") = nullptr, py::arg("timeout") = kNoTimeout, py::arg("times") = nullptr,
          py::arg("event_loop") = nullptr)
      .def(
          "submit_serve",
          [](std::shared_ptr<Pipeline> pipeline, const std::string& relative, const std::string& name,
             std::shared_ptr<RequestBody> body, double timeout, std::shared_ptr<Completions> completions,
             uint64_t key) {
            // Keeps the GIL, as a call an event loop answers does: decoding a small body and queueing
            // it is short.
            Deferred deferred{std::make_shared<DeferredCall>(), nullptr};
            deferred.model = pipeline->submit_serve(relative, name, *body, deadline_after(timeout), deferred.call,
                                                    [completions, key] { completions->add(key); });
            return deferred;
          },
          py::arg("relative"), py::arg("name"), py::arg("body"), py::arg("timeout"), py::arg("completions"),
          py::arg("key"),
          "Queue a /serve request for a loaded model without waiting for it (Admission.event_loop_route):"
          " ``completions`` gets ``key`` once the returned Deferred holds its answer.")
      .def(
          "submit_infer",
          [](std::shared_ptr<Pipeline> pipeline, const std::string& relative, const std::string& name,
             std::shared_ptr<RequestBody> body, int64_t header_length, double timeout,
             std::shared_ptr<Completions> completions, uint64_t key) {
            Deferred deferred{std::make_shared<DeferredCall>(), nullptr};
            deferred.model = pipeline->submit_infer(relative, name, body, header_length, deadline_after(timeout),
                                                    deferred.call, [completions, key] { completions->add(key); });
            return deferred;
          },
          py::arg("relative"), py::arg("name"), py::arg("body"), py::arg("header_length"), py::arg("timeout"),
          py::arg("completions"), py::arg("key"),
          "Queue a V2 inference request for a loaded model as submit_serve does; the Deferred's answer is"
          " infer's response, and its json_length the length of that response's JSON part.")
      .def("metadata", document_binding(&Pipeline::metadata), py::arg("relative"), py::arg("name"),
           py::arg("executor") = nullptr, py::arg("timeout") = kNoTimeout)
      .def("config", document_binding(&Pipeline::config), py::arg("relative"), py::arg("name"),
           py::arg("executor") = nullptr, py::arg("timeout") = kNoTimeout)
      .def(
          "cached_paths", [](Pipeline& self) { return self.cache().paths(); },
          "Return the cached model paths (relative to the root), most recently used first.")
      .def(
          "stats",
          [](Pipeline& self) {
            CacheStats stats = self.cache().stats();
            py::dict out;
            out["hits"] = stats.hits;
            out["loads"] = stats.loads;
            out["failed_loads"] = stats.failed_loads;
            out["evictions"] = stats.evictions;
            py::dict models;
            for (const auto& [path, servable] : self.cache().models()) {
              py::dict counters;
              counters["requests"] = servable->requests();
              counters["executions"] = servable->executions();
              counters["max_batch_size"] = servable->max_batch_size();
              counters["instances"] = servable->instances();
              counters["peak_running"] = servable->peak_running();
              py::dict forward_ms;
              for (const auto& [rows, seconds] : servable->forward_costs()) forward_ms[py::int_(rows)] = seconds * 1e3;
              counters["forward_ms_by_rows"] = forward_ms;
              models[py::str(path)] = counters;
            }
            out["models"] = models;
            py::dict failed;
            for (const auto& [path, error] : self.cache().load_failures()) failed[py::str(path)] = error;
            out["failed"] = failed;
            return out;
          },
          "Return the cache's counters (hits, loads, failed_loads, evictions); under models, each loaded"
          " model's requests, forward executions, max_batch_size, instances, the most forwards that ran at once"
          " (peak_running) and, with batching, the milliseconds a forward is estimated to take by its rows"
          " (forward_ms_by_rows: the least of its recent forwards of that size, each size that has run); under"
          " failed, the error of each model whose last load failed.")
      .def(
          "execution_totals",
          [](Pipeline& self) {
            py::dict out;
            for (const auto& [path, total] : self.cache().execution_totals()) out[py::str(path)] = total;
            return out;
          },
          "Return, by model file, the forward executions of every model loaded from it, dropped ones included.")
      .def(
          "unload", [](Pipeline& self, const std::string& relative) { return self.cache().erase(relative); },
          py::arg("relative"), "Drop the model file ``relative`` from the cache; return whether it was cached.")
      .def(
          "clear", [](Pipeline& self) { self.cache().clear(); }, "Drop every cached model.");

  m.def(
      "decode",
      [](const py::buffer& body, int64_t max_image_pixels) {
        py::buffer_info info;
        std::string_view view = buffer_view(body, info);
        std::vector<c10::IValue> args;
        {
          py::gil_scoped_release release;
          args = decode_arguments(view, 0, max_image_pixels);
        }
        py::list out;
        for (const auto& arg : args) out.append(torch::jit::toPyObject(arg));
        return out;
      },
      py::arg("body"), py::arg("max_image_pixels") = kDefaultMaxImagePixels,
      "Decode a /serve request body into forward's positional arguments.");

  m.def(
      "encode",
      [](py::handle value) {
        c10::IValue ivalue = to_ivalue(value);
        std::string out;
        {
          py::gil_scoped_release release;
          encode_result(ivalue, out);
        }
        return py::bytes(out);
      },
      py::arg("value"), "Encode a value as the protocol's JSON result.");
}
