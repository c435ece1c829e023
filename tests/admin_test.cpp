// Tests of the admin module: the state stores, reconciliation with the config,
// the control plane's changes, and the admin HTTP API over real loopback
// sockets (SPEC §6).

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <mutex>
#include <sstream>
#include <thread>
#include <type_traits>

#include "admin/admin_server.hpp"
#include "admin/control_plane.hpp"
#include "admin/state_store.hpp"
#include "tests/support/client.hpp"

namespace switchyard::admin {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using test::header_list;
using test::http_client;
using test::http_response;
using test::wait_until;

constexpr std::string_view full_token = "s3cret-full-token";
constexpr std::string_view read_token = "r3ad-only-token";

config::pool make_pool(std::string name, std::uint32_t weight, std::uint16_t first_port) {
    config::pool p;
    p.name = std::move(name);
    p.weight = weight;
    for (std::uint16_t port = first_port; port < first_port + 2; ++port) {
        config::endpoint e;
        e.host = "127.0.0.1";
        e.port = port;
        e.address = "127.0.0.1:" + std::to_string(port);
        p.endpoints.push_back(e);
    }
    return p;
}

// Two services, pools blue/green/canary on dummy endpoints.
config::config make_config() {
    config::config cfg;
    cfg.file = "<test>";
    cfg.listeners.push_back(config::listener{});
    cfg.admin_listener.address = "127.0.0.1:0";
    cfg.admin_listener.host = "127.0.0.1";
    cfg.admin_listener.port = 0;

    config::service shop;
    shop.name = "shop";
    shop.hosts = {"shop.example"};
    shop.stable = "blue";
    shop.pools = {make_pool("blue", 100, 10001), make_pool("green", 0, 10011),
                  make_pool("canary", 0, 10021)};
    cfg.services.push_back(shop);

    config::service api;
    api.name = "api";
    api.path_prefix = "/api";
    api.stable = "green";
    api.pools = {make_pool("blue", 0, 10101), make_pool("green", 100, 10111),
                 make_pool("canary", 0, 10121)};
    cfg.services.push_back(api);
    return cfg;
}

config::pool& pool_of(config::config& cfg, std::string_view service, std::string_view pool) {
    for (auto& s : cfg.services) {
        for (auto& p : s.pools) {
            if (s.name == service && p.name == pool) {
                return p;
            }
        }
    }
    throw std::logic_error("no such pool in the test config");
}

json::value parse(const std::string& body) {
    json::error_code ec;
    json::value v = json::parse(body, ec);
    if (ec) {
        ADD_FAILURE() << "not JSON: " << body;
        return nullptr;
    }
    return v;
}

std::uint32_t weight_in(const routing::snapshot& snap, std::string_view service,
                        std::string_view pool) {
    const routing::service* s = snap.find_service(service);
    const routing::pool* p = s != nullptr ? s->find_pool(pool) : nullptr;
    return p != nullptr ? p->weight : 9999;
}

header_list bearer(std::string_view token) {
    return {{"Authorization", "Bearer " + std::string(token)}};
}

std::string weights_body(std::string_view weights) {
    return "{\"weights\":" + std::string(weights) + "}";
}

// The data plane stand-in: records every published snapshot and acknowledges
// from its own thread, as proxy workers do. hold() keeps acknowledgements
// back until release().
class fake_workers {
public:
    fake_workers() : guard_(net::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
    ~fake_workers() {
        release();
        guard_.reset();
        thread_.join();
    }

    publish_function publisher() {
        return [this](std::shared_ptr<const routing::snapshot> snap,
                      std::shared_ptr<const proxy::settings>, std::function<void()> done) {
            std::lock_guard lock(mutex_);
            snapshots_.push_back(std::move(snap));
            if (holding_) {
                held_.push_back(std::move(done));
            } else {
                net::post(io_, std::move(done));
            }
        };
    }

    void hold() {
        std::lock_guard lock(mutex_);
        holding_ = true;
    }
    void release() {
        std::lock_guard lock(mutex_);
        holding_ = false;
        for (auto& done : held_) {
            net::post(io_, std::move(done));
        }
        held_.clear();
    }
    std::size_t published() const {
        std::lock_guard lock(mutex_);
        return snapshots_.size();
    }
    std::shared_ptr<const routing::snapshot> last() const {
        std::lock_guard lock(mutex_);
        return snapshots_.empty() ? nullptr : snapshots_.back();
    }

private:
    net::io_context io_;
    net::executor_work_guard<net::io_context::executor_type> guard_;
    std::thread thread_;
    mutable std::mutex mutex_;
    std::vector<std::shared_ptr<const routing::snapshot>> snapshots_;
    std::vector<std::function<void()>> held_;
    bool holding_ = false;
};

// A control thread running a control plane and an admin server on
// 127.0.0.1:0, as main wires them.
class harness {
public:
    explicit harness(config::config cfg, admin_tokens tokens = {std::string(full_token), {}},
                     state_store* store = nullptr, admin_server_options options = {},
                     control_plane_options cp_options = {})
        : guard_(net::make_work_guard(io_)) {
        cp_options.publish = workers.publisher();
        cp_options.store = store;
        cp_options.log = [this](std::string_view line) {
            std::lock_guard lock(log_mutex_);
            log_.emplace_back(line);
        };
        const config::admin admin_cfg = cfg.admin_listener;
        control = std::make_unique<control_plane>(io_.get_executor(), std::move(cfg),
                                                  std::move(cp_options));
        server = std::make_unique<admin_server>(*control, admin_cfg, std::move(tokens),
                                                std::move(options));
        server->set_ready(true);
        server->start();
        port = server->port();
        thread_ = std::thread([this] { io_.run(); });
    }

    ~harness() {
        on_control([this] {
            server->stop();
            return 0;
        });
        guard_.reset();
        io_.stop();
        thread_.join();
        server.reset();
        control.reset();
    }

    // Runs `fn` on the control thread and returns its result.
    template <class Fn>
    std::invoke_result_t<Fn> on_control(Fn fn) {
        std::packaged_task<std::invoke_result_t<Fn>()> task(std::move(fn));
        auto result = task.get_future();
        net::post(io_, [&task] { task(); });
        return result.get();
    }

    std::vector<event> events() {
        return on_control([this] { return control->events_since(0); });
    }
    std::vector<std::string> log() {
        std::lock_guard lock(log_mutex_);
        return log_;
    }

    http_response get(std::string_view target, std::string_view token = full_token) {
        http_client client(port);
        return client.request("GET", target, bearer(token));
    }
    http_response put_weights(std::string_view service, std::string_view weights,
                              header_list extra = {}, std::string_view token = full_token) {
        http_client client(port);
        header_list headers = bearer(token);
        headers.insert(headers.end(), extra.begin(), extra.end());
        headers.emplace_back("Content-Type", "application/json");
        return client.request("PUT", "/api/v1/services/" + std::string(service) + "/weights",
                              headers, weights_body(weights));
    }
    http_response post(std::string_view service, std::string_view action, std::string body,
                       header_list extra = {}, std::string_view token = full_token) {
        http_client client(port);
        header_list headers = bearer(token);
        headers.insert(headers.end(), extra.begin(), extra.end());
        headers.emplace_back("Content-Type", "application/json");
        return client.request("POST",
                              "/api/v1/services/" + std::string(service) + "/" +
                                  std::string(action),
                              headers, std::move(body));
    }
    json::object service(std::string_view name) {
        const http_response res = get("/api/v1/services/" + std::string(name));
        EXPECT_EQ(res.status, 200u) << res.body;
        json::value v = parse(res.body);
        return v.is_object() ? v.get_object() : json::object{};
    }

    fake_workers workers;  // destroyed after the control thread stops
    std::unique_ptr<control_plane> control;
    std::unique_ptr<admin_server> server;
    std::uint16_t port = 0;

private:
    net::io_context io_;
    net::executor_work_guard<net::io_context::executor_type> guard_;
    std::thread thread_;
    std::mutex log_mutex_;
    std::vector<std::string> log_;
};

std::int64_t weight_of(const json::object& service, std::string_view pool) {
    return service.at("pools").at(pool).at("weight").as_int64();
}
std::int64_t generation_of(const json::object& service) {
    return service.at("generation").as_int64();
}

// A directory of its own per test, removed afterwards.
class temp_dir {
public:
    temp_dir() {
        std::string templ = (fs::temp_directory_path() / "switchyard-admin-XXXXXX").string();
        path_ = ::mkdtemp(templ.data());
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    fs::path path() const { return path_; }
    std::vector<std::string> files() const {
        std::vector<std::string> out;
        for (const auto& entry : fs::directory_iterator(path_)) {
            out.push_back(entry.path().filename().string());
        }
        std::sort(out.begin(), out.end());
        return out;
    }

private:
    fs::path path_;
};

std::string read_file(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

persisted_state sample_state() {
    persisted_state state;
    state.last_event_id = 42;
    persisted_service svc;
    svc.pools["blue"] = {90, 100};
    svc.pools["canary"] = {10, 0};
    svc.stable = "blue";
    svc.config_stable = "blue";
    svc.previous = "green";
    svc.generation = 7;
    svc.rollout = {rollout_state::paused, "canary", 2, "paused by a manual weights change"};
    state.services["shop"] = svc;
    persisted_service other;
    other.pools["green"] = {100, 100};
    other.stable = "green";
    other.config_stable = "green";
    state.services["api"] = other;
    return state;
}

// ---------------------------------------------------------------------------
// state stores

TEST(state_store, json_round_trip) {
    const persisted_state state = sample_state();
    std::string error;
    const auto parsed = parse_state(to_json(state), &error);
    ASSERT_TRUE(parsed) << error;
    EXPECT_EQ(*parsed, state);
}

TEST(state_store, rejects_documents_it_cannot_trust) {
    std::string error;
    EXPECT_FALSE(parse_state("{not json", &error));
    EXPECT_FALSE(parse_state("[]", &error));
    EXPECT_FALSE(parse_state(R"({"version":2,"last_event_id":0,"services":{}})", &error));
    EXPECT_NE(error.find("version"), std::string::npos) << error;
    EXPECT_FALSE(parse_state(
        R"({"version":1,"last_event_id":0,"services":{"s":{"stable":"b","config_stable":"b",
            "previous":null,"generation":1,"pools":{"b":{"weight":-1,"config_weight":1}},
            "rollout":{"state":"idle","pool":null,"step":null,"reason":null}}}})",
        &error));
    EXPECT_NE(error.find("weight"), std::string::npos) << error;
    EXPECT_FALSE(parse_state(
        R"({"version":1,"last_event_id":0,"services":{"s":{"stable":"b","config_stable":"b",
            "previous":null,"generation":1,"pools":{},
            "rollout":{"state":"sideways","pool":null,"step":null,"reason":null}}}})",
        &error));
}

TEST(file_state_store, missing_file_is_empty) {
    temp_dir dir;
    file_state_store store((dir.path() / "state.json").string());
    EXPECT_EQ(store.load().result, load_result::status::empty);
}

TEST(file_state_store, round_trip) {
    temp_dir dir;
    file_state_store store((dir.path() / "state.json").string());
    std::string error;
    ASSERT_TRUE(store.save(sample_state(), error)) << error;
    const load_result loaded = store.load();
    ASSERT_EQ(loaded.result, load_result::status::ok) << loaded.error;
    EXPECT_EQ(*loaded.state, sample_state());
}

TEST(file_state_store, save_replaces_atomically_and_leaves_no_temporary) {
    temp_dir dir;
    const fs::path path = dir.path() / "state.json";
    file_state_store store(path.string());
    std::string error;
    persisted_state first = sample_state();
    ASSERT_TRUE(store.save(first, error)) << error;
    const auto inode_before = fs::status(path).type();
    (void)inode_before;
    persisted_state second = first;
    second.services["shop"].pools["canary"].weight = 55;
    second.last_event_id = 43;
    ASSERT_TRUE(store.save(second, error)) << error;

    EXPECT_EQ(dir.files(), std::vector<std::string>{"state.json"});
    const load_result loaded = store.load();
    ASSERT_EQ(loaded.result, load_result::status::ok);
    EXPECT_EQ(*loaded.state, second);
    // The file is whole JSON written by one save, never a mix.
    EXPECT_EQ(read_file(path), to_json(second));
}

TEST(file_state_store, failed_save_keeps_the_old_file) {
    temp_dir dir;
    const fs::path path = dir.path() / "state.json";
    file_state_store store(path.string());
    std::string error;
    ASSERT_TRUE(store.save(sample_state(), error)) << error;
    // A store whose directory does not exist cannot create its temporary file.
    file_state_store broken((dir.path() / "missing" / "state.json").string());
    EXPECT_FALSE(broken.save(sample_state(), error));
    EXPECT_NE(error.find("missing/state.json"), std::string::npos) << error;
    EXPECT_EQ(store.load().result, load_result::status::ok);
}

TEST(file_state_store, corrupt_file_is_renamed_aside_and_reported) {
    temp_dir dir;
    const fs::path path = dir.path() / "state.json";
    {
        std::ofstream out(path);
        out << "{\"version\":1,\"services\":{tru";
    }
    file_state_store store(path.string());
    const load_result loaded = store.load();
    EXPECT_EQ(loaded.result, load_result::status::corrupt);
    EXPECT_FALSE(loaded.state);
    EXPECT_NE(loaded.error.find("corrupt"), std::string::npos) << loaded.error;

    const auto files = dir.files();
    ASSERT_EQ(files.size(), 1u);
    EXPECT_TRUE(files[0].starts_with("state.json.corrupt-")) << files[0];
    EXPECT_NE(loaded.error.find(files[0]), std::string::npos) << loaded.error;
    EXPECT_EQ(read_file(dir.path() / files[0]), "{\"version\":1,\"services\":{tru");

    // Set aside, not overwritten: a new save lands beside it.
    std::string error;
    ASSERT_TRUE(store.save(sample_state(), error)) << error;
    EXPECT_EQ(dir.files().size(), 2u);
    EXPECT_EQ(store.load().result, load_result::status::ok);
}

// ---------------------------------------------------------------------------
// reconcile (pure)

TEST(reconcile, first_start_takes_the_config) {
    const auto result = reconcile(make_config(), nullptr, reconcile_mode::restart);
    EXPECT_TRUE(result.events.empty());
    const auto& shop = result.state.services.at("shop");
    EXPECT_EQ(shop.pools.at("blue").weight, 100u);
    EXPECT_EQ(shop.pools.at("blue").config_weight, 100u);
    EXPECT_EQ(shop.stable, "blue");
    EXPECT_EQ(shop.generation, 1u);
}

TEST(reconcile, runtime_decisions_survive_and_edits_win) {
    config::config cfg = make_config();
    persisted_state prior = reconcile(cfg, nullptr, reconcile_mode::restart).state;
    prior.last_event_id = 5;
    auto& shop = prior.services.at("shop");
    shop.pools.at("blue").weight = 90;
    shop.pools.at("canary").weight = 10;
    shop.generation = 4;

    // Unchanged config: everything from the state, no event.
    auto same = reconcile(cfg, &prior, reconcile_mode::restart);
    EXPECT_TRUE(same.events.empty());
    EXPECT_EQ(same.state, prior);

    // The operator edits canary's weight in the file: that pool follows the
    // file, blue keeps its runtime weight.
    pool_of(cfg, "shop", "canary").weight = 25;
    auto edited = reconcile(cfg, &prior, reconcile_mode::restart);
    const auto& next = edited.state.services.at("shop");
    EXPECT_EQ(next.pools.at("blue").weight, 90u);
    EXPECT_EQ(next.pools.at("canary").weight, 25u);
    EXPECT_EQ(next.pools.at("canary").config_weight, 25u);
    EXPECT_EQ(next.generation, 5u);
    ASSERT_EQ(edited.events.size(), 1u);
    EXPECT_EQ(edited.events[0].actor, "config");
    EXPECT_EQ(edited.events[0].kind, "weights");
    EXPECT_EQ(edited.events[0].service, "shop");
    EXPECT_EQ(edited.state.last_event_id, 5u);
}

TEST(reconcile, stable_follows_the_same_rule) {
    config::config cfg = make_config();
    persisted_state prior = reconcile(cfg, nullptr, reconcile_mode::restart).state;
    auto& shop = prior.services.at("shop");
    shop.stable = "green";  // switched at runtime
    shop.previous = "blue";
    shop.pools.at("blue").weight = 0;
    shop.pools.at("green").weight = 100;

    auto kept = reconcile(cfg, &prior, reconcile_mode::restart);
    EXPECT_EQ(kept.state.services.at("shop").stable, "green");
    EXPECT_EQ(kept.state.services.at("shop").previous, "blue");

    cfg.services[0].stable = "canary";
    auto edited = reconcile(cfg, &prior, reconcile_mode::restart);
    EXPECT_EQ(edited.state.services.at("shop").stable, "canary");
    ASSERT_EQ(edited.events.size(), 1u);
    EXPECT_EQ(edited.events[0].kind, "switch");
}

TEST(reconcile, rollout_in_progress_resumes_paused_and_revert_holds) {
    config::config cfg = make_config();
    persisted_state prior = reconcile(cfg, nullptr, reconcile_mode::restart).state;
    prior.services.at("shop").rollout = {rollout_state::progressing, "canary", 1, ""};
    prior.services.at("api").rollout = {rollout_state::reverted, "canary", std::nullopt,
                                        "error_rate 0.3 > 0.05 (n=400)"};

    auto restarted = reconcile(cfg, &prior, reconcile_mode::restart);
    EXPECT_EQ(restarted.state.services.at("shop").rollout.state, rollout_state::paused);
    EXPECT_EQ(restarted.state.services.at("shop").rollout.step, 1);
    // A restart does not bring a reverted version back.
    EXPECT_EQ(restarted.state.services.at("api").rollout.state, rollout_state::reverted);

    // A config edit of its weights is an operator acting on it.
    pool_of(cfg, "api", "canary").weight = 5;
    auto edited = reconcile(cfg, &prior, reconcile_mode::reload);
    EXPECT_EQ(edited.state.services.at("api").rollout.state, rollout_state::idle);
    EXPECT_EQ(edited.state.services.at("api").pools.at("canary").weight, 5u);
}

TEST(reconcile, removed_pools_cannot_leave_all_weights_zero) {
    config::config cfg = make_config();
    persisted_state prior = reconcile(cfg, nullptr, reconcile_mode::restart).state;
    auto& shop = prior.services.at("shop");
    shop.pools.at("blue").weight = 0;
    shop.pools.at("canary").weight = 100;
    // canary leaves the config
    cfg.services[0].pools.pop_back();
    auto result = reconcile(cfg, &prior, reconcile_mode::reload);
    const auto& next = result.state.services.at("shop");
    EXPECT_FALSE(next.pools.contains("canary"));
    EXPECT_EQ(next.pools.at("blue").weight, 100u);
}

TEST(admin_json, doubles_come_out_in_plain_form) {
    const json::object doc{{"a", 0.0},     {"b", 0.0024}, {"c", 41.1}, {"s", "x\"y"},
                           {"n", nullptr}, {"i", -3},     {"u", 7u},   {"l", json::array{1, 2.5}}};
    EXPECT_EQ(to_text(doc),
              R"({"a":0.0,"b":0.0024,"c":41.1,"s":"x\"y","n":null,"i":-3,"u":7,"l":[1,2.5]})");
    EXPECT_EQ(to_text(json::value(std::numeric_limits<double>::infinity())), "null");
}

// ---------------------------------------------------------------------------
// tokens

TEST(admin_tokens, constant_time_compare_is_exact) {
    EXPECT_TRUE(token_equals("abc", "abc"));
    EXPECT_FALSE(token_equals("abd", "abc"));
    EXPECT_FALSE(token_equals("ab", "abc"));
    EXPECT_FALSE(token_equals("abcd", "abc"));
    EXPECT_FALSE(token_equals("", "abc"));
    EXPECT_FALSE(token_equals("", ""));
}

TEST(admin_tokens, files_are_trimmed_and_empty_ones_refused) {
    temp_dir dir;
    {
        std::ofstream(dir.path() / "full") << "tok-full\n";
        std::ofstream(dir.path() / "read") << "tok-read\r\n";
        std::ofstream(dir.path() / "empty") << "\n";
    }
    config::admin cfg;
    cfg.token_file = (dir.path() / "full").string();
    cfg.read_token_file = (dir.path() / "read").string();
    std::string error;
    const auto tokens = load_tokens(cfg, error);
    ASSERT_TRUE(tokens) << error;
    EXPECT_EQ(tokens->full, "tok-full");
    EXPECT_EQ(tokens->read, "tok-read");

    cfg.token_file = (dir.path() / "empty").string();
    EXPECT_FALSE(load_tokens(cfg, error));
    EXPECT_NE(error.find("empty"), std::string::npos) << error;
    cfg.token_file = (dir.path() / "absent").string();
    EXPECT_FALSE(load_tokens(cfg, error));
    EXPECT_NE(error.find("absent"), std::string::npos) << error;
}

// ---------------------------------------------------------------------------
// admin API

TEST(admin_api, api_needs_the_bearer_token) {
    harness h(make_config());
    http_client client(h.port);

    http_response res = client.request("GET", "/api/v1/services");
    EXPECT_EQ(res.status, 401u);
    EXPECT_EQ(res.header("WWW-Authenticate"), "Bearer");
    EXPECT_EQ(res.header("Content-Type"), "application/json");
    EXPECT_TRUE(parse(res.body).as_object().at("error").is_string()) << res.body;

    res = client.request("GET", "/api/v1/services", bearer("wrong"));
    EXPECT_EQ(res.status, 401u);
    res = client.request("GET", "/api/v1/services", bearer(std::string(full_token) + "x"));
    EXPECT_EQ(res.status, 401u);
    res = client.request("GET", "/api/v1/services", {{"Authorization", "Basic Zm9vOmJhcg=="}});
    EXPECT_EQ(res.status, 401u);
    // Changes are refused the same way, and change nothing.
    res = client.request("PUT", "/api/v1/services/shop/weights", {},
                         weights_body(R"({"blue":50,"canary":50})"));
    EXPECT_EQ(res.status, 401u);

    res = client.request("GET", "/api/v1/services", bearer(full_token));
    EXPECT_EQ(res.status, 200u);
    res = client.request("GET", "/api/v1/services",
                         {{"Authorization", "bearer  " + std::string(full_token)}});
    EXPECT_EQ(res.status, 200u);
    EXPECT_EQ(weight_of(h.service("shop"), "blue"), 100);
    // One keep-alive connection carried all of it.
    EXPECT_EQ(client.connections_made(), 1u);
}

TEST(admin_api, health_endpoints_need_no_token) {
    harness h(make_config());
    http_client client(h.port);
    http_response res = client.request("GET", "/healthz");
    EXPECT_EQ(res.status, 200u);
    EXPECT_EQ(res.body, "ok\n");
    res = client.request("GET", "/readyz");
    EXPECT_EQ(res.status, 200u);

    h.server->set_ready(false);  // draining
    res = client.request("GET", "/readyz");
    EXPECT_EQ(res.status, 503u);
    EXPECT_EQ(res.header("Content-Type"), "application/json");
    h.server->set_ready(true);
    EXPECT_EQ(client.request("GET", "/readyz").status, 200u);

    res = client.request("HEAD", "/api/v1/services/shop", bearer(full_token));
    EXPECT_EQ(res.status, 200u);
    EXPECT_TRUE(res.body.empty());
    EXPECT_GT(std::stoul(res.header("Content-Length")), 100u);
    EXPECT_EQ(client.request("GET", "/healthz").status, 200u);  // framing intact
    EXPECT_EQ(client.connections_made(), 1u);

    res = client.request("POST", "/healthz");
    EXPECT_EQ(res.status, 405u);
    EXPECT_EQ(res.header("Allow"), "GET, HEAD");

    res = client.request("GET", "/nope");
    EXPECT_EQ(res.status, 404u);
    EXPECT_TRUE(parse(res.body).as_object().at("error").is_string());
}

TEST(admin_api, metrics_come_from_the_hook) {
    admin_server_options options;
    options.metrics_text = [] { return std::string("switchyard_up 1\n"); };
    harness h(make_config(), {std::string(full_token), {}}, nullptr, options);
    const http_response res = test::http_get(h.port, "/metrics");
    EXPECT_EQ(res.status, 200u);
    EXPECT_EQ(res.body, "switchyard_up 1\n");
    EXPECT_TRUE(res.header("Content-Type").starts_with("text/plain; version=0.0.4"));
}

TEST(admin_api, read_token_may_only_read) {
    harness h(make_config(), {std::string(full_token), std::string(read_token)});
    EXPECT_EQ(h.get("/api/v1/services", read_token).status, 200u);
    EXPECT_EQ(h.get("/api/v1/services/shop", read_token).status, 200u);

    const http_response res = h.put_weights("shop", R"({"blue":50,"canary":50})", {}, read_token);
    EXPECT_EQ(res.status, 403u) << res.body;
    EXPECT_TRUE(parse(res.body).as_object().at("error").is_string());
    const json::object shop = h.service("shop");
    EXPECT_EQ(weight_of(shop, "blue"), 100);
    EXPECT_EQ(generation_of(shop), 1);
}

TEST(admin_api, service_list_and_service_shapes) {
    harness h(make_config());
    const http_response res = h.get("/api/v1/services");
    ASSERT_EQ(res.status, 200u);
    EXPECT_EQ(res.header("Content-Type"), "application/json");
    const json::value doc = parse(res.body);
    const json::array& services = doc.at("services").as_array();
    ASSERT_EQ(services.size(), 2u);
    EXPECT_EQ(services[0].at("name").as_string(), "shop");
    EXPECT_EQ(services[1].at("name").as_string(), "api");

    const json::object shop = h.service("shop");
    EXPECT_EQ(shop.at("name").as_string(), "shop");
    EXPECT_EQ(shop.at("stable").as_string(), "blue");
    EXPECT_EQ(generation_of(shop), 1);
    const json::object& pools = shop.at("pools").as_object();
    ASSERT_EQ(pools.size(), 3u);
    const json::object& blue = pools.at("blue").as_object();
    EXPECT_EQ(blue.at("weight").as_int64(), 100);
    const json::array& endpoints = blue.at("endpoints").as_array();
    ASSERT_EQ(endpoints.size(), 2u);
    EXPECT_EQ(endpoints[0].at("address").as_string(), "127.0.0.1:10001");
    EXPECT_TRUE(endpoints[0].at("healthy").as_bool());
    EXPECT_FALSE(endpoints[0].at("ejected").as_bool());
    const json::object& stats = blue.at("stats").as_object();
    for (const char* key :
         {"requests", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "rps"}) {
        EXPECT_TRUE(stats.contains(key)) << key;
        EXPECT_TRUE(stats.at(key).is_number()) << key;
    }
    const json::object& rollout = shop.at("rollout").as_object();
    EXPECT_EQ(rollout.at("state").as_string(), "idle");
    EXPECT_TRUE(rollout.at("pool").is_null());
    EXPECT_TRUE(rollout.at("step").is_null());
    EXPECT_TRUE(rollout.at("reason").is_null());
    EXPECT_TRUE(shop.at("guard").at("pools").as_object().empty());

    EXPECT_EQ(h.service("api").at("stable").as_string(), "green");
}

TEST(admin_api, unknown_service_and_paths) {
    harness h(make_config());
    http_response res = h.get("/api/v1/services/nope");
    EXPECT_EQ(res.status, 404u);
    EXPECT_NE(parse(res.body).at("error").as_string().find("nope"), std::string::npos);
    res = h.put_weights("nope", R"({"blue":1})");
    EXPECT_EQ(res.status, 404u);
    res = h.get("/api/v1/nothing");
    EXPECT_EQ(res.status, 404u);

    http_client client(h.port);
    res = client.request("DELETE", "/api/v1/services/shop", bearer(full_token));
    EXPECT_EQ(res.status, 405u);
    EXPECT_EQ(res.header("Allow"), "GET, HEAD");
    res = client.request("GET", "/api/v1/services/shop/weights", bearer(full_token));
    EXPECT_EQ(res.status, 405u);
    EXPECT_EQ(res.header("Allow"), "PUT");
}

TEST(admin_api, put_weights_changes_publishes_and_records) {
    harness h(make_config());
    const std::size_t published = h.workers.published();
    const http_response res = h.put_weights("shop", R"({"blue":90,"canary":10})");
    ASSERT_EQ(res.status, 200u) << res.body;
    const json::object shop = parse(res.body).as_object();
    EXPECT_EQ(weight_of(shop, "blue"), 90);
    EXPECT_EQ(weight_of(shop, "canary"), 10);
    EXPECT_EQ(weight_of(shop, "green"), 0);  // not named: kept
    EXPECT_EQ(generation_of(shop), 2);
    EXPECT_EQ(res.header("ETag"), "\"2\"");

    // The answer came after the workers had the new snapshot.
    ASSERT_EQ(h.workers.published(), published + 1);
    const auto snap = h.workers.last();
    EXPECT_EQ(weight_in(*snap, "shop", "blue"), 90u);
    EXPECT_EQ(weight_in(*snap, "shop", "canary"), 10u);
    EXPECT_EQ(weight_in(*snap, "api", "green"), 100u);
    EXPECT_EQ(snap->find_service("shop")->generation, 2u);

    EXPECT_EQ(generation_of(h.service("shop")), 2);
    EXPECT_EQ(generation_of(h.service("api")), 1);

    const auto events = h.events();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].id, 1u);
    EXPECT_EQ(events[0].kind, "weights");
    EXPECT_EQ(events[0].actor, "admin");
    EXPECT_EQ(events[0].service, "shop");
    EXPECT_EQ(events[0].before.at("weights").at("canary").to_number<std::int64_t>(), 0);
    EXPECT_EQ(events[0].after.at("weights").at("canary").to_number<std::int64_t>(), 10);
    EXPECT_EQ(events[0].time.size(), std::string("2024-01-01T00:00:00.000Z").size());
    EXPECT_EQ(to_json(events[0]).at("kind").as_string(), "weights");
}

TEST(admin_api, the_answer_waits_for_every_worker) {
    harness h(make_config());
    h.workers.hold();
    auto answer = std::async(std::launch::async,
                             [&h] { return h.put_weights("shop", R"({"blue":80,"canary":20})"); });
    ASSERT_TRUE(wait_until([&] {
        const auto snap = h.workers.last();
        return snap && weight_in(*snap, "shop", "canary") == 20;
    }));
    EXPECT_EQ(answer.wait_for(std::chrono::milliseconds(150)), std::future_status::timeout);
    h.workers.release();
    const http_response res = answer.get();
    EXPECT_EQ(res.status, 200u);
}

TEST(admin_api, invalid_weights_are_400_and_change_nothing) {
    harness h(make_config());
    const std::size_t published = h.workers.published();
    for (const char* weights :
         {R"({"purple":10})", R"({"canary":-1})", R"({"canary":1.5})", R"({"canary":"10"})",
          R"({"blue":0})", R"({})", R"({"canary":99999999999999999999})", R"({"canary":1000001})",
          R"([1,2])"}) {
        const http_response res = h.put_weights("shop", weights);
        EXPECT_EQ(res.status, 400u) << weights << " -> " << res.body;
        EXPECT_EQ(res.header("Content-Type"), "application/json");
        EXPECT_TRUE(parse(res.body).at("error").is_string());
    }
    http_client client(h.port);
    for (const char* body : {"not json", R"({"weight":{"blue":1}})", R"({"weights":[1]})",
                             R"({"weights":{"blue":1},"extra":true})"}) {
        const http_response res =
            client.request("PUT", "/api/v1/services/shop/weights", bearer(full_token), body);
        EXPECT_EQ(res.status, 400u) << body << " -> " << res.body;
    }
    const json::object shop = h.service("shop");
    EXPECT_EQ(weight_of(shop, "blue"), 100);
    EXPECT_EQ(weight_of(shop, "canary"), 0);
    EXPECT_EQ(generation_of(shop), 1);
    EXPECT_EQ(h.workers.published(), published);
    EXPECT_TRUE(h.events().empty());
}

TEST(admin_api, if_match_guards_against_stale_writes) {
    harness h(make_config());
    ASSERT_EQ(h.put_weights("shop", R"({"blue":90,"canary":10})").status, 200u);

    http_response res =
        h.put_weights("shop", R"({"blue":50,"canary":50})", {{"If-Match", "\"1\""}});
    EXPECT_EQ(res.status, 412u) << res.body;
    EXPECT_TRUE(parse(res.body).at("error").is_string());
    json::object shop = h.service("shop");
    EXPECT_EQ(weight_of(shop, "canary"), 10);
    EXPECT_EQ(generation_of(shop), 2);

    res = h.put_weights("shop", R"({"blue":50,"canary":50})", {{"If-Match", "\"2\""}});
    EXPECT_EQ(res.status, 200u) << res.body;
    shop = parse(res.body).as_object();
    EXPECT_EQ(weight_of(shop, "canary"), 50);
    EXPECT_EQ(generation_of(shop), 3);

    res = h.put_weights("shop", R"({"canary":5})", {{"If-Match", "soon"}});
    EXPECT_EQ(res.status, 400u) << res.body;
}

TEST(admin_api, asking_for_what_is_changes_nothing) {
    harness h(make_config());
    const std::size_t published = h.workers.published();
    const http_response res = h.put_weights("shop", R"({"blue":100})");
    EXPECT_EQ(res.status, 200u);
    EXPECT_EQ(generation_of(parse(res.body).as_object()), 1);
    EXPECT_EQ(h.workers.published(), published);
    EXPECT_TRUE(h.events().empty());
}

TEST(admin_api, a_failed_save_is_500_and_changes_nothing) {
    memory_state_store store;
    harness h(make_config(), {std::string(full_token), {}}, &store);
    store.fail_saves = true;
    const http_response res = h.put_weights("shop", R"({"blue":90,"canary":10})");
    EXPECT_EQ(res.status, 500u) << res.body;
    EXPECT_NE(parse(res.body).at("error").as_string().find("nothing was changed"),
              std::string::npos);
    EXPECT_EQ(weight_of(h.service("shop"), "canary"), 0);
    EXPECT_TRUE(h.events().empty());
}

TEST(admin_api, oversized_bodies_are_413) {
    admin_server_options options;
    options.body_limit = 1024;
    harness h(make_config(), {std::string(full_token), {}}, nullptr, options);
    http_client client(h.port);
    const http_response res = client.request("PUT", "/api/v1/services/shop/weights",
                                             bearer(full_token), std::string(4096, ' '));
    EXPECT_EQ(res.status, 413u);
}

TEST(admin_api, changes_persist_and_restart_follows_the_rule) {
    temp_dir dir;
    const std::string path = (dir.path() / "state.json").string();
    {
        file_state_store store(path);
        harness h(make_config(), {std::string(full_token), {}}, &store);
        ASSERT_EQ(h.put_weights("shop", R"({"blue":90,"canary":10})").status, 200u);
        // Saved before the call answered.
        const load_result saved = file_state_store(path).load();
        ASSERT_EQ(saved.result, load_result::status::ok);
        EXPECT_EQ(saved.state->services.at("shop").pools.at("canary").weight, 10u);
        EXPECT_EQ(saved.state->last_event_id, 1u);
    }
    {
        // Restart, same config: the runtime decision survives.
        file_state_store store(path);
        harness h(make_config(), {std::string(full_token), {}}, &store);
        const json::object shop = h.service("shop");
        EXPECT_EQ(weight_of(shop, "blue"), 90);
        EXPECT_EQ(weight_of(shop, "canary"), 10);
        EXPECT_EQ(generation_of(shop), 2);
        EXPECT_TRUE(h.events().empty());
        EXPECT_EQ(weight_in(*h.control->snapshot(), "shop", "canary"), 10u);
    }
    {
        // Restart after an operator edited canary's weight in the file: the
        // edit wins, blue keeps its runtime weight, and "config" says so.
        config::config edited = make_config();
        pool_of(edited, "shop", "canary").weight = 25;
        file_state_store store(path);
        harness h(std::move(edited), {std::string(full_token), {}}, &store);
        const json::object shop = h.service("shop");
        EXPECT_EQ(weight_of(shop, "blue"), 90);
        EXPECT_EQ(weight_of(shop, "canary"), 25);
        EXPECT_EQ(generation_of(shop), 3);
        const auto events = h.events();
        ASSERT_EQ(events.size(), 1u);
        EXPECT_EQ(events[0].actor, "config");
        EXPECT_EQ(events[0].kind, "weights");
        EXPECT_EQ(events[0].id, 2u);  // ids continue across restarts
        EXPECT_EQ(events[0].after.at("weights").at("canary").to_number<std::int64_t>(), 25);
    }
    {
        // And that edit is now the weight last seen: a further restart keeps it.
        config::config edited = make_config();
        pool_of(edited, "shop", "canary").weight = 25;
        file_state_store store(path);
        harness h(std::move(edited), {std::string(full_token), {}}, &store);
        EXPECT_EQ(weight_of(h.service("shop"), "canary"), 25);
        EXPECT_TRUE(h.events().empty());
    }
}

TEST(admin_api, corrupt_state_is_reported_set_aside_and_replaced) {
    temp_dir dir;
    const fs::path path = dir.path() / "state.json";
    { std::ofstream(path) << "garbage"; }
    file_state_store store(path.string());
    harness h(make_config(), {std::string(full_token), {}}, &store);
    const auto log = h.log();
    ASSERT_EQ(log.size(), 1u);
    EXPECT_NE(log[0].find("corrupt"), std::string::npos) << log[0];
    EXPECT_EQ(weight_of(h.service("shop"), "blue"), 100);
    const auto files = dir.files();
    ASSERT_EQ(files.size(), 2u);
    EXPECT_EQ(files[0], "state.json");
    EXPECT_TRUE(files[1].starts_with("state.json.corrupt-"));
    EXPECT_EQ(read_file(dir.path() / files[1]), "garbage");
}

TEST(admin_api, non_loopback_without_token_is_refused) {
    net::io_context io;
    config::config cfg = make_config();
    control_plane control(io.get_executor(), cfg, {});
    config::admin exposed;
    exposed.address = "0.0.0.0:9901";
    exposed.host = "0.0.0.0";
    exposed.port = 9901;
    try {
        admin_server server(control, exposed, admin_tokens{});
        FAIL() << "an open admin API on a public address was accepted";
    } catch (const config_error& e) {
        EXPECT_STREQ(e.what(),
                     "admin address 0.0.0.0:9901 is not loopback and no admin token is configured");
    }
    // With a token the same address is fine (port 0 here, to bind anywhere).
    exposed.address = "0.0.0.0:0";
    exposed.port = 0;
    admin_server server(control, exposed, admin_tokens{std::string(full_token), {}});
    EXPECT_NE(server.port(), 0);
    // Loopback without a token: open.
    admin_server open(control, cfg.admin_listener, admin_tokens{});
    EXPECT_NE(open.port(), 0);
    // A read token alone is a configuration mistake.
    EXPECT_THROW(admin_server(control, cfg.admin_listener, admin_tokens{{}, "r"}), config_error);
}

TEST(admin_api, open_on_loopback_without_token) {
    harness h(make_config(), admin_tokens{});
    http_client client(h.port);
    EXPECT_EQ(client.request("GET", "/api/v1/services").status, 200u);
}

TEST(admin_api, port_in_use_is_a_startup_error) {
    harness h(make_config());
    net::io_context io;
    control_plane control(io.get_executor(), make_config(), {});
    config::admin taken;
    taken.host = "127.0.0.1";
    taken.port = h.port;
    taken.address = "127.0.0.1:" + std::to_string(h.port);
    try {
        admin_server server(control, taken, admin_tokens{std::string(full_token), {}});
        FAIL() << "bound a port already served";
    } catch (const startup_error& e) {
        EXPECT_NE(std::string(e.what()).find("port in use"), std::string::npos) << e.what();
    }
}

// ---------------------------------------------------------------------------
// switch, promote, rollback, rollout, the guard's revert, events (SPEC §5, §6)

// A smoke test that records what it was asked and answers as told.
struct smoke_recorder {
    std::mutex mutex;
    std::vector<std::string> endpoints;
    bool fail = false;

    smoke_function function() {
        return [this](const config::smoke& policy, std::vector<std::string> eps,
                      std::function<void(std::vector<smoke_failure>)> done) {
            std::vector<smoke_failure> failures;
            {
                std::lock_guard lock(mutex);
                endpoints = eps;
                if (fail) {
                    for (const auto& e : eps) {
                        failures.push_back({e, policy.paths.front(), 503, ""});
                    }
                }
            }
            done(std::move(failures));
        };
    }
};

control_plane_options with_smoke(smoke_recorder& smoke) {
    control_plane_options options;
    options.smoke = smoke.function();
    return options;
}

// A decision the guard would make: canary with 40 % errors against 1 %.
health::decision breach_decision() {
    health::window_summary canary;
    canary.requests = 400;
    canary.errors = 160;
    health::window_summary stable;
    stable.requests = 1600;
    stable.errors = 16;
    for (int i = 0; i < 400; ++i) {
        canary.latency.record(5000);
    }
    for (int i = 0; i < 1600; ++i) {
        stable.latency.record(5000);
    }
    return health::judge(canary, stable, config::guard{});
}

TEST(admin_ops, switch_runs_the_smoke_test_then_switches) {
    smoke_recorder smoke;
    harness h(make_config(), {std::string(full_token), {}}, nullptr, {}, with_smoke(smoke));
    const http_response res = h.post("shop", "switch", R"({"to":"green"})");
    ASSERT_EQ(res.status, 200u) << res.body;
    const json::object shop = parse(res.body).as_object();
    EXPECT_EQ(shop.at("stable").as_string(), "green");
    EXPECT_EQ(shop.at("previous").as_string(), "blue");
    EXPECT_EQ(weight_of(shop, "green"), 100);
    EXPECT_EQ(weight_of(shop, "blue"), 0);
    EXPECT_EQ(generation_of(shop), 2);
    EXPECT_EQ(smoke.endpoints,
              (std::vector<std::string>{"127.0.0.1:10011", "127.0.0.1:10012"}));
    EXPECT_EQ(weight_in(*h.workers.last(), "shop", "green"), 100u);
    EXPECT_TRUE(shop.at("guard").as_object().contains("post_switch_watch"));
    const auto events = h.events();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].kind, "switch");
    EXPECT_EQ(events[0].after.at("stable").as_string(), "green");
}

TEST(admin_ops, failed_smoke_test_is_409_with_details_and_changes_nothing) {
    smoke_recorder smoke;
    smoke.fail = true;
    harness h(make_config(), {std::string(full_token), {}}, nullptr, {}, with_smoke(smoke));
    const std::size_t published = h.workers.published();
    const http_response res = h.post("shop", "switch", R"({"to":"green"})");
    ASSERT_EQ(res.status, 409u) << res.body;
    const json::object body = parse(res.body).as_object();
    EXPECT_NE(body.at("error").as_string().find("smoke"), json::string::npos);
    const auto& failures = body.at("details").at("failures").as_array();
    ASSERT_EQ(failures.size(), 2u);
    EXPECT_EQ(failures[0].at("endpoint").as_string(), "127.0.0.1:10011");
    EXPECT_EQ(failures[0].at("status").as_int64(), 503);
    const json::object shop = h.service("shop");
    EXPECT_EQ(shop.at("stable").as_string(), "blue");
    EXPECT_EQ(generation_of(shop), 1);
    EXPECT_EQ(h.workers.published(), published);
    EXPECT_TRUE(h.events().empty());
}

TEST(admin_ops, switch_validates_its_request) {
    smoke_recorder smoke;
    harness h(make_config(), {std::string(full_token), std::string(read_token)}, nullptr, {},
              with_smoke(smoke));
    EXPECT_EQ(h.post("shop", "switch", R"({"to":"purple"})").status, 400u);
    EXPECT_EQ(h.post("shop", "switch", R"({})").status, 400u);
    EXPECT_EQ(h.post("shop", "switch", R"({"to":7})").status, 400u);
    EXPECT_EQ(h.post("nope", "switch", R"({"to":"green"})").status, 404u);
    EXPECT_EQ(h.post("shop", "switch", R"({"to":"green"})", {{"If-Match", "\"9\""}}).status,
              412u);
    EXPECT_EQ(h.post("shop", "switch", R"({"to":"green"})", {}, read_token).status, 403u);
    http_client client(h.port);
    EXPECT_EQ(client.request("GET", "/api/v1/services/shop/switch", bearer(full_token)).status,
              405u);
    EXPECT_EQ(generation_of(h.service("shop")), 1);
}

TEST(admin_ops, rollback_after_weights_and_after_a_switch) {
    smoke_recorder smoke;
    harness h(make_config(), {std::string(full_token), {}}, nullptr, {}, with_smoke(smoke));
    EXPECT_EQ(h.post("shop", "rollback", "").status, 409u);  // nothing to roll back

    ASSERT_EQ(h.put_weights("shop", R"({"blue":80,"canary":20})").status, 200u);
    http_response res = h.post("shop", "rollback", "");
    ASSERT_EQ(res.status, 200u) << res.body;
    json::object shop = parse(res.body).as_object();
    EXPECT_EQ(weight_of(shop, "blue"), 100);
    EXPECT_EQ(weight_of(shop, "canary"), 0);
    EXPECT_EQ(shop.at("stable").as_string(), "blue");

    ASSERT_EQ(h.post("shop", "switch", R"({"to":"green"})").status, 200u);
    res = h.post("shop", "rollback", "{}");
    ASSERT_EQ(res.status, 200u) << res.body;
    shop = parse(res.body).as_object();
    EXPECT_EQ(shop.at("stable").as_string(), "blue");
    EXPECT_EQ(weight_of(shop, "blue"), 100);
    EXPECT_EQ(weight_of(shop, "green"), 0);
    const auto events = h.events();
    ASSERT_EQ(events.size(), 4u);
    EXPECT_EQ(events[1].kind, "rollback");
    EXPECT_EQ(events[3].kind, "rollback");
}

TEST(admin_ops, promote_defaults_to_the_heaviest_candidate) {
    smoke_recorder smoke;
    harness h(make_config(), {std::string(full_token), {}}, nullptr, {}, with_smoke(smoke));
    EXPECT_EQ(h.post("shop", "promote", "").status, 409u);  // no candidate with traffic
    EXPECT_EQ(h.post("shop", "promote", R"({"pool":"blue"})").status, 400u);
    ASSERT_EQ(h.put_weights("shop", R"({"blue":70,"canary":30})").status, 200u);
    const http_response res = h.post("shop", "promote", "");
    ASSERT_EQ(res.status, 200u) << res.body;
    const json::object shop = parse(res.body).as_object();
    EXPECT_EQ(shop.at("stable").as_string(), "canary");
    EXPECT_EQ(weight_of(shop, "canary"), 100);
    EXPECT_EQ(shop.at("rollout").at("state").as_string(), "promoted");
    EXPECT_EQ(h.events().back().kind, "promote");
}

TEST(admin_ops, rollout_lifecycle_and_invalid_actions) {
    harness h(make_config());
    EXPECT_EQ(h.post("shop", "rollout", R"({"action":"pause"})").status, 409u);
    EXPECT_EQ(h.post("shop", "rollout", R"({"action":"dance"})").status, 400u);
    EXPECT_EQ(h.post("shop", "rollout", R"({"action":"start","pool":"blue"})").status, 400u);

    http_response res = h.post("shop", "rollout", R"({"action":"start","pool":"canary"})");
    ASSERT_EQ(res.status, 200u) << res.body;
    json::object shop = parse(res.body).as_object();
    EXPECT_EQ(shop.at("rollout").at("state").as_string(), "progressing");
    EXPECT_EQ(shop.at("rollout").at("pool").as_string(), "canary");
    EXPECT_EQ(shop.at("rollout").at("step").as_int64(), 0);
    EXPECT_EQ(weight_of(shop, "canary"), 5);
    EXPECT_EQ(weight_of(shop, "blue"), 95);
    EXPECT_EQ(h.post("shop", "rollout", R"({"action":"start","pool":"canary"})").status, 409u);

    res = h.post("shop", "rollout", R"({"action":"pause"})");
    ASSERT_EQ(res.status, 200u);
    EXPECT_EQ(parse(res.body).at("rollout").at("state").as_string(), "paused");
    EXPECT_EQ(h.post("shop", "rollout", R"({"action":"pause"})").status, 409u);
    res = h.post("shop", "rollout", R"({"action":"resume"})");
    ASSERT_EQ(res.status, 200u);
    EXPECT_EQ(parse(res.body).at("rollout").at("state").as_string(), "progressing");

    // The autopilot's step: the next step's weights, then a promote.
    const auto generation = static_cast<std::uint64_t>(generation_of(h.service("shop")));
    h.on_control([&] {
        h.control->advance_rollout("shop", generation);
        return 0;
    });
    ASSERT_TRUE(wait_until([&] { return weight_of(h.service("shop"), "canary") == 10; },
                           std::chrono::seconds(5)));
    h.on_control([&] {
        h.control->advance_rollout("shop", generation);  // stale: a no-op
        return 0;
    });
    res = h.post("shop", "rollout", R"({"action":"abort"})");
    ASSERT_EQ(res.status, 200u);
    shop = parse(res.body).as_object();
    EXPECT_EQ(shop.at("rollout").at("state").as_string(), "reverted");
    EXPECT_NE(shop.at("rollout").at("reason").as_string().find("aborted"), json::string::npos);
    EXPECT_EQ(weight_of(shop, "canary"), 0);
    EXPECT_EQ(weight_of(shop, "blue"), 100);
    EXPECT_EQ(h.post("shop", "rollout", R"({"action":"abort"})").status, 409u);
}

TEST(admin_ops, rollout_promotes_after_the_last_step) {
    config::config cfg = make_config();
    cfg.services[0].rollout_policy.steps = {50, 100};
    harness h(std::move(cfg));
    ASSERT_EQ(h.post("shop", "rollout", R"({"action":"start","pool":"canary"})").status, 200u);
    for (int expected_weight : {100, -1}) {
        const auto generation = static_cast<std::uint64_t>(generation_of(h.service("shop")));
        h.on_control([&] {
            h.control->advance_rollout("shop", generation);
            return 0;
        });
        ASSERT_TRUE(wait_until(
            [&] { return generation_of(h.service("shop")) == std::int64_t(generation) + 1; },
            std::chrono::seconds(5)));
        if (expected_weight > 0) {
            EXPECT_EQ(weight_of(h.service("shop"), "canary"), expected_weight);
            EXPECT_EQ(weight_of(h.service("shop"), "blue"), 0);
        }
    }
    const json::object shop = h.service("shop");
    EXPECT_EQ(shop.at("stable").as_string(), "canary");
    EXPECT_EQ(shop.at("rollout").at("state").as_string(), "promoted");
    const auto events = h.events();
    EXPECT_EQ(events.back().kind, "promote");
    EXPECT_EQ(events.back().actor, "rollout");
}

TEST(admin_ops, guard_revert_records_the_decision_and_survives_a_restart) {
    memory_state_store store;
    const health::decision d = breach_decision();
    ASSERT_EQ(d.result, health::verdict::breach);
    {
        config::config cfg = make_config();
        pool_of(cfg, "shop", "blue").weight = 80;
        pool_of(cfg, "shop", "canary").weight = 20;
        harness h(std::move(cfg), {std::string(full_token), {}}, &store);
        h.on_control([&] {
            h.control->guard_revert("shop", "canary", d);
            return 0;
        });
        ASSERT_TRUE(wait_until([&] { return weight_of(h.service("shop"), "canary") == 0; },
                               std::chrono::seconds(5)));
        const json::object shop = h.service("shop");
        EXPECT_EQ(weight_of(shop, "blue"), 100);
        EXPECT_EQ(shop.at("rollout").at("state").as_string(), "reverted");
        EXPECT_EQ(shop.at("rollout").at("pool").as_string(), "canary");
        EXPECT_NE(shop.at("rollout").at("reason").as_string().find("error_rate"),
                  json::string::npos);
        const auto& decision = shop.at("guard").at("decision").as_object();
        EXPECT_EQ(decision.at("metric").as_string(), "error_rate");
        EXPECT_EQ(decision.at("pool_requests").as_int64(), 400);
        EXPECT_EQ(decision.at("baseline_requests").as_int64(), 1600);
        const auto events = h.events();
        ASSERT_EQ(events.size(), 1u);
        EXPECT_EQ(events[0].kind, "revert");
        EXPECT_EQ(events[0].actor, "guard");
        ASSERT_TRUE(events[0].details.has_value());
        EXPECT_EQ(events[0].details->at("metric").as_string(), "error_rate");

        const http_response listed = h.get("/api/v1/events?since=0");
        ASSERT_EQ(listed.status, 200u);
        EXPECT_EQ(parse(listed.body).at("events").as_array().size(), 1u);
        EXPECT_TRUE(parse(h.get("/api/v1/events?since=1").body)
                        .at("events")
                        .as_array()
                        .empty());
        EXPECT_EQ(h.get("/api/v1/events?since=x").status, 400u);
        EXPECT_EQ(h.get("/api/v1/events?since=").status, 400u);
    }
    {
        // Restart with the same config (canary still 20 in the file).
        config::config cfg = make_config();
        pool_of(cfg, "shop", "blue").weight = 80;
        pool_of(cfg, "shop", "canary").weight = 20;
        harness h(std::move(cfg), {std::string(full_token), {}}, &store);
        const json::object shop = h.service("shop");
        EXPECT_EQ(weight_of(shop, "canary"), 0);
        EXPECT_EQ(shop.at("rollout").at("state").as_string(), "reverted");
        // An operator's weights change ends the reverted state.
        ASSERT_EQ(h.put_weights("shop", R"({"canary":5})").status, 200u);
        EXPECT_EQ(h.service("shop").at("rollout").at("state").as_string(), "idle");
    }
}

TEST(admin_ops, events_file_gets_one_json_line_per_event) {
    temp_dir dir;
    control_plane_options options;
    options.events_file = (dir.path() / "events.jsonl").string();
    harness h(make_config(), {std::string(full_token), {}}, nullptr, {}, options);
    ASSERT_EQ(h.put_weights("shop", R"({"blue":90,"canary":10})").status, 200u);
    ASSERT_EQ(h.post("shop", "rollback", "").status, 200u);
    std::istringstream lines(read_file(dir.path() / "events.jsonl"));
    std::vector<json::value> events;
    for (std::string line; std::getline(lines, line);) {
        events.push_back(parse(line));
    }
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].at("id").as_int64(), 1);
    EXPECT_EQ(events[0].at("kind").as_string(), "weights");
    EXPECT_EQ(events[1].at("kind").as_string(), "rollback");
}

}  // namespace
}  // namespace switchyard::admin
