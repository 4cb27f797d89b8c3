#include <cstdio>

int main() {
  std::fprintf(stderr, "cachemgr: not built yet\n");
  return 1;
}
