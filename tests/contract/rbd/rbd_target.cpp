#include "rbd_target.h"

#include <doctest/doctest.h>
#include <rados/librados.h>

#include <stdexcept>

#include "support/cluster.h"

namespace cachemgr::test {

RbdBackendOptions FixtureRbdOptions() {
  RbdBackendOptions o;
  o.conf = CephConf().string();
  o.client = "admin";
  o.pool = "volumes";
  o.namespace_ = "test-" + std::to_string(::getpid());
  o.connect_timeout_s = 20;
  o.op_timeout_s = 60;
  return o;
}

void RbdWriteBytes(const RbdBackendOptions& options, const storage::ImageRef& ref,
                   uint64_t offset, uint64_t length, uint8_t byte) {
  rados_t cluster = nullptr;
  REQUIRE(rados_create2(&cluster, "ceph", ("client." + options.client).c_str(), 0) == 0);
  rados_ioctx_t io = nullptr;
  rbd_image_t image = nullptr;
  int r = rados_conf_read_file(cluster, options.conf.c_str());
  if (r == 0) r = rados_connect(cluster);
  if (r == 0) r = rados_ioctx_create(cluster, ref.pool.c_str(), &io);
  if (r == 0 && ref.pool == options.pool) rados_ioctx_set_namespace(io, options.namespace_.c_str());
  if (r == 0) r = rbd_open(io, ref.name.c_str(), &image, nullptr);
  if (r == 0) {
    std::string data(length, static_cast<char>(byte));
    const ssize_t w = rbd_write(image, offset, data.size(), data.data());
    r = w == static_cast<ssize_t>(length) ? rbd_flush(image) : -EIO;
  }
  if (image) rbd_close(image);
  if (io) rados_ioctx_destroy(io);
  rados_shutdown(cluster);
  REQUIRE_MESSAGE(r == 0, "rbd write to " << ref.pool << "/" << ref.name << " failed: " << r);
}

}  // namespace cachemgr::test
