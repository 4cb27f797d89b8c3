// tests/fuzz/fuzz_entry.h: what each fuzz target does with one input. The libFuzzer
// targets (fuzz_<name>.cpp, clang with -DCACHEMGR_FUZZ=ON) and the corpus replay test
// (corpus_test.cpp, any compiler) call the same functions, so the main build checks
// every seed too.
//
// Only cachemgr::Error is an acceptable failure: the entry functions catch it and
// return. Anything else (another exception, a broken invariant, reported by throwing
// std::logic_error) escapes: libFuzzer then reports a crash, and the replay test fails.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cachemgr::fuzz {

// The YAML config loader: ParseConfig on the bytes as text.
void ConfigOne(const uint8_t* data, size_t size);
// The image-format detector: the first 512 bytes as the head, the last 512 (when the
// input is longer) as the tail; then the claim check against every disk_format.
void FormatOne(const uint8_t* data, size_t size);
// The qcow2 reader (convert/qcow2_reader.h): the bytes as a qcow2 file whose disk is the
// size its header claims (up to 64 MiB); every byte of the disk is handed over once, or
// the reader says kCorrupt.
void Qcow2One(const uint8_t* data, size_t size);

}  // namespace cachemgr::fuzz
