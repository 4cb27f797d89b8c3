// cachemgr/options.h: everything the library can be told, as plain structs.
//
// Each field says its unit and default. The YAML config (config.h) fills these; an
// embedding program may fill them directly. Field names follow the YAML keys.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cachemgr {

enum class BackendType { kLocal, kRbd };
enum class SourceType { kGlance, kFile };
// How the local backend makes a volume from a cached base.
//   kQcow2:   a qcow2 overlay backed by the base (instant, needs the base kept).
//   kReflink: FICLONE copy-on-write copy (instant, independent; btrfs/xfs only).
//   kCopy:    a sparse full copy (slow, independent, works everywhere).
//   kAuto:    reflink where the filesystem supports it, else qcow2.
enum class CloneMode { kAuto, kQcow2, kReflink, kCopy };
// What counts against cache.max_size_gb: the virtual (provisioned) size of each entry,
// or the bytes it actually allocates (smaller for sparse images, costs a stat call).
enum class SizeAccounting { kProvisioned, kAllocated };
// What a miss does when the free-space floor (cache.min_free_*) cannot hold with the image
// cached: kUncached fetches it straight into the volume (only if the volume alone fits
// above the floor, else it is refused); kRefuse fails the call (exit 1), naming the figures.
enum class OnNoRoom { kUncached, kRefuse };

struct LocalBackendOptions {
  std::string root = "/var/lib/cachemgr";  // holds _base/ (cache entries) and volumes/
  CloneMode clone_mode = CloneMode::kAuto;
  std::string owner;        // user that owns bases and volumes (e.g. "qemu"); empty: unchanged
  std::string group;        // group of bases and volumes; empty: unchanged
  uint32_t mode = 0644;     // permission bits of bases and volumes
  // A raw image from the file source becomes a base by reflink, else by copy. true also
  // allows a hard link of the image store's file (no copy, for an NFS `_base` prefill):
  // the base then shares the source's inode, so its identity is recorded and any change
  // refuses the entry; it is copied anyway when owner/group/mode would change the file.
  bool hardlink_prefill = false;
};

struct RbdBackendOptions {
  std::string conf = "/etc/ceph/ceph.conf";
  std::string client = "admin";   // client name without the "client." prefix
  std::string keyring;            // empty: whatever ceph.conf says
  std::string pool = "volumes";   // pool of cache entries and volumes
  std::string namespace_;         // RBD namespace inside the pool; empty: the default
  uint32_t queue_depth = 16;      // aio writes in flight during an import (memory ~ depth x 4 MiB)
  uint32_t connect_timeout_s = 10;  // monitors must answer within this, else kTimeout
  uint32_t op_timeout_s = 60;       // rados/librbd operation timeout (osd and mon op timeouts)
  // Names this host in lock cookies (Options::host_id is copied here); empty: hostname.
  std::string host_id;
  // Features of images and clones this backend creates. Clones are format 2 / clone v2.
  std::vector<std::string> features = {"layering", "exclusive-lock", "object-map", "fast-diff",
                                       "deep-flatten"};
};

struct BackendOptions {
  BackendType type = BackendType::kLocal;
  LocalBackendOptions local;
  RbdBackendOptions rbd;
};

// Keystone v3 authentication (source.glance.auth). Either an application credential
// (id + secret: the recommended way for services) or a password (a user and a project,
// each by id or by name + domain). Secrets never appear in logs, errors or output.
struct KeystoneAuthOptions {
  std::string auth_url;  // e.g. https://keystone.example:5000/v3; empty: no Keystone
  std::string application_credential_id;
  std::string application_credential_secret;
  std::string username;
  std::string user_id;
  std::string password;
  std::string user_domain_name = "Default";
  std::string user_domain_id;
  std::string project_name;
  std::string project_id;
  std::string project_domain_name = "Default";
  std::string project_domain_id;
  std::string region_name;           // of the catalog's image endpoint; empty: any
  std::string interface = "public";  // public, internal or admin
  // Seconds before expiry a token is renewed; a renewal also follows a 401.
  uint32_t renew_before_s = 60;
  // Files the credentials were read from (the config, a clouds.yaml, a secure.yaml):
  // `doctor` warns when one is readable by group or others. Filled by the config loader.
  std::vector<std::string> credential_files;
  bool enabled() const { return !auth_url.empty(); }
};

struct GlanceSourceOptions {
  // Glance v2 API base URL. Empty with Keystone auth: the catalog's image endpoint (of
  // auth.region_name and auth.interface).
  std::string endpoint = "http://127.0.0.1:9292";
  KeystoneAuthOptions auth;
  // A named cloud of clouds.yaml whose auth, region, interface and CA are used when
  // `auth` is not set ($OS_CLOUD when this is empty and no auth or token is set).
  std::string cloud;
  std::string token;          // X-Auth-Token; empty: $OS_AUTH_TOKEN; empty too: none sent
  std::string ca_file;        // CA bundle for https; empty: the system's. TLS is always verified.
  std::string client_cert;    // PEM client certificate for https (Glance and Keystone); optional
  std::string client_key;     // its PEM private key; empty: in client_cert
  uint32_t timeout_s = 30;    // connect timeout, and the low-speed limit window of a download
  uint32_t retries = 3;       // retries on 5xx and dropped connections (resumed with Range)
  // Pools a direct clone may come from (an rbd://<fsid>/<pool>/<image id>/<snap> location
  // on the backend's cluster). Unset: the pools of Glance's rbd stores, as
  // GET /v2/info/stores/detail tells (none when it does not); an empty list: never.
  std::optional<std::vector<std::string>> direct_pools;
  // KiB/s. Each download must finish within timeout_s + size / this (size: the declared
  // one, else source.max_image_gb): a trickle fails with kTimeout. Lower it for slow links.
  uint32_t min_rate_kib_s = 1024;
  // Pages of 200 images an image listing may take (prefill --all); more is kSource.
  uint32_t max_list_pages = 10000;
};

struct FileSourceOptions {
  std::string dir = "/var/lib/glance/images";  // files named by image id
};

struct SourceOptions {
  SourceType type = SourceType::kGlance;
  GlanceSourceOptions glance;
  FileSourceOptions file;
  // GiB; the most one image's stored bytes may be: a larger declared size is refused, and
  // a download with no declared size stops there (kRefused). 0 = conversion.max_virtual_size_gb.
  double max_image_gb = 0;
  // Accept images with no digest the tool can check (no md5 checksum, no os_hash in
  // sha256/sha384/sha512). Risk: their bytes are cached and cloned as the source sent
  // them, corrupt or tampered; default false refuses them (exit 4).
  bool allow_unverified = false;
};

struct CacheOptions {
  double max_size_gb = 0;        // GiB; 0 = unlimited (Cinder image_volume_cache_max_size_gb)
  uint64_t max_count = 0;        // entries; 0 = unlimited (image_volume_cache_max_count)
  int max_clone_depth = 5;       // <= 0: every volume is a full copy (rbd_max_clone_depth)
  SizeAccounting size_accounting = SizeAccounting::kProvisioned;
  // Glance bumps updated_at on metadata edits too, so only a changed checksum replaces an
  // entry unless this is set.
  bool stale_on_updated_at = false;
  // A hit re-asks the source whether the entry is still current at most this often per
  // entry (seconds; 0 = on every hit). The eviction pass checks every entry regardless.
  uint32_t source_check_interval_s = 60;
  // Hosts sharing a pool: a hit tells the others of its use of an entry at most this often
  // (seconds; 0 = on every hit), so the pool-wide LRU order is this coarse.
  uint32_t share_use_interval_s = 60;
  // The index keeps events (for `cachemgr stats`) this many days and at most this many
  // rows (0 = no limit); older ones are deleted by the eviction pass and, a batch at a
  // time, as events are recorded. A year of a busy host is about 5 million events.
  uint32_t events_max_age_days = 90;
  uint64_t events_max_rows = 1000000;
  // Free-space floor beside max_size_gb / max_count: the filesystem of the local root, or
  // the RBD pool's MAX AVAIL (`ceph df`), is kept at least max(min_free_percent of its
  // total, min_free_gb) free. A miss evicts least recently used entries first so its fill
  // does not cross the floor; the eviction pass restores it. Both 0 = off (the default;
  // no free-space query is made). Percent 0..99; GiB >= 0.
  double min_free_percent = 0;
  double min_free_gb = 0;
  OnNoRoom on_no_room = OnNoRoom::kUncached;
  // The pinned flatten (part of the pass's flatten step): evicted entries kept for their
  // clones hold their bytes until the clones are gone; the pass flattens up to this many
  // of this host's clones per pass, the entries that free the most bytes per byte copied
  // first, so those entries can be purged. 0 = off (the default): a flatten turns a thin
  // clone into a full copy, writing about the bytes it frees (more for an entry with many
  // clones), which pays only where space held in the trash matters more than that I/O.
  // RBD only (an online flatten); the local backend's flatten swaps the file under a VM.
  uint32_t flatten_pinned_max = 0;
  // Seconds the pinned flatten may take per pass: no flatten starts after it (the running
  // one finishes; the first always starts, so every pass makes progress).
  uint32_t flatten_pinned_budget_s = 300;
  // The instant miss (RBD only; off by default): a miss of an image the source keeps as a
  // file every host reaches at one path (the file source on a shared directory), raw or
  // plain qcow2, makes the entry at once as an import of that file (librbd's import-only
  // migration) and clones the volume from it (plan "instant"); the bytes are copied in
  // the background, checked against the image's digests as they are, and the import
  // committed. Until then every host that opens the volume reads through that path, and
  // its bytes are served before they are checked: a mismatch marks the entry bad and the
  // volumes made from it are named by doctor, stats and verify. Other images: a normal
  // miss. The local backend ignores it.
  bool instant_miss = false;
  // Glance images for the instant miss: librbd cannot read Glance itself (no token, and
  // Glance refuses HEAD), so the process running the import relays the image's bytes
  // over HTTP, on this IPv4 address of this host (a free port per import; librbd cannot
  // dial IPv6 literals). Every host that may open a volume during the import must reach it, and
  // the process must keep running while they read (docs/architecture.md). Empty (the
  // default): Glance images are normal misses.
  std::string instant_relay;
};

struct ConversionOptions {
  std::string dir = "/var/lib/cachemgr/conversion";  // staging files for non-raw images
  double max_virtual_size_gb = 1024;  // GiB; larger images are refused before conversion
  std::string qemu_img = "qemu-img";  // program name or path
  uint32_t timeout_s = 3600;          // wall-clock limit of one qemu-img run
  uint32_t cpu_limit_s = 1800;        // RLIMIT_CPU of qemu-img (hostile images can spin)
  uint64_t address_space_mb = 4096;   // RLIMIT_AS of qemu-img for info/check (MiB)
};

struct LogOptions {
  std::string level = "info";  // trace | debug | info | warn | error | critical | off
  std::string file;            // empty: stderr only (CLI); a path: rotating file as well
  uint32_t max_file_mb = 10;   // rotate the file at this size
  uint32_t max_files = 3;      // rotated files kept
};

struct Options {
  std::string index = "/var/lib/cachemgr/index.db";  // SQLite index; its folder holds locks
  // Names this host in the cluster's locks and records ([A-Za-z0-9._-], 1..64 chars);
  // empty: the hostname. Hosts sharing a pool (or a local root) must have distinct ids.
  std::string host_id;
  BackendOptions backend;
  SourceOptions source;
  CacheOptions cache;
  ConversionOptions conversion;
  LogOptions log;
};

}  // namespace cachemgr
