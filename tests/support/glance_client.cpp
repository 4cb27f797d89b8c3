#include "support/glance_client.h"

#include <curl/curl.h>

#include <cstdio>
#include <memory>
#include <stdexcept>

namespace cachemgr::test::glance {
namespace {

struct Reply {
  long status = 0;
  std::string body;
};

size_t Collect(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

// One request; `upload` is a file sent as the body of a PUT.
Reply Request(const std::string& method, const std::string& url,
              const std::vector<std::string>& headers, const std::string& body,
              const std::filesystem::path* upload = nullptr) {
  static const bool init = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  (void)init;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  CURL* c = curl.get();
  struct curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> guard(list, curl_slist_free_all);
  Reply reply;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L);
  std::unique_ptr<FILE, decltype(&fclose)> file(nullptr, fclose);
  if (upload) {
    file.reset(fopen(upload->c_str(), "rb"));
    if (!file) throw std::runtime_error("cannot open " + upload->string());
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READDATA, file.get());
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE,
                     static_cast<curl_off_t>(std::filesystem::file_size(*upload)));
  } else if (method == "POST" || method == "PATCH") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    if (method == "PATCH") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PATCH");
  } else if (method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    throw std::runtime_error(method + " " + url + ": " + curl_easy_strerror(rc));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  return reply;
}

std::string Create(const std::string& endpoint, const std::string& disk_format) {
  nlohmann::json req = {{"name", "cachemgr-test"},
                        {"disk_format", disk_format},
                        {"container_format", "bare"}};
  Reply r = Request("POST", endpoint + "/v2/images", {"Content-Type: application/json"},
                    req.dump());
  if (r.status != 201) {
    throw std::runtime_error("POST /v2/images: HTTP " + std::to_string(r.status) + ": " + r.body);
  }
  return nlohmann::json::parse(r.body).at("id").get<std::string>();
}

}  // namespace

std::string CreateImage(const std::string& endpoint, const std::string& disk_format,
                        const std::filesystem::path& file, const std::string& store) {
  std::string id = Create(endpoint, disk_format);
  std::vector<std::string> headers = {"Content-Type: application/octet-stream"};
  if (!store.empty()) headers.push_back("X-Image-Meta-Store: " + store);
  Reply r = Request("PUT", endpoint + "/v2/images/" + id + "/file", headers, "", &file);
  if (r.status != 204) {
    throw std::runtime_error("PUT /v2/images/" + id + "/file: HTTP " + std::to_string(r.status) +
                             ": " + r.body);
  }
  auto image = GetImage(endpoint, id);
  if (image.value("status", "") != "active") {
    throw std::runtime_error("image " + id + " is " + image.value("status", "") +
                             " after its upload");
  }
  return id;
}

std::string CreateQueuedImage(const std::string& endpoint, const std::string& disk_format) {
  return Create(endpoint, disk_format);
}

nlohmann::json GetImage(const std::string& endpoint, const std::string& id) {
  Reply r = Request("GET", endpoint + "/v2/images/" + id, {}, "");
  if (r.status != 200) {
    throw std::runtime_error("GET /v2/images/" + id + ": HTTP " + std::to_string(r.status));
  }
  return nlohmann::json::parse(r.body);
}

void AddLocation(const std::string& endpoint, const std::string& id, const std::string& url,
                 const std::string& store) {
  nlohmann::json metadata = nlohmann::json::object();
  if (!store.empty()) metadata["store"] = store;
  nlohmann::json patch =
      nlohmann::json::array({{{"op", "add"},
                              {"path", "/locations/-"},
                              {"value", {{"url", url}, {"metadata", metadata}}}}});
  Reply r = Request("PATCH", endpoint + "/v2/images/" + id,
                    {"Content-Type: application/openstack-images-v2.1-json-patch"}, patch.dump());
  if (r.status != 200) {
    throw std::runtime_error("PATCH /v2/images/" + id + " (add location " + url + "): HTTP " +
                             std::to_string(r.status) + ": " + r.body);
  }
}

void SetProperty(const std::string& endpoint, const std::string& id, const std::string& key,
                 const std::string& value) {
  nlohmann::json patch =
      nlohmann::json::array({{{"op", "add"}, {"path", "/" + key}, {"value", value}}});
  Reply r = Request("PATCH", endpoint + "/v2/images/" + id,
                    {"Content-Type: application/openstack-images-v2.1-json-patch"}, patch.dump());
  if (r.status != 200) {
    throw std::runtime_error("PATCH /v2/images/" + id + " (set " + key + "): HTTP " +
                             std::to_string(r.status) + ": " + r.body);
  }
}

void Deactivate(const std::string& endpoint, const std::string& id) {
  Reply r = Request("POST", endpoint + "/v2/images/" + id + "/actions/deactivate", {}, "");
  if (r.status != 204) {
    throw std::runtime_error("POST /v2/images/" + id + "/actions/deactivate: HTTP " +
                             std::to_string(r.status) + ": " + r.body);
  }
}

void DeleteImage(const std::string& endpoint, const std::string& id) {
  Reply r = Request("DELETE", endpoint + "/v2/images/" + id, {}, "");
  if (r.status != 204 && r.status != 404) {
    throw std::runtime_error("DELETE /v2/images/" + id + ": HTTP " + std::to_string(r.status));
  }
}

}  // namespace cachemgr::test::glance
