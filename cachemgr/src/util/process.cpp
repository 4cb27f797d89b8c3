#include "util/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cachemgr/error.h"

extern char** environ;

namespace cachemgr::util {
namespace {

constexpr size_t kStderrTail = 64 * 1024;

std::string Joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() {
    if (pipe2(fd, O_CLOEXEC) != 0) {
      throw Error(Errc::kIo, std::string("pipe: ") + std::strerror(errno));
    }
  }
  ~Pipe() {
    for (int f : fd) {
      if (f >= 0) close(f);
    }
  }
  void CloseRead() {
    if (fd[0] >= 0) close(fd[0]);
    fd[0] = -1;
  }
  void CloseWrite() {
    if (fd[1] >= 0) close(fd[1]);
    fd[1] = -1;
  }
};

}  // namespace

RunResult Run(const std::vector<std::string>& argv, const RunOptions& options) {
  if (argv.empty()) throw Error(Errc::kInternal, "Run: empty argv");
  Pipe out, err;

  // fork + exec rather than posix_spawn: resource limits must be set in the child only.
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  int exec_errno_pipe[2];
  if (pipe2(exec_errno_pipe, O_CLOEXEC) != 0) {
    throw Error(Errc::kIo, std::string("pipe: ") + std::strerror(errno));
  }
  // Read before fork: in the child, getppid() differs from this once the parent died,
  // which is how the child sees a death that came before PR_SET_PDEATHSIG was armed.
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(exec_errno_pipe[0]);
    close(exec_errno_pipe[1]);
    throw Error(Errc::kIo, "cannot fork to run " + argv[0] + ": " + std::strerror(errno));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls from here on.
    // Its own process group, so a timeout kills whatever it started too; and it dies
    // with the tool (kill -9 included) instead of writing on as an orphan.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(out.fd[1], 1);
    dup2(err.fd[1], 2);
    if (options.cpu_limit_s > 0) {
      struct rlimit rl = {options.cpu_limit_s, options.cpu_limit_s + 1};
      setrlimit(RLIMIT_CPU, &rl);
    }
    if (options.address_space_mb > 0) {
      rlim_t bytes = static_cast<rlim_t>(options.address_space_mb) * 1024 * 1024;
      struct rlimit rl = {bytes, bytes};
      setrlimit(RLIMIT_AS, &rl);
    }
    execvp(cargv[0], cargv.data());
    int e = errno;
    ssize_t ignored = write(exec_errno_pipe[1], &e, sizeof e);
    (void)ignored;
    _exit(127);
  }
  // Also set here: a timeout may come before the child ran its own setpgid.
  setpgid(pid, pid);
  close(exec_errno_pipe[1]);
  out.CloseWrite();
  err.CloseWrite();

  int exec_errno = 0;
  ssize_t n = read(exec_errno_pipe[0], &exec_errno, sizeof exec_errno);
  close(exec_errno_pipe[0]);
  if (n == sizeof exec_errno) {
    waitpid(pid, nullptr, 0);
    throw Error(Errc::kIo, "cannot run " + argv[0] + ": " + std::strerror(exec_errno));
  }

  RunResult result;
  auto deadline = std::chrono::steady_clock::now() + options.timeout;
  struct pollfd fds[2] = {{out.fd[0], POLLIN, 0}, {err.fd[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[16384];
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      break;
    }
    int r = poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = read(fds[i].fd, buf, sizeof buf);
      if (got <= 0) {
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      if (i == 0) {
        size_t room = options.max_output_bytes > result.out.size()
                          ? options.max_output_bytes - result.out.size()
                          : 0;
        result.out.append(buf, std::min<size_t>(room, static_cast<size_t>(got)));
      } else {
        result.err.append(buf, static_cast<size_t>(got));
        if (result.err.size() > 2 * kStderrTail) {
          result.err.erase(0, result.err.size() - kStderrTail);
        }
      }
    }
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  if (result.err.size() > kStderrTail) result.err.erase(0, result.err.size() - kStderrTail);
  return result;
}

std::string RunChecked(const std::vector<std::string>& argv, const RunOptions& options,
                       int code_on_failure) {
  RunResult r = Run(argv, options);
  auto code = static_cast<Errc>(code_on_failure);
  if (r.timed_out) {
    throw Error(Errc::kTimeout, "'" + Joined(argv) + "' did not finish within " +
                                    std::to_string(options.timeout.count()) + " s");
  }
  if (r.exit_code != 0) {
    std::string how = r.signal ? "was killed by signal " + std::to_string(r.signal)
                               : "exited with " + std::to_string(r.exit_code);
    std::string err = r.err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    throw Error(code, "'" + Joined(argv) + "' " + how + (err.empty() ? "" : ": " + err));
  }
  return r.out;
}

}  // namespace cachemgr::util
