// tests/contract/backend_contract.h: the storage::Backend contract, as doctest cases.
//
// Every backend (local in each clone mode, RBD, the fault-injecting wrapper) must pass
// the same cases. Include this header in exactly one .cpp of a test executable and
// define, in that .cpp:
//
//   cachemgr::contract::Target cachemgr::contract::MakeTarget();
//
// MakeTarget() is called once per test case. Images the cases make are named with
// contract::UniqueName() (unique per process and per call) and removed at the end of
// each case by a Scrub guard, so a shared RBD pool is left as it was found.
//
// Semantics the cases pin down (what the engine relies on):
// - Create(ref, size) + Append + Finish makes an image of `size` bytes; bytes not
//   appended read as zeros; all-zero runs are not written (the image stays sparse).
//   A writer destroyed without Finish leaves no image behind.
// - A snapshot is taken of an image that is not written afterwards (the engine never
//   writes a cache entry after its snapshot); Open(ref, snap) reads it.
// - Remove() removes the image's snapshots itself (unprotecting them). An image whose
//   snapshot still has clones is moved to the trash instead (kTrashed): the name is
//   free at once, the clones keep reading, PurgeTrash refuses until they are gone.
// - RemoveSnapshot of a protected snapshot and UnprotectSnapshot of a snapshot with
//   clones throw kBusy.
// - Errors: kNotFound for a missing image or snapshot, kAlreadyExists for a taken name,
//   kInvalidArgument for a bad name, kBusy for a held lock.
// - Target::linked_clones: whether Clone() makes a child that depends on its parent
//   (RBD clone, qcow2 overlay: depth 1, listed in Children, parent trashed on Remove)
//   or an independent copy (reflink, sparse copy: depth 0, no children). Both kinds
//   must read the parent's data and must not change the parent when written.
//
// The cases are in contract_images.h (single images), contract_clones.h (snapshots,
// clones, copies, the trash, locks) and shared_contract.h (what hosts sharing a pool
// rely on); their helpers in contract_support.h.
#pragma once

#include "contract/contract_clones.h"  // IWYU pragma: export
#include "contract/contract_images.h"  // IWYU pragma: export
#include "contract/contract_support.h"
#include "contract/shared_contract.h"  // IWYU pragma: export
