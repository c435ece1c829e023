#include "tests/support/process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace switchyard::test {

namespace {

using clock_type = std::chrono::steady_clock;

[[noreturn]] void throw_errno(const std::string& what, int err) {
    throw std::runtime_error(what + ": " + std::strerror(err));
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

std::uint64_t proc_status_kib(pid_t pid, std::string_view key) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.size() > key.size() && line.compare(0, key.size(), key) == 0 &&
            line[key.size()] == ':') {
            return std::strtoull(line.c_str() + key.size() + 1, nullptr, 10);
        }
    }
    return 0;
}

}  // namespace

bool on_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path != nullptr ? path : "");
    for (std::string dir; std::getline(dirs, dir, ':');) {
        if (!dir.empty() && ::access((dir + "/" + program).c_str(), X_OK) == 0) {
            return true;
        }
    }
    return false;
}

std::uint16_t free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        throw_errno("free_port: socket", errno);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        int err = errno;
        ::close(fd);
        throw_errno("free_port: bind", err);
    }
    ::close(fd);
    return ntohs(addr.sin_port);
}

// ---------------------------------------------------------------------------
// temp_dir

temp_dir::temp_dir() {
    std::string pattern = "/tmp/switchyard-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
        throw_errno("temp_dir: mkdtemp", errno);
    }
    path_ = pattern;
}

temp_dir::~temp_dir() {
    if (!path_.empty()) {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
}

temp_dir::temp_dir(temp_dir&& other) noexcept : path_(std::exchange(other.path_, {})) {}

temp_dir& temp_dir::operator=(temp_dir&& other) noexcept {
    if (this != &other) {
        if (!path_.empty()) {
            std::error_code ignored;
            std::filesystem::remove_all(path_, ignored);
        }
        path_ = std::exchange(other.path_, {});
    }
    return *this;
}

std::string temp_dir::file(const std::string& name) const {
    return path_ + "/" + name;
}

std::string temp_dir::write(const std::string& name, const std::string& content) const {
    const std::string full = file(name);
    std::filesystem::create_directories(std::filesystem::path(full).parent_path());
    std::ofstream out(full, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();
    if (!out) {
        throw std::runtime_error("temp_dir: cannot write " + full);
    }
    return full;
}

// ---------------------------------------------------------------------------
// process

process::process(std::string program, std::vector<std::string> args, env_list env)
    : stdout_path_(dir_.file("stdout")), stderr_path_(dir_.file("stderr")) {
    std::vector<std::string> argv_storage;
    argv_storage.push_back(program);
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);

    std::map<std::string, std::string> vars;
    for (char** e = environ; *e != nullptr; ++e) {
        std::string_view entry(*e);
        auto eq = entry.find('=');
        if (eq != std::string_view::npos) {
            vars[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
        }
    }
    for (auto& [k, v] : env) {
        vars[k] = v;
    }
    std::vector<std::string> env_storage;
    for (auto& [k, v] : vars) {
        env_storage.push_back(k + "=" + v);
    }
    std::vector<char*> envp;
    for (auto& e : env_storage) {
        envp.push_back(e.data());
    }
    envp.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, stdout_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, stderr_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    // The child starts with default signal handling and an empty mask, even
    // if the test runner blocks or ignores signals.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigset_t all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    const bool search = program.find('/') == std::string::npos;
    int err =
        search ? ::posix_spawnp(&pid_, program.c_str(), &actions, &attr, argv.data(), envp.data())
               : ::posix_spawn(&pid_, program.c_str(), &actions, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (err != 0) {
        pid_ = -1;
        throw_errno("process: cannot spawn " + program, err);
    }
}

process process::switchyard(std::vector<std::string> args, env_list env) {
    return process(SWITCHYARD_BINARY, std::move(args), std::move(env));
}

process::~process() {
    if (pid_ > 0 && status_ < 0) {
        ::kill(pid_, SIGKILL);
        reap(true);
    }
}

process::process(process&& other) noexcept
    : dir_(std::move(other.dir_)),
      stdout_path_(std::move(other.stdout_path_)),
      stderr_path_(std::move(other.stderr_path_)),
      pid_(std::exchange(other.pid_, -1)),
      status_(std::exchange(other.status_, -1)) {}

process& process::operator=(process&& other) noexcept {
    if (this != &other) {
        if (pid_ > 0 && status_ < 0) {
            ::kill(pid_, SIGKILL);
            reap(true);
        }
        dir_ = std::move(other.dir_);
        stdout_path_ = std::move(other.stdout_path_);
        stderr_path_ = std::move(other.stderr_path_);
        pid_ = std::exchange(other.pid_, -1);
        status_ = std::exchange(other.status_, -1);
    }
    return *this;
}

// True once the child is reaped (status_ set).
bool process::reap(bool block) {
    if (pid_ <= 0) {
        return true;
    }
    if (status_ >= 0) {
        return true;
    }
    for (;;) {
        int status = 0;
        pid_t r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r == 0) {
            return false;
        }
        if (r < 0) {
            status_ = 255;  // not our child any more (ECHILD): nothing to report
            return true;
        }
        if (WIFEXITED(status)) {
            status_ = WEXITSTATUS(status);
        } else if (WIFSIGNALED(status)) {
            status_ = 128 + WTERMSIG(status);
        } else {
            continue;  // stopped/continued: keep waiting
        }
        return true;
    }
}

bool process::running() {
    return !reap(false);
}

int process::wait(std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    for (;;) {
        if (reap(false)) {
            return status_;
        }
        if (clock_type::now() >= deadline) {
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

void process::signal(int sig) {
    if (pid_ > 0 && status_ < 0) {
        ::kill(pid_, sig);
    }
}

std::string process::output() const {
    return read_file(stdout_path_);
}
std::string process::errors() const {
    return read_file(stderr_path_);
}

// ---------------------------------------------------------------------------

testing::AssertionResult wait_for_port(std::uint16_t port, std::chrono::milliseconds deadline) {
    const auto end = clock_type::now() + deadline;
    for (;;) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            return testing::AssertionFailure() << "wait_for_port: socket: " << std::strerror(errno);
        }
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
        ::close(fd);
        if (ok) {
            return testing::AssertionSuccess();
        }
        if (clock_type::now() >= end) {
            return testing::AssertionFailure() << "nothing listening on 127.0.0.1:" << port
                                               << " after " << deadline.count() << " ms";
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

std::uint64_t peak_rss_kib(pid_t pid) {
    return proc_status_kib(pid, "VmHWM");
}
std::uint64_t rss_kib(pid_t pid) {
    return proc_status_kib(pid, "VmRSS");
}

}  // namespace switchyard::test
