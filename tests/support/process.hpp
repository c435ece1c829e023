#pragma once
// Child processes, temporary directories and ports for the integration tests.
//
// `process` spawns a program (posix_spawn) with stdout and stderr captured to
// files, and kills (SIGKILL) and reaps it in its destructor if still running.
// `temp_dir` is a fresh directory under /tmp, removed with its contents.
//
// Threads: one object, one thread at a time. Every wait takes a deadline.
// Failure: constructors throw std::runtime_error naming the call that failed.

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace switchyard::test {

// True when `program` is an executable file in a directory of $PATH.
bool on_path(const std::string& program);

// promtool (Debian package `prometheus`) checks the /metrics exposition. A
// test that needs it is skipped where it is missing, except under the
// README's test command: scripts/dev.sh test installs it and sets
// SWITCHYARD_REQUIRE_PROMTOOL=1, and there a missing promtool fails the test
// rather than letting it pass unchecked. (A macro: GTEST_SKIP and FAIL
// return from the test body.)
#define SWITCHYARD_NEED_PROMTOOL()                                                              \
    do {                                                                                        \
        if (!::switchyard::test::on_path("promtool")) {                                         \
            if (std::getenv("SWITCHYARD_REQUIRE_PROMTOOL") != nullptr) {                        \
                FAIL() << "promtool not installed, and SWITCHYARD_REQUIRE_PROMTOOL is set "     \
                          "(install the Debian package prometheus)";                            \
            }                                                                                   \
            GTEST_SKIP() << "promtool not installed (Debian package prometheus; "               \
                            "scripts/dev.sh test installs it); install it to run this check";  \
        }                                                                                       \
    } while (false)

// A port that was free a moment ago (bind 127.0.0.1:0, read, close). Another
// process may take it before it is used: prefer port 0 where possible.
std::uint16_t free_port();

class temp_dir {
public:
    temp_dir();  // /tmp/switchyard-test-XXXXXX
    ~temp_dir();
    temp_dir(temp_dir&& other) noexcept;
    temp_dir& operator=(temp_dir&& other) noexcept;
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    const std::string& path() const { return path_; }
    // Writes `content` to path()/name (parent directories created); returns
    // the full path.
    std::string write(const std::string& name, const std::string& content) const;
    // path()/name, whether or not it exists.
    std::string file(const std::string& name) const;

private:
    std::string path_;
};

using env_list = std::vector<std::pair<std::string, std::string>>;

class process {
public:
    // Spawns `program` (a path, or a name looked up in PATH) with `args`
    // (argv[1..]) and the current environment plus `env` (overriding names
    // already set). stdin is /dev/null.
    process(std::string program, std::vector<std::string> args, env_list env = {});
    // The switchyard binary built with the tests (SWITCHYARD_BINARY).
    static process switchyard(std::vector<std::string> args, env_list env = {});

    ~process();  // SIGKILL and reap if still running
    process(process&& other) noexcept;
    process& operator=(process&& other) noexcept;
    process(const process&) = delete;
    process& operator=(const process&) = delete;

    pid_t pid() const { return pid_; }
    bool running();
    // Exit code, 128 + signal number when killed by a signal, -1 when still
    // running at the deadline.
    int wait(std::chrono::milliseconds timeout);
    void signal(int sig);

    // Everything written so far.
    std::string output() const;
    std::string errors() const;
    const std::string& output_path() const { return stdout_path_; }
    const std::string& errors_path() const { return stderr_path_; }

private:
    bool reap(bool block);

    temp_dir dir_;
    std::string stdout_path_;
    std::string stderr_path_;
    pid_t pid_ = -1;
    int status_ = -1;  // decoded exit code once reaped
};

// Polls until a TCP connect to 127.0.0.1:port succeeds.
testing::AssertionResult wait_for_port(
    std::uint16_t port, std::chrono::milliseconds deadline = std::chrono::seconds(10));

// From /proc/PID/status: VmHWM (peak) and VmRSS, in KiB; 0 when unavailable.
std::uint64_t peak_rss_kib(pid_t pid);
std::uint64_t rss_kib(pid_t pid);

}  // namespace switchyard::test
