// python/errors.cpp: cachemgr::Error as Python exceptions: cachemgr.Error with .code (the
// stable name of the code, "not_found") and .exit_code (the tool's exit code), and one
// subclass per code.
#include <pybind11/eval.h>
#include <pybind11/pybind11.h>

#include <array>
#include <exception>
#include <string>

#include "binding.h"
#include "cachemgr/error.h"

namespace py = pybind11;

namespace cachemgr::python {
namespace {

// ---- exceptions ------------------------------------------------------------------

// The classes are plain Python classes (defined below with py::exec) so that they pickle
// and behave like any exception: str(e) is the message.
constexpr const char* kExceptionClasses = R"py(
class Error(Exception):
    """A failure of the cache: .code is the stable name of its kind ("not_found",
    "config", "busy", ...), .exit_code the exit code the `cachemgr` tool uses for it,
    str(e) the message, which names the thing and the cause."""

    def __init__(self, message, code="internal", exit_code=1):
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code

    def __reduce__(self):
        return (type(self), (str(self), self.code, self.exit_code))


class InvalidArgumentError(Error, ValueError):
    """A malformed argument: a hostile image id, a bad size (code "invalid_argument")."""


class ConfigError(Error):
    """The configuration is invalid; the message names the key (code "config")."""


class NotFoundError(Error, LookupError):
    """An image, entry, volume or pool does not exist (code "not_found")."""


class AlreadyExistsError(Error):
    """A name is taken (code "already_exists")."""


class CorruptError(Error):
    """Integrity: a checksum mismatch, truncated data, a damaged index (code "corrupt")."""


class RefusedError(Error):
    """The image is of a kind that is never let in (code "refused")."""


class BusyError(Error):
    """Another process or host holds the lock (code "busy"): try again later."""


class BackendError(Error):
    """The storage backend (librbd/librados, the filesystem) failed (code "backend")."""


class SourceError(Error):
    """The image source (Glance, the image directory) failed (code "source")."""


class UnauthorizedError(Error):
    """The source or cephx refused the credentials (code "unauthorized")."""


class TimeoutError(Error):
    """An operation did not finish within its configured time (code "timeout")."""


class IoError(Error):
    """A local file operation failed (code "io")."""


class InternalError(Error):
    """A bug: an invariant did not hold (code "internal")."""
)py";

struct CodeClass {
  Errc code;
  const char* class_name;
};
constexpr std::array<CodeClass, 13> kCodeClasses = {{
    {Errc::kInvalidArgument, "InvalidArgumentError"},
    {Errc::kConfig, "ConfigError"},
    {Errc::kNotFound, "NotFoundError"},
    {Errc::kAlreadyExists, "AlreadyExistsError"},
    {Errc::kCorrupt, "CorruptError"},
    {Errc::kRefused, "RefusedError"},
    {Errc::kBusy, "BusyError"},
    {Errc::kBackend, "BackendError"},
    {Errc::kSource, "SourceError"},
    {Errc::kUnauthorized, "UnauthorizedError"},
    {Errc::kTimeout, "TimeoutError"},
    {Errc::kIo, "IoError"},
    {Errc::kInternal, "InternalError"},
}};

// The same mapping as the tool's (cli/main.cpp, the contract in README): services that
// shell out today and call the module tomorrow keep their handling.
int ExitCodeFor(Errc code) noexcept {
  switch (code) {
    case Errc::kInvalidArgument:
    case Errc::kConfig:
      return 2;
    case Errc::kNotFound:
      return 3;
    case Errc::kCorrupt:
    case Errc::kRefused:
      return 4;
    case Errc::kBusy:
      return 5;
    default:
      return 1;
  }
}

// Borrowed from the module's dict, which lives as long as the interpreter: the
// translator runs with the GIL held. Deliberately never released (no destructor that
// would run after the interpreter is gone).
PyObject* g_base = nullptr;
std::array<PyObject*, kCodeClasses.size()> g_classes{};

void RaiseError(const Error& e) {
  PyObject* cls = g_base;
  for (size_t i = 0; i < kCodeClasses.size(); ++i)
    if (kCodeClasses[i].code == e.code()) cls = g_classes[i];
  // A message may quote bytes that are not UTF-8 (a path): U+FFFD for them, never a
  // UnicodeDecodeError in place of the error.
  const std::string what = e.what();
  py::object message = py::reinterpret_steal<py::object>(
      PyUnicode_DecodeUTF8(what.data(), static_cast<Py_ssize_t>(what.size()), "replace"));
  py::object instance = py::reinterpret_borrow<py::object>(cls)(
      message, std::string(ErrcName(e.code())), ExitCodeFor(e.code()));
  PyErr_SetObject(cls, instance.ptr());
}

}  // namespace

void BindErrors(py::module_& m) {
  // Exceptions: defined in Python inside the module's namespace (their __module__ is
  // "cachemgr", so they pickle and print as cachemgr.NotFoundError).
  {
    py::dict ns = m.attr("__dict__");
    py::exec(kExceptionClasses, ns);
    g_base = ns["Error"].ptr();
    py::dict codes;
    for (size_t i = 0; i < kCodeClasses.size(); ++i) {
      g_classes[i] = ns[kCodeClasses[i].class_name].ptr();
      codes[py::str(std::string(ErrcName(kCodeClasses[i].code)))] = ns[kCodeClasses[i].class_name];
    }
    m.attr("ERROR_CLASSES") = codes;  // code name -> class
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      RaiseError(e);
    }
  });
}

}  // namespace cachemgr::python
