#include "rbd_target.h"

#include <doctest/doctest.h>
#include <rados/librados.h>

#include <cerrno>
#include <stdexcept>
#include <string>

#include "storage/rbd/rbd_connection.h"
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

void RbdWriteBytes(const RbdBackendOptions& options, const storage::ImageRef& ref, uint64_t offset,
                   uint64_t length, uint8_t byte) {
  // Through the process's client for these options, as the backends of the test use
  // (storage/rbd/rbd_connection.h), with the image opened and closed under their lock.
  using namespace storage::rbd;
  auto connection = SharedConnection(ConnectParamsOf(options));
  IoCtxHandle io;
  ImageHandle image;
  int r = rados_ioctx_create(connection.cluster->get(), ref.pool.c_str(), io.out());
  if (r == 0 && ref.pool == options.pool)
    rados_ioctx_set_namespace(io.get(), options.namespace_.c_str());
  if (r == 0) {
    r = WithImageCtxLock(
        [&] { return rbd_open(io.get(), ref.name.c_str(), image.out(), nullptr); });
  }
  if (r == 0) {
    std::string data(length, static_cast<char>(byte));
    const ssize_t w = rbd_write(image.get(), offset, data.size(), data.data());
    r = w == static_cast<ssize_t>(length) ? rbd_flush(image.get()) : -EIO;
  }
  image.reset();
  io.reset();
  REQUIRE_MESSAGE(r == 0, "rbd write to " << ref.pool << "/" << ref.name << " failed: " << r);
}

}  // namespace cachemgr::test
