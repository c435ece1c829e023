#pragma once
// The fixture shared by the end-to-end tests (proxy_test, routing_e2e_test):
// writes a SPEC §2 config into a temp_dir (listener and admin on free
// loopback ports, the test's services), starts the real `switchyard run`
// binary, waits until /readyz answers 200, and at the end sends SIGTERM and
// expects exit code 0 (the drain of SPEC §1). On any failure the proxy's
// stderr is printed, so a red test carries the proxy's own account.
//
// restart() runs the binary again on the same config file (persistence).
//
// Also here, for the tests that drive the guard and the admin API
// (guard_e2e_test, operations_e2e_test): `load_generator`, background GET
// load on keep-alive connections counting statuses per pool, and
// `admin_client` with small JSON accessors and `poll_service`.
//
// Threads: the fixture is used from the test's main thread only; a
// load_generator runs its own threads, and its counters may be read from any
// thread.
// Failure: start() returns an AssertionResult naming the exit code and stderr.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
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
        services_ = services;
        options_ = opts;
        config_path_ = dir_.write("switchyard.yaml", config_text(services, opts));
        return launch(services, opts);
    }

    // Starts switchyard again after stop(), with the same config file, ports
    // and options (restart and persistence tests).
    testing::AssertionResult restart() {
        if (!proxy_ || !exit_code_) {
            return testing::AssertionFailure() << "restart() needs a proxy stopped with stop()";
        }
        earlier_errors_ += proxy_->errors();
        proxy_.reset();
        exit_code_.reset();
        return launch(services_, options_);
    }

private:
    testing::AssertionResult launch(const std::string& services, const options& opts) {
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

protected:
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
            if (!earlier_errors_.empty()) {
                std::cerr << "--- stderr of the earlier switchyard run(s), before restart() ---\n"
                          << earlier_errors_;
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
    std::string services_;
    options options_;
    std::string earlier_errors_;  // stderr of the runs before restart()
    std::optional<process> proxy_;
    std::optional<int> exit_code_;
};


// ------------------------------------------------------------- JSON and admin

namespace json = boost::json;

// The parsed document, or null when `text` is not JSON.
inline json::value parse_json(std::string_view text) {
    json::error_code ec;
    json::value v = json::parse(text, ec);
    return ec ? json::value(nullptr) : v;
}

// The value at a path of object keys, or nullptr when any step is missing.
inline const json::value* json_at(const json::value& v,
                                  std::initializer_list<std::string_view> path) {
    const json::value* at = &v;
    for (std::string_view key : path) {
        const json::object* obj = at->if_object();
        if (obj == nullptr) {
            return nullptr;
        }
        at = obj->if_contains(key);
        if (at == nullptr) {
            return nullptr;
        }
    }
    return at;
}

// A string at `path`, "" when missing or not a string.
inline std::string json_text(const json::value& v, std::initializer_list<std::string_view> path) {
    const json::value* at = json_at(v, path);
    return at != nullptr && at->is_string() ? std::string(at->get_string()) : std::string();
}

// A number at `path` (any JSON number kind), `fallback` when missing.
inline double json_number(const json::value& v, std::initializer_list<std::string_view> path,
                          double fallback = -1.0) {
    const json::value* at = json_at(v, path);
    if (at == nullptr) {
        return fallback;
    }
    if (at->is_int64()) {
        return static_cast<double>(at->get_int64());
    }
    if (at->is_uint64()) {
        return static_cast<double>(at->get_uint64());
    }
    if (at->is_double()) {
        return at->get_double();
    }
    return fallback;
}

// SERVICE accessors (SPEC §6). -1 when absent.
inline double pool_weight(const json::value& service, std::string_view pool) {
    return json_number(service, {"pools", pool, "weight"});
}

// The endpoint object of `address` in `pool`, nullptr when absent.
inline const json::object* endpoint_json(const json::value& service, std::string_view pool,
                                         std::string_view address) {
    const json::value* eps = json_at(service, {"pools", pool, "endpoints"});
    if (eps == nullptr || !eps->is_array()) {
        return nullptr;
    }
    for (const json::value& ep : eps->get_array()) {
        if (json_text(ep, {"address"}) == address) {
            return ep.if_object();
        }
    }
    return nullptr;
}

// An endpoint's boolean `flag` ("healthy", "ejected"); nullopt when absent.
inline std::optional<bool> endpoint_flag(const json::value& service, std::string_view pool,
                                         std::string_view address, std::string_view flag) {
    const json::object* ep = endpoint_json(service, pool, address);
    if (ep == nullptr) {
        return std::nullopt;
    }
    const json::value* v = ep->if_contains(flag);
    if (v == nullptr || !v->is_bool()) {
        return std::nullopt;
    }
    return v->get_bool();
}

// The admin API (no token: loopback is open, SPEC §6) on one keep-alive
// connection. GETs are retried once on a fresh connection; changes never are
// (a change must not be applied twice behind the test's back).
class admin_client {
public:
    explicit admin_client(std::uint16_t port)
        : port_(port), client_(std::make_unique<http_client>(port)) {}

    http_response request(std::string_view method, std::string_view target,
                          std::string body = {}, header_list headers = {}) {
        if (!body.empty()) {
            headers.emplace_back("Content-Type", "application/json");
        }
        if (client_->connections_made() > 0 && !client_->connected()) {
            client_ = std::make_unique<http_client>(port_);
        }
        if (method != "GET") {
            return client_->request(method, target, headers, body);
        }
        try {
            return client_->request(method, target, headers, body);
        } catch (const std::exception&) {
            client_ = std::make_unique<http_client>(port_);
            return client_->request(method, target, headers, body);
        }
    }

    // POST with a JSON body; `if_match` > 0 sends If-Match: "N".
    http_response post(std::string_view target, std::string body = {}, std::uint64_t if_match = 0) {
        header_list headers;
        if (if_match > 0) {
            headers.emplace_back("If-Match", "\"" + std::to_string(if_match) + "\"");
        }
        return request("POST", target, std::move(body), std::move(headers));
    }

    http_response put(std::string_view target, std::string body) {
        return request("PUT", target, std::move(body));
    }

    // GET /api/v1/services/{name}: the SERVICE, null when not 200 or not JSON.
    json::value service(std::string_view name) {
        http_response r = request("GET", "/api/v1/services/" + std::string(name));
        return r.status == 200 ? parse_json(r.body) : json::value(nullptr);
    }

    // GET /api/v1/events?since=N: the events array (empty when not 200).
    json::array events(std::uint64_t since = 0) {
        http_response r = request("GET", "/api/v1/events?since=" + std::to_string(since));
        json::value doc = r.status == 200 ? parse_json(r.body) : json::value(nullptr);
        const json::value* events = json_at(doc, {"events"});
        return events != nullptr && events->is_array() ? events->get_array() : json::array();
    }

private:
    std::uint16_t port_;
    std::unique_ptr<http_client> client_;
};

// Polls GET /api/v1/services/{name} (every ~25 ms) until `condition` holds
// for the SERVICE. `last` receives the last SERVICE seen; the failure message
// carries it too.
inline testing::AssertionResult poll_service(
    admin_client& admin, std::string_view name,
    const std::function<bool(const json::value&)>& condition,
    std::chrono::milliseconds deadline, std::string_view what, json::value* last = nullptr) {
    json::value seen;
    auto next_fetch = std::chrono::steady_clock::now();
    testing::AssertionResult result = wait_until(
        [&] {
            const auto now = std::chrono::steady_clock::now();
            if (now < next_fetch) {
                return false;
            }
            next_fetch = now + std::chrono::milliseconds(25);
            seen = admin.service(name);
            return !seen.is_null() && condition(seen);
        },
        deadline, what);
    if (last != nullptr) {
        *last = seen;
    }
    if (!result) {
        result << "\nlast SERVICE: " << json::serialize(seen);
    }
    return result;
}

// The opposite watch: `invariant` must hold for every SERVICE read (every
// ~50 ms) during `span` (an observation window, not a synchronisation: it
// shows that something does not happen, for instance over a number of guard
// evaluations). Fails at the first read where it does not hold.
inline testing::AssertionResult service_holds(
    admin_client& admin, std::string_view name,
    const std::function<bool(const json::value&)>& invariant, std::chrono::milliseconds span,
    std::string_view what) {
    const auto end = std::chrono::steady_clock::now() + span;
    int reads = 0;
    for (;;) {
        json::value seen = admin.service(name);
        ++reads;
        if (seen.is_null() || !invariant(seen)) {
            return testing::AssertionFailure()
                   << what << " stopped holding after " << reads
                   << " reads; SERVICE: " << json::serialize(seen);
        }
        if (std::chrono::steady_clock::now() >= end) {
            return testing::AssertionSuccess();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

// ------------------------------------------------------------------- the load

struct load_options {
    unsigned threads = 2;
    double rate_per_thread = 150;  // requests per second on each thread; 0 = unpaced
    std::string target = "/load";  // "/<thread>/<seq>" is appended
    header_list headers;
};

// GET requests through the proxy on keep-alive connections, one per thread,
// until stop() or destruction. Counts every response by (X-Upstream value,
// status); X-Upstream is "" for responses the proxy made itself. A request
// that throws (timeout, reset) counts as a failure and the thread reconnects.
class load_generator {
public:
    explicit load_generator(std::uint16_t port, load_options opts = {}) : opts_(std::move(opts)) {
        for (unsigned i = 0; i < opts_.threads; ++i) {
            threads_.emplace_back([this, port, i] { run(port, i); });
        }
    }
    ~load_generator() { stop(); }
    load_generator(const load_generator&) = delete;
    load_generator& operator=(const load_generator&) = delete;

    void stop() {
        stop_ = true;
        for (auto& t : threads_) {
            if (t.joinable()) {
                t.join();
            }
        }
    }

    // Requests answered or failed so far.
    std::uint64_t total() const { return total_.load(); }
    std::uint64_t failures() const { return failures_.load(); }

    // Responses from `pool` (X-Upstream), with `status` (0: any status).
    std::uint64_t count(std::string_view pool, unsigned status = 0) const {
        std::lock_guard lock(mutex_);
        std::uint64_t n = 0;
        for (const auto& [key, value] : counts_) {
            if (key.first == pool && (status == 0 || key.second == status)) {
                n += value;
            }
        }
        return n;
    }

    // Responses whose status is not 200.
    std::uint64_t not_ok() const {
        std::lock_guard lock(mutex_);
        std::uint64_t n = 0;
        for (const auto& [key, value] : counts_) {
            n += key.second != 200 ? value : 0;
        }
        return n;
    }

    // "blue 200x812 500x3, canary 200x95; 0 failed" for logs and messages.
    std::string summary() const {
        std::lock_guard lock(mutex_);
        std::ostringstream out;
        std::string pool = "\x01";
        for (const auto& [key, value] : counts_) {
            if (key.first != pool) {
                out << (pool == "\x01" ? "" : ", ") << (key.first.empty() ? "(proxy)" : key.first);
                pool = key.first;
            }
            out << " " << key.second << "x" << value;
        }
        out << "; " << failures_.load() << " failed";
        if (!last_failure_.empty()) {
            out << " (last: " << last_failure_ << ")";
        }
        return out.str();
    }

    // Waits until `more` further requests have completed.
    testing::AssertionResult wait_for_requests(
        std::uint64_t more, std::chrono::milliseconds deadline = std::chrono::seconds(30)) {
        const std::uint64_t target = total() + more;
        auto r = wait_until([&] { return total() >= target; }, deadline,
                            std::to_string(more) + " more requests of the load");
        if (!r) {
            r << " (" << summary() << ")";
        }
        return r;
    }

private:
    void run(std::uint16_t port, unsigned id) {
        auto client = std::make_unique<http_client>(port);
        const auto period = opts_.rate_per_thread > 0
                                ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                      std::chrono::duration<double>(1.0 / opts_.rate_per_thread))
                                : std::chrono::steady_clock::duration::zero();
        auto next = std::chrono::steady_clock::now();
        std::uint64_t seq = 0;
        const std::string prefix = opts_.target + "/" + std::to_string(id) + "/";
        while (!stop_.load()) {
            if (period.count() > 0) {
                // Pacing, not synchronisation: a slow response is not made
                // up for by a burst.
                next += period;
                const auto now = std::chrono::steady_clock::now();
                if (next < now) {
                    next = now;
                } else {
                    std::this_thread::sleep_until(next);
                }
            }
            try {
                http_response r = client->request("GET", prefix + std::to_string(seq++),
                                                  opts_.headers);
                std::lock_guard lock(mutex_);
                ++counts_[{r.header("X-Upstream"), r.status}];
            } catch (const std::exception& e) {
                failures_.fetch_add(1);
                {
                    std::lock_guard lock(mutex_);
                    last_failure_ = e.what();
                }
                client = std::make_unique<http_client>(port);
            }
            total_.fetch_add(1);
        }
    }

    load_options opts_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> total_{0};
    std::atomic<std::uint64_t> failures_{0};
    mutable std::mutex mutex_;
    std::map<std::pair<std::string, unsigned>, std::uint64_t> counts_;
    std::string last_failure_;
    std::vector<std::thread> threads_;
};

}  // namespace switchyard::test
