// python/binding.h: what the files of the `cachemgr` Python module share: each binds
// one part of the public API (errors.cpp, results.cpp; the Cache in cachemgr_module.cpp).
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>

namespace cachemgr::python {

// Milliseconds as a float, as every *_ms attribute and stats() give them.
inline double Ms(std::chrono::microseconds d) {
  return static_cast<double>(d.count()) / 1000.0;
}

// cachemgr.Error and its subclass per code (ERROR_CLASSES), and the translator that
// raises them for a cachemgr::Error (errors.cpp).
void BindErrors(pybind11::module_& m);

// The result types with their to_dict() and __repr__: Progress, CreateVolumeResult,
// PrefillResult, Entry, Volume, EvictAction, EvictReport, VerifyResult, Check,
// RebuildReport (results.cpp).
void BindResults(pybind11::module_& m);

}  // namespace cachemgr::python
