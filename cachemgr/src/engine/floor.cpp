// The free-space floor (cache.min_free_percent / min_free_gb, cache.on_no_room): room made
// by LRU eviction before a miss writes an image, and the floor restored after the limits
// (the eviction pass, and the limits enforced after a fill). The decision is
// policy::PlanFloor; evicting is EvictEntry, as for the limits.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>

#include "engine/cache_impl.h"
#include "util/hex.h"

namespace cachemgr::engine {

namespace {
// Candidates read per query while choosing victims least recently used first.
constexpr size_t kFloorPage = 64;

policy::FloorLimits FloorOf(const CacheOptions& c) { return {c.min_free_percent, c.min_free_gb}; }

std::string MiB(uint64_t bytes) { return std::to_string((bytes + (1u << 19)) >> 20) + " MiB"; }
}  // namespace

policy::FloorPlan CacheImpl::PlanFloorNow(const storage::SpaceInfo& space, uint64_t extra,
                                          uint64_t incoming, int64_t exclude_id, bool partial,
                                          std::map<int64_t, index::EntryRow>* rows) {
  std::vector<index::LruRow> page;
  size_t pos = 0;
  bool last_page = false;
  auto next = [&]() -> std::optional<policy::FloorCandidate> {
    if (pos == page.size()) {
      if (last_page) return std::nullopt;
      page = WithIndex([&](index::Index& ix) {
        return page.empty() ? ix.ReadyByLastUsed(backend_kind_, location_, kFloorPage)
                            : ix.ReadyByLastUsed(backend_kind_, location_, kFloorPage,
                                                 page.back().last_used, page.back().id);
      });
      pos = 0;
      last_page = page.size() < kFloorPage;
      if (page.empty()) return std::nullopt;
    }
    const auto r = page[pos++];
    policy::FloorCandidate c{r.id, 0, r.id != exclude_id};
    auto row = WithIndex([&](index::Index& ix) { return ix.GetEntry(r.id); });
    if (!row || row->pinned || row->state != index::State::kReady) return c;
    // An entry with clones is deferred (kept for them) when evicted: it frees nothing.
    bool cloned = false;
    try {
      cloned = !backend_->Children(EntrySnap(*row)).empty();
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
    }
    if (!cloned) {
      c.freed_bytes = row->allocated_bytes ? row->allocated_bytes : row->virtual_size;
      (*rows)[r.id] = *row;
    }
    return c;
  };
  // The backend's figure plus what this process freed and the figure may not show yet.
  policy::FreeSpace now{space.total_bytes, space.avail_bytes + extra};
  return policy::PlanFloor(now, FloorOf(options_.cache), incoming, next, partial);
}

CacheImpl::RoomMade CacheImpl::MakeRoomForFill(const source::ImageMeta& meta, bool with_volume,
                                               bool cacheable) {
  const auto& c = options_.cache;
  if (!FloorOf(c).enabled()) return {cacheable ? Room::kCached : Room::kUncached, {}};
  // One miss at a time decides and reserves, so two cannot both take the last room.
  const FloorReservations reservations(use_lock_dir_ / "floor");
  const auto deciding = reservations.Decide(std::chrono::minutes(5));
  const uint64_t reserved = reservations.Others(meta.id);
  const uint64_t image = meta.virtual_size.value_or(meta.size.value_or(0));
  // A volume that is a full copy of its entry takes the image's bytes a second time.
  const bool volume_copies =
      c.max_clone_depth <= 0 || (options_.backend.type == BackendType::kLocal &&
                                 options_.backend.local.clone_mode == CloneMode::kCopy);
  const uint64_t cached = image + (with_volume && volume_copies ? image : 0);
  const auto space = backend_->FreeSpace();
  std::map<int64_t, index::EntryRow> rows;
  // Too large for the cache (max_size_gb): only the volume is made, and must fit.
  auto plan = PlanFloorNow(space, 0, reserved + (cacheable ? cached : image), 0, false, &rows);
  Room room = cacheable ? Room::kCached : Room::kUncached;
  if (!plan.holds && cacheable && with_volume && c.on_no_room == OnNoRoom::kUncached) {
    // Not cached: the volume alone still takes the image's bytes above the floor.
    rows.clear();
    auto alone = PlanFloorNow(space, 0, reserved + image, 0, false, &rows);
    if (alone.holds) {
      plan = alone;
      room = Room::kUncached;
    }
  }
  if (!plan.holds) {
    const bool tried_uncached = !cacheable || (with_volume && c.on_no_room == OnNoRoom::kUncached);
    throw Error(
        Errc::kBackend,
        "image " + meta.id + ": no room on " + location_ + " above the free-space floor, " +
            (!cacheable       ? "not even as an uncached volume (over cache.max_size_gb)"
             : tried_uncached ? "neither cached nor as an uncached volume"
                              : "refused") +
            ": " + MiB(plan.avail_before) + " free of " + MiB(space.total_bytes) + ", floor " +
            MiB(plan.floor_bytes) + ", the image needs " + MiB(cached) +
            (tried_uncached ? " cached (" + MiB(image) + " uncached)" : "") +
            (reserved ? ", other fills in progress hold " + MiB(reserved) : "") +
            ", evicting every entry that can go frees " + MiB(plan.freeable_bytes) + " (short by " +
            MiB(plan.shortfall) + "; entries kept for clones free nothing): free space " +
            "or lower cache.min_free_percent / cache.min_free_gb" +
            (c.on_no_room == OnNoRoom::kRefuse ? " (or set cache.on_no_room: uncached)" : ""));
  }
  const std::string reason = "below the free-space floor " + MiB(plan.floor_bytes) + " with " +
                             MiB(room == Room::kCached ? cached : image) + " of image " + meta.id;
  for (int64_t id : plan.victims) {
    auto it = rows.find(id);
    if (it != rows.end()) EvictEntry(it->second, "evict", reason, false);
  }
  if (room == Room::kUncached) {
    log_->info(
        "no room to cache the image above the free-space floor, serving it uncached "
        "image={} bytes={} avail={} floor={}",
        meta.id, cached, plan.avail_before, plan.floor_bytes);
  }
  // The misses of one image share its fill (counted once); each uncached volume is its own.
  const std::string key = room == Room::kCached ? meta.id : meta.id + "/uncached/" + util::RandomHex(8);
  return {room, reservations.Reserve(key, room == Room::kCached ? cached : image)};
}

bool CacheImpl::WritesImage(policy::ClonePlan plan) const {
  // A thin clone takes next to nothing; a copy (or a flatten before the clone) the image,
  // and so does every clone of the local backend in clone_mode copy.
  return plan != policy::ClonePlan::kClone ||
         (options_.backend.type == BackendType::kLocal &&
          options_.backend.local.clone_mode == CloneMode::kCopy);
}

FloorReservations::Hold CacheImpl::MakeRoomForVolume(const index::EntryRow& entry,
                                                     policy::ClonePlan plan, uint64_t size) {
  const auto& c = options_.cache;
  if (!FloorOf(c).enabled() || !WritesImage(plan)) return {};
  const FloorReservations reservations(use_lock_dir_ / "floor");
  const auto deciding = reservations.Decide(std::chrono::minutes(5));
  const std::string key = entry.image_id + "/volume/" + util::RandomHex(8);
  const uint64_t reserved = reservations.Others(key);
  const auto space = backend_->FreeSpace();
  std::map<int64_t, index::EntryRow> rows;
  // The entry the volume is made from stays.
  const auto room = PlanFloorNow(space, 0, reserved + size, entry.id, false, &rows);
  if (!room.holds) {
    throw Error(Errc::kBackend,
                "image " + entry.image_id + ": no room on " + location_ +
                    " above the free-space floor for a full copy of the cached image: " +
                    MiB(room.avail_before) + " free of " + MiB(space.total_bytes) + ", floor " +
                    MiB(room.floor_bytes) + ", the copy needs " + MiB(size) +
                    (reserved ? ", other fills in progress hold " + MiB(reserved) : "") +
                    ", evicting every other entry that can go frees " +
                    MiB(room.freeable_bytes) + " (short by " + MiB(room.shortfall) +
                    "): free space, or lower cache.min_free_percent / cache.min_free_gb");
  }
  const std::string reason = "below the free-space floor " + MiB(room.floor_bytes) + " with " +
                             MiB(size) + " of a copy of image " + entry.image_id;
  for (int64_t id : room.victims) {
    auto it = rows.find(id);
    if (it != rows.end()) EvictEntry(it->second, "evict", reason, false);
  }
  return reservations.Reserve(key, size);
}

void CacheImpl::RestoreFloor(uint64_t freed, int64_t exclude_id, bool dry_run,
                             std::vector<EvictAction>* actions) {
  if (!FloorOf(options_.cache).enabled()) return;
  // RBD: a removed image's space shows in the pool's MAX AVAIL only seconds later, so df is
  // read once and what the evictions free is added here, never re-read in a loop.
  const auto space = backend_->FreeSpace();
  std::map<int64_t, index::EntryRow> rows;
  const auto plan = PlanFloorNow(space, freed, 0, exclude_id, true, &rows);
  const std::string reason = "below the free-space floor " + MiB(plan.floor_bytes);
  for (int64_t id : plan.victims) {
    auto it = rows.find(id);
    if (it == rows.end()) continue;
    const auto& row = it->second;
    if (dry_run) {
      if (actions) {
        actions->push_back(
            {"evict", row.image_id, row.cache_name, AccountedBytes(row), reason, false});
      }
      continue;
    }
    auto action = EvictEntry(row, "evict", reason, false);
    if (actions) actions->push_back(action);
  }
  if (!plan.holds) {
    log_->warn(
        "free-space floor cannot hold: the rest is busy or kept for clones "
        "location={} avail={} floor={} short={}",
        location_, plan.avail_after, plan.floor_bytes, plan.shortfall);
  }
}

std::optional<Check> CacheImpl::FloorCheck() {
  const auto limits = FloorOf(options_.cache);
  if (!limits.enabled()) return std::nullopt;
  Check c{"free space", false, "", ""};
  try {
    const auto space = backend_->FreeSpace();
    const auto floor = policy::FloorBytes({space.total_bytes, space.avail_bytes}, limits);
    c.ok = space.avail_bytes >= floor;
    c.detail = location_ + ": " + MiB(space.avail_bytes) + " free of " + MiB(space.total_bytes) +
               ", floor " + MiB(floor) + (c.ok ? "" : ": below the floor");
    if (!c.ok) {
      c.fix =
          "run `cachemgr evict` (it evicts least recently used entries until the floor "
          "holds), free space, or lower cache.min_free_percent / cache.min_free_gb";
    }
  } catch (const Error& e) {
    c.detail = e.what();
    c.fix = "check the backend section (RBD: the client needs mon 'allow r' for `ceph df`)";
  }
  return c;
}

}  // namespace cachemgr::engine
