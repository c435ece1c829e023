// Hot reload through the real binary (SPEC §6 POST /api/v1/reload, SIGHUP):
// under load, not one request fails and the edited weights take effect; an
// invalid file changes nothing and says why, with FILE:LINE:COL; a changed
// listener address is bound before the old one closes, connections made
// before go on, and a port in use fails the reload with nothing changed.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <sstream>
#include <string>

#include "tests/e2e_fixture.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;

class reload_e2e : public proxy_fixture {
protected:
    std::string services(int blue_weight, int canary_weight) const {
        return service_yaml("shop", "blue",
                            pool_yaml("blue", {blue_.address()}, blue_weight) +
                                pool_yaml("canary", {canary_.address()}, canary_weight),
                            "    guard: { enabled: false }\n");
    }
    // Rewrites the config file in place (the ports stay those of start()).
    void rewrite(const std::string& text) { dir().write("switchyard.yaml", text); }

    // The config of start() with the listener section replaced by `listeners`
    // (the text under `listeners:`).
    std::string with_listeners(const std::string& services_text, const std::string& listeners) {
        std::string text = config_text(services_text, {});
        const std::string head = "listeners:\n";
        const auto end = text.find("admin:\n");
        return head + listeners + text.substr(end);
    }

    // Every `listener="..."` label value in a scrape, with the line it is on.
    static std::vector<std::pair<std::string, std::string>> listener_labels(const std::string& text) {
        std::vector<std::pair<std::string, std::string>> out;
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);) {
            const auto at = line.find("listener=\"");
            if (at == std::string::npos || line.starts_with("#")) {
                continue;
            }
            const auto from = at + 10;
            out.emplace_back(line.substr(from, line.find('"', from) - from), line);
        }
        return out;
    }

    // The value of the sample line starting with `series`, -1 when absent.
    static double sample(const std::string& text, const std::string& series) {
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);) {
            if (line.starts_with(series + " ")) {
                return std::stod(line.substr(series.size() + 1));
            }
        }
        return -1;
    }

    upstream blue_{"blue"};
    upstream canary_{"canary"};
};

TEST_F(reload_e2e, twenty_reloads_under_load_lose_nothing_and_apply_the_weights) {
    ASSERT_TRUE(start(services(100, 0)));
    admin_client admin(admin_port());
    load_generator load(port(), {.threads = 2, .rate_per_thread = 200});
    ASSERT_TRUE(load.wait_for_requests(100));

    int canary = 0;
    for (int i = 1; i <= 20; ++i) {
        canary = (i * 5) % 50;
        rewrite(config_text(services(100 - canary, canary), {}));
        const auto deadline = std::chrono::steady_clock::now() + 500ms;
        if (i % 2 == 0) {
            const http_response r = admin.post("/api/v1/reload");
            ASSERT_EQ(r.status, 200u) << r.body;
            const json::value body = parse_json(r.body);
            const json::value* reloaded = json_at(body, {"reloaded"});
            EXPECT_TRUE(reloaded != nullptr && reloaded->is_bool() && reloaded->get_bool())
                << r.body;
        } else {
            ASSERT_EQ(::kill(pid(), SIGHUP), 0);
        }
        ASSERT_TRUE(poll_service(
            admin, "shop",
            [&](const json::value& svc) { return pool_weight(svc, "canary") == canary; }, 5s,
            "the reloaded canary weight " + std::to_string(canary)));
        // Paced at about 0.5 s per reload (pacing, not synchronisation).
        std::this_thread::sleep_until(deadline);
    }
    // The last weights carry the traffic: canary gets requests again.
    const std::uint64_t canary_before = load.count("canary");
    ASSERT_TRUE(load.wait_for_requests(600));
    load.stop();
    std::cout << "[ reload ] 20 reloads, " << load.total() << " requests: " << load.summary()
              << "\n";
    EXPECT_EQ(load.failures(), 0u) << load.summary();
    EXPECT_EQ(load.not_ok(), 0u) << load.summary();
    if (canary > 0) {
        EXPECT_GT(load.count("canary"), canary_before) << load.summary();
    }
    // Every reload is an event by config or admin.
    int reloads = 0;
    for (const auto& e : admin.events()) {
        reloads += json_text(e, {"kind"}) == "reload" ? 1 : 0;
    }
    EXPECT_EQ(reloads, 20);
}

TEST_F(reload_e2e, an_invalid_file_changes_nothing_and_says_where) {
    ASSERT_TRUE(start(services(80, 20)));
    admin_client admin(admin_port());
    const json::value before = admin.service("shop");
    ASSERT_FALSE(before.is_null());

    // canary weight 50 would be a change, but the file has a typo too.
    rewrite(config_text(services(50, 50), {}) + "    guard_typo: 1\n");
    const http_response r = admin.post("/api/v1/reload");
    ASSERT_EQ(r.status, 400u) << r.body;
    const json::value body = parse_json(r.body);
    EXPECT_FALSE(json_text(body, {"error"}).empty()) << r.body;
    const json::value* errors = json_at(body, {"errors"});
    ASSERT_TRUE(errors != nullptr && errors->is_array() && !errors->get_array().empty()) << r.body;
    const std::string first(errors->get_array()[0].as_string());
    EXPECT_NE(first.find(config_path() + ":"), std::string::npos) << first;
    EXPECT_NE(first.find("guard_typo"), std::string::npos) << first;

    // SIGHUP with the same file: logged, nothing changes, still serving.
    ASSERT_EQ(::kill(pid(), SIGHUP), 0);
    ASSERT_TRUE(wait_until([&] { return proxy().errors().find("reload") != std::string::npos; },
                           5s, "the refused reload to be logged"));
    const json::value after = admin.service("shop");
    EXPECT_EQ(pool_weight(after, "canary"), 20);
    EXPECT_EQ(json_number(after, {"generation"}), json_number(before, {"generation"}));
    http_client client(port());
    EXPECT_EQ(client.request("GET", "/still-serving").status, 200u);

    // Fixed: the edit applies.
    rewrite(config_text(services(50, 50), {}));
    const http_response ok = admin.post("/api/v1/reload");
    ASSERT_EQ(ok.status, 200u) << ok.body;
    EXPECT_EQ(pool_weight(admin.service("shop"), "canary"), 50);
}

TEST_F(reload_e2e, a_reload_keeps_runtime_weights_unless_the_file_edits_them) {
    ASSERT_TRUE(start(services(80, 20)));
    admin_client admin(admin_port());
    ASSERT_EQ(admin.put("/api/v1/services/shop/weights", R"({"weights":{"canary":0}})").status,
              200u);
    // Same file: the operator's decision survives the reload.
    ASSERT_EQ(admin.post("/api/v1/reload").status, 200u);
    EXPECT_EQ(pool_weight(admin.service("shop"), "canary"), 0);
    // An edit of canary's weight in the file wins, and "config" says so.
    rewrite(config_text(services(80, 30), {}));
    ASSERT_EQ(admin.post("/api/v1/reload").status, 200u);
    EXPECT_EQ(pool_weight(admin.service("shop"), "canary"), 30);
    bool config_event = false;
    for (const auto& e : admin.events()) {
        config_event |= json_text(e, {"kind"}) == "weights" && json_text(e, {"actor"}) == "config";
    }
    EXPECT_TRUE(config_event);
}

// A TCP socket listening on a free loopback port without SO_REUSEPORT: the
// "other process" that holds an address.
class port_holder {
public:
    port_holder() {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = 0;
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
            ::listen(fd_, 4) != 0) {
            throw std::runtime_error("port_holder: cannot listen");
        }
        socklen_t len = sizeof addr;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
        port_ = ntohs(addr.sin_port);
    }
    ~port_holder() { ::close(fd_); }
    port_holder(const port_holder&) = delete;
    port_holder& operator=(const port_holder&) = delete;
    std::uint16_t port() const { return port_; }

private:
    int fd_ = -1;
    std::uint16_t port_ = 0;
};

TEST_F(reload_e2e, a_moved_listener_serves_on_the_new_port_and_its_old_connections_go_on) {
    ASSERT_TRUE(start(services(100, 0)));
    admin_client admin(admin_port());
    const std::uint16_t old_port = port();
    // Connections made before the change: the load's keep-alive connections
    // and one idle client.
    http_client before(old_port);
    ASSERT_EQ(before.request("GET", "/before").status, 200u);
    load_generator load(old_port, {.threads = 2, .rate_per_thread = 200});
    ASSERT_TRUE(load.wait_for_requests(100));
    const double accepted_before =
        sample(admin.request("GET", "/metrics").body,
               "switchyard_accepted_connections_total{listener=\"public\"}");
    ASSERT_GE(accepted_before, 3.0);

    std::uint16_t new_port = free_port();
    while (new_port == old_port || new_port == admin_port()) {
        new_port = free_port();
    }
    const std::string new_address = "127.0.0.1:" + std::to_string(new_port);
    rewrite(with_listeners(services(100, 0),
                           "  - name: public\n    address: " + new_address + "\n"));
    const http_response r = admin.post("/api/v1/reload");
    ASSERT_EQ(r.status, 200u) << r.body;

    // The new port serves at once (bound before the reload answered).
    http_client after(new_port);
    EXPECT_EQ(after.request("GET", "/after").status, 200u);
    // The old port refuses new connections once every worker closed it.
    EXPECT_TRUE(wait_until([&] { return !wait_for_port(old_port, 0ms); }, 5s,
                           "the old port to refuse connections"));
    // Connections made before go on: the load keeps going on them, and the
    // idle client is served again.
    ASSERT_TRUE(load.wait_for_requests(200));
    load.stop();
    EXPECT_EQ(before.request("GET", "/before-again").status, 200u);
    EXPECT_EQ(before.connections_made(), 1u);
    std::cout << "[ reload ] listener moved under load, " << load.total()
              << " requests: " << load.summary() << "\n";
    EXPECT_EQ(load.failures(), 0u) << load.summary();
    EXPECT_EQ(load.not_ok(), 0u) << load.summary();

    // The event says where it went.
    bool said = false;
    for (const auto& e : admin.events()) {
        said |= json_text(e, {"kind"}) == "reload" &&
                json_text(e, {"reason"}).find("listener public moved to " + new_address) !=
                    std::string::npos;
    }
    EXPECT_TRUE(said) << json::serialize(admin.events());

    // Metrics: still one listener, "public", whose counters did not restart.
    const std::string metrics = admin.request("GET", "/metrics").body;
    const auto labels = listener_labels(metrics);
    EXPECT_FALSE(labels.empty()) << metrics;
    for (const auto& [name, line] : labels) {
        EXPECT_EQ(name, "public") << line;
    }
    EXPECT_GE(sample(metrics, "switchyard_accepted_connections_total{listener=\"public\"}"),
              accepted_before + 1)
        << metrics;
    EXPECT_EQ(sample(metrics, "switchyard_config_reloads_total{result=\"ok\"}"), 1.0) << metrics;
}

TEST_F(reload_e2e, a_listener_that_cannot_bind_fails_the_reload_and_changes_nothing) {
    ASSERT_TRUE(start(services(80, 20)));
    admin_client admin(admin_port());
    const double generation = json_number(admin.service("shop"), {"generation"});
    port_holder busy;
    const std::string busy_address = "127.0.0.1:" + std::to_string(busy.port());

    // A new listener on a port another process holds, and a weight edit.
    rewrite(with_listeners(services(50, 50),
                           "  - name: public\n    address: 127.0.0.1:" + std::to_string(port()) +
                               "\n  - name: extra\n    address: " + busy_address + "\n"));
    const http_response r = admin.post("/api/v1/reload");
    EXPECT_EQ(r.status, 500u) << r.body;
    const std::string error = json_text(parse_json(r.body), {"error"});
    EXPECT_NE(error.find("listener extra"), std::string::npos) << r.body;
    EXPECT_NE(error.find(busy_address), std::string::npos) << r.body;
    EXPECT_NE(error.find("port in use"), std::string::npos) << r.body;

    // Nothing changed: the weights, the generation, the listener.
    const json::value svc = admin.service("shop");
    EXPECT_EQ(pool_weight(svc, "canary"), 20);
    EXPECT_EQ(json_number(svc, {"generation"}), generation);
    EXPECT_EQ(http_get(port(), "/still-serving").status, 200u);
    const std::string metrics = admin.request("GET", "/metrics").body;
    EXPECT_EQ(sample(metrics, "switchyard_config_reloads_total{result=\"error\"}"), 1.0)
        << metrics;
    EXPECT_EQ(sample(metrics, "switchyard_config_reloads_total{result=\"ok\"}"), 0.0) << metrics;
    for (const auto& [name, line] : listener_labels(metrics)) {
        EXPECT_EQ(name, "public") << line;
    }

    // Adding a free one works, and removing it again closes it.
    const std::uint16_t extra_port = free_port();
    rewrite(with_listeners(services(50, 50),
                           "  - name: public\n    address: 127.0.0.1:" + std::to_string(port()) +
                               "\n  - name: extra\n    address: 127.0.0.1:" +
                               std::to_string(extra_port) + "\n"));
    ASSERT_EQ(admin.post("/api/v1/reload").status, 200u);
    EXPECT_EQ(http_get(extra_port, "/extra").status, 200u);
    EXPECT_EQ(pool_weight(admin.service("shop"), "canary"), 50);
    rewrite(config_text(services(50, 50), {}));
    ASSERT_EQ(admin.post("/api/v1/reload").status, 200u);
    EXPECT_TRUE(wait_until([&] { return !wait_for_port(extra_port, 0ms); }, 5s,
                           "the removed listener to refuse connections"));
    EXPECT_EQ(http_get(port(), "/public").status, 200u);
}

}  // namespace
}  // namespace switchyard::test
