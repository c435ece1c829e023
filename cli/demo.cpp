#include "cli/demo.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cli/app.hpp"

namespace switchyard::cli {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using net::ip::tcp;

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// One demo backend: answers every request with its colour after a few
// milliseconds of simulated work, and fails a settable fraction of them.
class demo_upstream {
public:
    demo_upstream(net::io_context& ioc, std::string colour)
        : colour_(std::move(colour)), acceptor_(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
        net::co_spawn(ioc, accept_loop(), net::detached);
    }
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
    const std::string& colour() const { return colour_; }
    void set_error_rate(double r) { error_rate_.store(r); }
    void close() {
        boost::system::error_code ec;
        acceptor_.close(ec);
    }

private:
    net::awaitable<void> accept_loop() {
        for (;;) {
            auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
            if (ec) {
                co_return;
            }
            net::co_spawn(acceptor_.get_executor(), serve(std::move(socket)), net::detached);
        }
    }

    net::awaitable<void> serve(tcp::socket socket) {
        beast::tcp_stream stream(std::move(socket));
        beast::flat_buffer buffer;
        std::minstd_rand rng(std::random_device{}());
        net::steady_timer work(stream.get_executor());
        for (;;) {
            http::request<http::string_body> req;
            stream.expires_after(std::chrono::seconds(120));
            auto [ec, n] = co_await http::async_read(stream, buffer, req, use_tuple);
            if (ec) {
                co_return;
            }
            const bool health = req.target() == "/healthz";
            // 2..6 ms of "work", so latency percentiles mean something.
            work.expires_after(std::chrono::microseconds(2000 + rng() % 4000));
            co_await work.async_wait(use_tuple);
            const bool fail = !health && std::uniform_real_distribution<double>(0, 1)(rng) <
                                             error_rate_.load(std::memory_order_relaxed);
            http::response<http::string_body> res{fail ? http::status::internal_server_error
                                                       : http::status::ok,
                                                  11};
            res.set("X-Upstream", colour_);
            res.set(http::field::content_type, "text/plain");
            res.body() = fail ? "oops from " + colour_ + "\n" : "hello from " + colour_ + "\n";
            res.keep_alive(req.keep_alive());
            res.prepare_payload();
            auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
            if (wec || !res.keep_alive()) {
                co_return;
            }
        }
    }

    std::string colour_;
    tcp::acceptor acceptor_;
    std::atomic<double> error_rate_{0.0};
};

// What the load generator saw in the last second, per pool.
struct observed {
    std::mutex mutex;
    std::map<std::string, std::vector<double>> latencies_ms;
    std::map<std::string, std::uint64_t> errors;
    std::uint64_t failed = 0;

    void add(const std::string& pool, double ms, bool error) {
        std::lock_guard lock(mutex);
        latencies_ms[pool].push_back(ms);
        if (error) {
            ++errors[pool];
        }
    }
};

// A keep-alive client that sends about `rps` requests per second, with its
// own user id so that affinity-style configs behave like real users.
net::awaitable<void> load_client(std::uint16_t port, double rps, observed& seen,
                                 const std::atomic<bool>& stop) {
    auto ex = co_await net::this_coro::executor;
    net::steady_timer pace(ex);
    const auto gap = std::chrono::microseconds(static_cast<long>(1e6 / rps));
    beast::flat_buffer buffer;
    std::optional<beast::tcp_stream> stream;
    while (!stop.load()) {
        const auto next = std::chrono::steady_clock::now() + gap;
        if (!stream) {
            stream.emplace(ex);
            stream->expires_after(std::chrono::seconds(2));
            auto [cec] = co_await stream->async_connect(
                tcp::endpoint(net::ip::make_address("127.0.0.1"), port), use_tuple);
            if (cec) {
                stream.reset();
                ++seen.failed;
                pace.expires_at(next);
                co_await pace.async_wait(use_tuple);
                continue;
            }
        }
        http::request<http::empty_body> req{http::verb::get, "/api/assets", 11};
        req.set(http::field::host, "app.assetanchor.io");
        const auto started = std::chrono::steady_clock::now();
        stream->expires_after(std::chrono::seconds(5));
        auto [wec, wn] = co_await http::async_write(*stream, req, use_tuple);
        http::response<http::string_body> res;
        boost::system::error_code rec = wec;
        if (!wec) {
            auto [e, n] = co_await http::async_read(*stream, buffer, res, use_tuple);
            rec = e;
        }
        if (rec) {
            stream.reset();
            buffer.clear();
            std::lock_guard lock(seen.mutex);
            ++seen.failed;
        } else {
            const double ms =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
                    .count();
            std::string pool(res["X-Upstream"]);
            if (pool.empty()) {
                pool = "(proxy)";
            }
            seen.add(pool, ms, res.result_int() >= 500);
            if (!res.keep_alive()) {
                stream.reset();
            }
        }
        pace.expires_at(next);
        co_await pace.async_wait(use_tuple);
    }
}

std::string demo_config(const demo_options& o, std::uint16_t blue, std::uint16_t green,
                        std::uint16_t canary) {
    char text[2048];
    std::snprintf(text, sizeof text, R"(# The embedded demo config: one service, blue stable, a 10 %% canary.
listeners:
  - name: public
    address: 127.0.0.1:%u
admin:
  address: 127.0.0.1:%u
workers: 2
services:
  - name: asset-anchor-api
    hosts: ["app.assetanchor.io", "*.assetanchor.io"]
    path_prefix: /
    stable: blue
    pools:
      blue:   { endpoints: ["127.0.0.1:%u"], weight: 90 }
      green:  { endpoints: ["127.0.0.1:%u"], weight: 0 }
      canary: { endpoints: ["127.0.0.1:%u"], weight: 10 }
    health_check:
      path: /healthz
      interval: 1s
      timeout: 500ms
    guard:
      window: 10s
      evaluate_every: 1s
      min_requests: 50
)",
                  unsigned(o.port), unsigned(o.admin_port), unsigned(blue), unsigned(green),
                  unsigned(canary));
    return text;
}

double percentile(std::vector<double>& v, double q) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    const auto i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

}  // namespace

int run_demo(const demo_options& options) {
    net::io_context backends;
    demo_upstream blue(backends, "blue");
    demo_upstream green(backends, "green");
    demo_upstream canary(backends, "canary");
    std::thread backend_thread([&] { backends.run(); });

    const auto text = demo_config(options, blue.port(), green.port(), canary.port());
    auto loaded = config::load_string(text, "<demo>");
    if (!loaded.ok()) {
        for (const auto& e : loaded.errors) {
            std::cerr << e << "\n";
        }
        backends.stop();
        backend_thread.join();
        return 1;
    }

    int status = 0;
    try {
        app proxy(std::move(*loaded.value), std::nullopt, log_level::warn);
        proxy.start();
        std::cout << "switchyard demo: proxy on http://127.0.0.1:" << proxy.listener_port(0)
                  << " (Host: app.assetanchor.io), admin on http://127.0.0.1:" << proxy.admin_port()
                  << "\n"
                  << "  upstreams: blue :" << blue.port() << ", green :" << green.port()
                  << ", canary :" << canary.port() << "; weights blue 90 / canary 10\n"
                  << "  try: curl -s -H 'Host: app.assetanchor.io' http://127.0.0.1:"
                  << proxy.listener_port(0) << "/\n"
                  << "       curl -s -X PUT -d '{\"weights\":{\"canary\":50}}' http://127.0.0.1:"
                  << proxy.admin_port() << "/api/v1/services/asset-anchor-api/weights\n"
                  << "  at t=15s the canary starts failing 40 % of its requests; the guard\n"
                  << "  reverts it by itself (canary weight 0, rollout reverted, with the reason).\n"
                  << "  Clients see few of those failures: retry_on_stable retries a failed GET\n"
                  << "  on blue (the failure still counts for the guard).\n";

        net::io_context load;
        std::atomic<bool> stop{false};
        observed seen;
        for (int i = 0; i < 8; ++i) {
            net::co_spawn(load, load_client(proxy.listener_port(0), 25.0, seen, stop), net::detached);
        }
        std::thread load_thread([&] { load.run(); });

        net::io_context control;
        net::signal_set signals(control, SIGINT, SIGTERM);
        bool interrupted = false;
        signals.async_wait([&](boost::system::error_code ec, int) {
            if (!ec) {
                interrupted = true;
            }
        });
        const auto started = std::chrono::steady_clock::now();
        bool reverted_shown = false;
        for (int second = 1;; ++second) {
            control.run_for(std::chrono::seconds(1));
            if (interrupted) {
                break;
            }
            if (second == 15) {
                canary.set_error_rate(0.4);
                std::cout << "t=" << second << "s  >>> canary now fails 40 % of requests\n";
            }
            std::map<std::string, std::vector<double>> lat;
            std::map<std::string, std::uint64_t> errs;
            std::uint64_t failed = 0;
            {
                std::lock_guard lock(seen.mutex);
                lat.swap(seen.latencies_ms);
                errs.swap(seen.errors);
                failed = std::exchange(seen.failed, 0);
            }
            std::size_t total = 0;
            for (auto& [pool, v] : lat) {
                total += v.size();
            }
            std::string line = "t=" + std::to_string(second) + "s  " + std::to_string(total) + " req/s";
            for (auto& [pool, v] : lat) {
                char part[160];
                std::snprintf(part, sizeof part, " | %s %.1f%% err %.1f%% p95 %.1fms", pool.c_str(),
                              total ? 100.0 * double(v.size()) / double(total) : 0.0,
                              v.empty() ? 0.0 : 100.0 * double(errs[pool]) / double(v.size()),
                              percentile(v, 0.95));
                line += part;
            }
            if (failed) {
                line += " | client failures " + std::to_string(failed);
            }
            const std::string summary = proxy.status_summary();
            const auto reason_at = summary.find(": ");
            // The reason once, on its own line; the status lines stay short.
            line += " | " + (reverted_shown ? summary.substr(0, reason_at) : summary);
            std::cout << line << std::endl;
            if (!reverted_shown && summary.find("reverted") != std::string::npos) {
                reverted_shown = true;
                std::cout << "t=" << second
                          << "s  >>> the guard reverted the canary by itself; no human was paged\n";
            }
            if (options.duration &&
                std::chrono::steady_clock::now() - started >= *options.duration) {
                break;
            }
        }
        stop.store(true);
        load_thread.join();
        proxy.stop();
    } catch (const std::exception& e) {
        std::cerr << "switchyard demo: " << e.what() << "\n";
        status = 1;
    }
    blue.close();
    green.close();
    canary.close();
    backends.stop();
    backend_thread.join();
    return status;
}

}  // namespace switchyard::cli
