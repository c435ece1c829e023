#pragma once
// The fixture shared by the end-to-end tests (proxy_test, routing_e2e_test):
// writes a SPEC §2 config into a temp_dir (listener and admin on free
// loopback ports, the test's services), starts the real `switchyard run`
// binary, waits until /readyz answers 200, and at the end sends SIGTERM and
// expects exit code 0 (the drain of SPEC §1). On any failure the proxy's
// stderr is printed, so a red test carries the proxy's own account.
//
// Threads: the fixture is used from the test's main thread only.
// Failure: start() returns an AssertionResult naming the exit code and stderr.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/client.hpp"
#include "tests/support/process.hpp"

namespace switchyard::test {

// ["a", "b"] in YAML flow style.
inline std::string yaml_list(const std::vector<std::string>& items) {
    std::string out = "[";
    for (std::size_t i = 0; i < items.size(); ++i) {
        out += (i == 0 ? "\"" : ", \"") + items[i] + "\"";
    }
    return out + "]";
}

// One entry of a service's `pools:` map.
inline std::string pool_yaml(std::string_view name, const std::vector<std::string>& endpoints,
                             int weight) {
    return "      " + std::string(name) + ": { endpoints: " + yaml_list(endpoints) +
           ", weight: " + std::to_string(weight) + " }\n";
}

// One entry of `services:`. `extra` holds further keys of the service, each
// line indented by four spaces ("    path_prefix: /api\n").
inline std::string service_yaml(std::string_view name, std::string_view stable,
                                const std::string& pools, const std::string& extra = {}) {
    return "  - name: " + std::string(name) + "\n    stable: " + std::string(stable) + "\n" +
           extra + "    pools:\n" + pools;
}

// How proxy_fixture::start runs switchyard. (Outside the fixture: GCC 12
// cannot use a nested class's member initializers in a default argument.)
struct proxy_options {
    unsigned workers = 2;
    std::string top_level;  // extra top-level YAML, e.g. "upstream_defaults: {...}\n"
    env_list env;
};

class proxy_fixture : public ::testing::Test {
protected:
    using options = proxy_options;

    // The whole config file for `services` (the text under `services:`).
    std::string config_text(const std::string& services, const options& opts) const {
        return "listeners:\n"
               "  - name: public\n"
               "    address: 127.0.0.1:" +
               std::to_string(port_) +
               "\n"
               "admin:\n"
               "  address: 127.0.0.1:" +
               std::to_string(admin_port_) +
               "\n"
               "drain_timeout: 5s\n" +
               opts.top_level + "services:\n" + services;
    }

    testing::AssertionResult start(const std::string& services, options opts = {}) {
        port_ = free_port();
        do {
            admin_port_ = free_port();
        } while (admin_port_ == port_);
        config_path_ = dir_.write("switchyard.yaml", config_text(services, opts));
        proxy_.emplace(process::switchyard({"run", "--config", config_path_, "--workers",
                                            std::to_string(opts.workers), "--log-level", "warn"},
                                           opts.env));
        bool exited = false;
        auto ready = wait_until(
            [&] {
                if (!proxy_->running()) {
                    exited = true;
                    return true;
                }
                if (!wait_for_port(port_, std::chrono::milliseconds(0))) {
                    return false;
                }
                try {
                    return http_get(admin_port_, "/readyz").status == 200;
                } catch (const std::exception&) {
                    return false;
                }
            },
            std::chrono::seconds(30), "switchyard to listen and /readyz to answer 200");
        if (exited || !ready) {
            return testing::AssertionFailure()
                   << "switchyard did not start (exit code " << proxy_->wait(std::chrono::seconds(0))
                   << ")\n--- config ---\n"
                   << config_text(services, opts) << "--- stderr ---\n"
                   << proxy_->errors();
        }
        return testing::AssertionSuccess();
    }

    // SIGTERM and the exit code (-1 if it did not exit within 30 s). Once
    // stopped, further calls return the same code.
    int stop() {
        if (!proxy_) {
            return -1;
        }
        if (!exit_code_) {
            proxy_->signal(SIGTERM);
            exit_code_ = proxy_->wait(std::chrono::seconds(30));
        }
        return *exit_code_;
    }

    void TearDown() override {
        if (proxy_ && !exit_code_) {
            EXPECT_EQ(stop(), 0) << "switchyard did not exit 0 on SIGTERM";
        }
        if (proxy_ && HasFailure()) {
            std::string err = proxy_->errors();
            if (err.size() > 16384) {
                err = "[...]\n" + err.substr(err.size() - 16384);
            }
            std::cerr << "--- switchyard stderr (" << config_path_ << ") ---\n"
                      << err << "--- end of switchyard stderr ---\n";
        }
    }

    std::uint16_t port() const { return port_; }
    std::uint16_t admin_port() const { return admin_port_; }
    pid_t pid() const { return proxy_->pid(); }
    process& proxy() { return *proxy_; }
    const temp_dir& dir() const { return dir_; }
    const std::string& config_path() const { return config_path_; }

private:
    temp_dir dir_;
    std::uint16_t port_ = 0;
    std::uint16_t admin_port_ = 0;
    std::string config_path_;
    std::optional<process> proxy_;
    std::optional<int> exit_code_;
};

}  // namespace switchyard::test
