// util/url.h: the credentials part of a URL ("scheme://user:password@host/..."), which
// is never printed and never accepted in a config.
#pragma once

#include <string>

namespace cachemgr::util {

// Where the authority of `url` is ("scheme://AUTHORITY/path"); false without "://".
inline bool UrlAuthority(const std::string& url, size_t* begin, size_t* end) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return false;
  *begin = scheme + 3;
  *end = url.find_first_of("/?#", *begin);
  if (*end == std::string::npos) *end = url.size();
  return true;
}

// True when `url` carries "user:password@" (or "user@") before its host.
inline bool HasUserInfo(const std::string& url) {
  size_t begin = 0, end = 0;
  if (!UrlAuthority(url, &begin, &end)) return false;
  const size_t at = url.find('@', begin);
  return at != std::string::npos && at < end;
}

// `url` without its user info: safe to print.
inline std::string WithoutUserInfo(const std::string& url) {
  size_t begin = 0, end = 0;
  if (!UrlAuthority(url, &begin, &end) || end == begin) return url;
  const size_t at = url.rfind('@', end - 1);
  if (at == std::string::npos || at < begin) return url;
  return url.substr(0, begin) + url.substr(at + 1);
}

}  // namespace cachemgr::util
