// cachemgr prefill: cache many images ahead of a rollout, N at a time.
//
// A worker pool pulls image ids from one queue; each image is retried with
// exponential backoff on errors that may pass (source, backend, timeouts, a truncated
// download), never on ones that will not (not found, refused, bad id). On a terminal
// the images in flight each get a progress bar, plus one for the whole run; otherwise
// one plain line per finished image, so logs and CI output stay readable.
#include <re2/re2.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common.h"

namespace cachemgr::cli {
namespace {

struct PrefillArgs {
  std::vector<std::string> image_ids;
  std::string from_file;
  bool all = false;
  std::string filter;
  int concurrency = 4;
  int retries = 2;
  int retry_base_ms = 1000;
};

enum class Status { kQueued, kRunning, kDone, kFailed };

struct Item {
  std::string image_id;
  Status status = Status::kQueued;
  std::string stage;
  uint64_t done_bytes = 0, total_bytes = 0;
  int attempts = 0;
  PrefillResult result;
  std::optional<Errc> error_code;
  std::string error;
  std::chrono::microseconds elapsed{};
};

bool Retryable(Errc code) {
  switch (code) {
    case Errc::kBusy:
    case Errc::kBackend:
    case Errc::kSource:
    case Errc::kTimeout:
    case Errc::kIo:
    case Errc::kCorrupt:  // a truncated or damaged download: the next one may be whole
      return true;
    default:
      return false;
  }
}

std::string OutcomeText(const Item& item) {
  if (item.status == Status::kFailed) return "failed";
  if (item.result.outcome == PrefillOutcome::kFresh) return "skipped";
  return std::string(PrefillOutcomeName(item.result.outcome));
}

std::vector<std::string> ReadIds(std::istream& in) {
  std::vector<std::string> ids;
  std::string line;
  while (std::getline(in, line)) {
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    const auto e = line.find_last_not_of(" \t\r");
    ids.push_back(line.substr(b, e - b + 1));
  }
  return ids;
}

std::vector<std::string> CollectIds(Context& ctx, const PrefillArgs& args) {
  std::vector<std::string> ids = args.image_ids;
  if (!args.from_file.empty()) {
    if (args.from_file == "-") {
      auto more = ReadIds(std::cin);
      ids.insert(ids.end(), more.begin(), more.end());
    } else {
      std::ifstream in(args.from_file);
      if (!in)
        throw Error{Errc::kInvalidArgument, "--from-file " + args.from_file + ": cannot read"};
      auto more = ReadIds(in);
      ids.insert(ids.end(), more.begin(), more.end());
    }
  }
  if (args.all) {
    // RE2, not std::regex: a pattern like (a*)*b backtracks for seconds per id in a
    // backtracking engine; RE2 runs in time linear in the id, with bounded memory.
    std::unique_ptr<RE2> filter;
    if (!args.filter.empty()) {
      RE2::Options opts;
      opts.set_log_errors(false);
      opts.set_max_mem(8 << 20);
      filter = std::make_unique<RE2>(args.filter, opts);
      if (!filter->ok()) {
        throw Error{Errc::kInvalidArgument,
                    "--filter '" + args.filter + "': not a valid RE2 regular expression: " +
                        filter->error() + " (see https://github.com/google/re2/wiki/Syntax)"};
      }
    }
    for (auto& id : ctx.cache().SourceImages())
      if (!filter || RE2::PartialMatch(id, *filter)) ids.push_back(id);
  } else if (!args.filter.empty()) {
    throw Error{Errc::kInvalidArgument, "--filter: only with --all"};
  }
  // The same id twice would only wait on its own fill: keep the first.
  std::set<std::string> seen;
  std::vector<std::string> unique;
  for (auto& id : ids)
    if (seen.insert(id).second) unique.push_back(id);
  return unique;
}

// One prefill: the images, the workers that fill them, the bars, the report.
class PrefillRun {
 public:
  // `start`: when the command began, so the time reported includes opening the cache and
  // listing the source, not only the fills.
  PrefillRun(Context& ctx, const PrefillArgs& args, std::vector<std::string> ids,
      std::chrono::steady_clock::time_point start)
      : ctx_(ctx), args_(args), tty_(ProgressOnTerminal()), start_(start) {
    for (auto& id : ids) {
      items_.emplace_back();
      items_.back().image_id = id;
    }
  }

  int Go() {
    Cache& cache = ctx_.cache();
    const int workers = std::max(1, std::min<int>(args_.concurrency, items_.size()));
    std::vector<std::thread> pool;
    for (int i = 0; i < workers; ++i) pool.emplace_back([&] { Worker(cache); });
    std::thread painter;
    if (tty_) painter = std::thread([&] { Paint(); });
    for (auto& t : pool) t.join();
    {
      std::lock_guard lock(mu_);
      finished_all_ = true;
    }
    cv_.notify_all();
    if (painter.joinable()) painter.join();
    wall_ = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                  start_);
    return Report();
  }

 private:
  void Worker(Cache& cache) {
    for (;;) {
      const size_t i = next_.fetch_add(1);
      if (i >= items_.size()) return;
      Item& item = items_[i];
      const auto t0 = std::chrono::steady_clock::now();
      {
        std::lock_guard lock(mu_);
        item.status = Status::kRunning;
      }
      PrefillWithRetries(cache, item);
      std::lock_guard lock(mu_);
      item.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::steady_clock::now() - t0);
      ++finished_;
      const std::string line = FinishedLine(item);
      if (tty_)
        pending_.push_back(line);
      else
        Say(ctx_.json ? std::cerr : std::cout, line);
    }
  }

  // Prefills one image, again after a retryable failure (up to --retries, backing off);
  // the item records the result or the last error.
  void PrefillWithRetries(Cache& cache, Item& item) {
    for (int attempt = 1;; ++attempt) {
      {
        std::lock_guard lock(mu_);
        item.attempts = attempt;
      }
      try {
        PrefillResult r = cache.Prefill(item.image_id, [&](const Progress& p) {
          std::lock_guard lock(mu_);
          item.stage = p.stage;
          item.done_bytes = p.done_bytes;
          item.total_bytes = p.total_bytes;
        });
        std::lock_guard lock(mu_);
        item.result = r;
        item.status = Status::kDone;
        return;
      } catch (const Error& e) {
        if (attempt <= args_.retries && Retryable(e.code())) {
          const int delay_ms =
              std::min(30000, args_.retry_base_ms * (1 << std::min(attempt - 1, 14)));
          {
            std::lock_guard lock(mu_);
            Say(std::cerr, "image " + item.image_id + ": attempt " + std::to_string(attempt) +
                               " failed (" + e.what() + "); retrying in " +
                               std::to_string(delay_ms) + " ms");
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
          continue;
        }
        std::lock_guard lock(mu_);
        item.status = Status::kFailed;
        item.error_code = e.code();
        item.error = e.what();
        return;
      } catch (const std::exception& e) {
        std::lock_guard lock(mu_);
        item.status = Status::kFailed;
        item.error_code = Errc::kInternal;
        item.error = e.what();
        return;
      }
    }
  }

  // Prints a line that stays; on a terminal the painter prints it above the bars.
  void Say(std::ostream& out, const std::string& line) {
    if (tty_) {
      pending_.push_back(line);
      return;
    }
    out << line << std::endl;
  }

  std::string FinishedLine(const Item& item) const {
    char head[32];
    std::snprintf(head, sizeof head, "[%zu/%zu] ", finished_, items_.size());
    std::string line = head + item.image_id + ": ";
    if (item.status == Status::kFailed) return line + "failed: " + item.error;
    line += OutcomeText(item);
    if (item.result.outcome == PrefillOutcome::kFresh) line += " (already cached and fresh)";
    line += ", " + HumanBytes(item.result.virtual_size) + ", " + HumanDuration(item.elapsed);
    if (item.attempts > 1) line += ", " + std::to_string(item.attempts) + " attempts";
    return line;
  }

  // Redraws the bars on stderr: finished lines scroll up, bars stay at the bottom.
  void Paint() {
    std::unique_lock lock(mu_);
    int drawn = 0;
    for (;;) {
      const bool last = finished_all_;
      std::string out;
      if (drawn) out += "\033[" + std::to_string(drawn) + "F\033[J";
      for (auto& l : pending_) out += l + "\n";
      pending_.clear();
      drawn = 0;
      if (!last) {
        uint64_t done_bytes = 0;
        for (const auto& item : items_) {
          if (item.status == Status::kDone) done_bytes += item.result.bytes_downloaded;
          if (item.status != Status::kRunning) continue;
          char line[256];
          std::snprintf(line, sizeof line, "  %-36.36s %-8.8s %s %10s\n", item.image_id.c_str(),
                        item.stage.empty() ? "start" : item.stage.c_str(),
                        Bar(item.done_bytes, item.total_bytes, 24).c_str(),
                        HumanBytes(item.done_bytes).c_str());
          out += line;
          ++drawn;
          done_bytes += item.done_bytes;
        }
        char overall[256];
        std::snprintf(overall, sizeof overall, "overall %zu/%zu images %s %s downloaded\n",
                      finished_, items_.size(), Bar(finished_, items_.size(), 30).c_str(),
                      HumanBytes(done_bytes).c_str());
        out += overall;
        ++drawn;
      }
      std::fputs(out.c_str(), stderr);
      std::fflush(stderr);
      if (last) return;
      cv_.wait_for(lock, std::chrono::milliseconds(150));
    }
  }

  // What the items came to, over every item.
  struct Totals {
    size_t failed = 0;
    std::map<std::string, size_t> by_outcome;
    uint64_t downloaded = 0, total_size = 0;
    std::set<Errc> codes;
    size_t count(const char* outcome) const {
      auto it = by_outcome.find(outcome);
      return it == by_outcome.end() ? 0 : it->second;
    }
  };

  int Report() {
    Totals t;
    for (const auto& item : items_) {
      ++t.by_outcome[OutcomeText(item)];
      if (item.status == Status::kFailed) {
        ++t.failed;
        t.codes.insert(*item.error_code);
        continue;
      }
      t.downloaded += item.result.bytes_downloaded;
      t.total_size += item.result.virtual_size;
    }
    if (ctx_.json) {
      PrintJsonReport(t);
    } else {
      PrintTableReport(t);
    }
    std::cout.flush();
    if (t.failed == 0) return kExitOk;
    ReportFailures(t);
    // One shared exit code (3 not found, 4 refused or corrupt, ...) is kept; mixed: 1.
    std::set<int> exits;
    for (Errc code : t.codes) exits.insert(ExitCodeFor(code));
    return exits.size() == 1 ? *exits.begin() : kExitFailed;
  }

  void PrintJsonReport(const Totals& t) const {
    nlohmann::json results = nlohmann::json::array();
    for (const auto& item : items_) {
      nlohmann::json r = {{"image_id", item.image_id},
                          {"outcome", OutcomeText(item)},
                          {"attempts", item.attempts},
                          {"ms", Millis(item.elapsed)}};
      if (item.status == Status::kFailed) {
        r["error"] = {{"code", ErrcName(*item.error_code)}, {"message", item.error}};
      } else {
        r["virtual_size"] = item.result.virtual_size;
        r["bytes_downloaded"] = item.result.bytes_downloaded;
      }
      results.push_back(std::move(r));
    }
    PrintJson({{"results", results},
               {"totals",
                {{"images", items_.size()},
                 {"filled", t.count("filled")},
                 {"replaced", t.count("replaced")},
                 {"direct", t.count("direct")},
                 {"skipped", t.count("skipped")},
                 {"failed", t.failed},
                 {"bytes_downloaded", t.downloaded},
                 {"virtual_bytes", t.total_size},
                 {"ms", Millis(wall_)}}}});
  }

  void PrintTableReport(const Totals& t) const {
    Table table({"IMAGE", "OUTCOME", "SIZE", "DOWNLOADED", "TIME", "ATTEMPTS"},
                {false, false, true, true, true, true});
    for (const auto& item : items_) {
      const bool ok = item.status != Status::kFailed;
      table.Add({item.image_id, OutcomeText(item), ok ? HumanBytes(item.result.virtual_size) : "-",
                 ok ? HumanBytes(item.result.bytes_downloaded) : "-", HumanDuration(item.elapsed),
                 std::to_string(item.attempts)});
    }
    std::cout << '\n' << table.Render();
    std::cout << "total: " << items_.size() << " images: " << t.count("filled") << " filled, "
              << t.count("replaced") << " replaced, " << t.count("direct") << " direct, "
              << t.count("skipped") << " skipped (fresh), " << t.failed << " failed; "
              << HumanBytes(t.downloaded) << " downloaded, " << HumanBytes(t.total_size)
              << " cached, in " << HumanDuration(wall_) << " (concurrency "
              << std::max(1, std::min<int>(args_.concurrency, items_.size())) << ")\n";
  }

  // Each failed image and the count on stderr and in the log file.
  void ReportFailures(const Totals& t) {
    for (const auto& item : items_) {
      if (item.status != Status::kFailed) continue;
      const std::string line = "cachemgr prefill: image " + item.image_id + " failed: " + item.error;
      std::cerr << OneLine(line) << '\n';
      ctx_.LogToFile(line);
    }
    const std::string summary = "cachemgr prefill: " + std::to_string(t.failed) + " of " +
                                std::to_string(items_.size()) + " images failed";
    std::cerr << summary << '\n';
    ctx_.LogToFile(summary);
  }

  Context& ctx_;
  const PrefillArgs& args_;
  const bool tty_;
  const std::chrono::steady_clock::time_point start_;
  std::vector<Item> items_;  // fixed size: workers hold references into it
  std::atomic<size_t> next_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  size_t finished_ = 0;
  bool finished_all_ = false;
  std::vector<std::string> pending_;
  std::chrono::microseconds wall_{};
};

int RunPrefill(Context& ctx, const PrefillArgs& args) {
  const auto start = std::chrono::steady_clock::now();
  if (args.concurrency < 1) throw Error{Errc::kInvalidArgument, "--concurrency: must be >= 1"};
  if (args.retries < 0) throw Error{Errc::kInvalidArgument, "--retries: must be >= 0"};
  auto ids = CollectIds(ctx, args);
  if (ids.empty()) {
    if (args.all) {
      if (ctx.json)
        PrintJson({{"results", nlohmann::json::array()}, {"totals", {{"images", 0}}}});
      else
        std::cout << "no active images in the source"
                  << (args.filter.empty() ? "" : " match --filter") << '\n';
      return kExitOk;
    }
    throw Error{Errc::kInvalidArgument,
                "no images given: name IMAGE_IDs, use --from-file FILE|- or --all"};
  }
  PrefillRun run(ctx, args, std::move(ids), start);
  return run.Go();
}

}  // namespace

void AddPrefill(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<PrefillArgs>();
  auto* sub = app.add_subcommand("prefill",
                                 "cache images ahead of use: IMAGE_ID..., --from-file F|-, --all");
  sub->footer(
      "Cache images ahead of use without making volumes. Images come from the arguments, a "
      "file (one id a line, # comments), stdin (--from-file -) or every active image in the "
      "source (--all, optionally --filter REGEX). Entries already cached and fresh are "
      "skipped. Ends with a table (image, outcome, size, time) and totals; exits non-zero "
      "when any image failed, naming each on stderr (the failures' own code when they share "
      "one, else 1).");
  sub->add_option("IMAGE_ID", args->image_ids, "image ids to cache");
  sub->add_option("--from-file,-f", args->from_file, "read image ids from FILE, or stdin for '-'");
  sub->add_flag("--all,-a", args->all, "every active image in the source");
  sub->add_option("--filter", args->filter,
                  "with --all: only ids matching this regex (RE2 syntax)");
  sub->add_option("--concurrency,-j", args->concurrency, "images filled at once (default 4)");
  sub->add_option("--retries", args->retries,
                  "extra attempts for an image after a transient error (default 2)");
  sub->add_option("--retry-base-ms", args->retry_base_ms,
                  "first backoff delay; doubles each attempt, at most 30 s (default 1000)");
  sub->callback([&ctx, args] { ctx.run = [&ctx, args] { return RunPrefill(ctx, *args); }; });
}

}  // namespace cachemgr::cli
