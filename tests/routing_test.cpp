// Routing module (SPEC §3): host/prefix matching, pool choice (weights,
// override, affinity), endpoint choice and snapshot identity. Pure logic: the
// configuration is built by hand, no sockets, no YAML.

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::routing {
namespace {

using state_map = std::map<std::string, service_state, std::less<>>;

struct pool_spec {
    std::string name;
    std::uint32_t weight = 0;
    std::vector<std::string> endpoints;
};

config::endpoint make_endpoint(const std::string& address) {
    config::endpoint e;
    e.address = address;
    const auto colon = address.rfind(':');
    e.host = address.substr(0, colon);
    if (e.host.size() >= 2 && e.host.front() == '[') {
        e.host = e.host.substr(1, e.host.size() - 2);  // as config::load does
    }
    e.port = static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1)));
    return e;
}

config::service make_service(std::string name, std::vector<std::string> hosts, std::string prefix,
                             std::vector<pool_spec> pools, std::string stable) {
    config::service s;
    s.name = std::move(name);
    s.hosts = std::move(hosts);
    s.path_prefix = std::move(prefix);
    s.stable = std::move(stable);
    for (auto& spec : pools) {
        config::pool p;
        p.name = spec.name;
        p.weight = spec.weight;
        for (const auto& address : spec.endpoints) {
            p.endpoints.push_back(make_endpoint(address));
        }
        s.pools.push_back(std::move(p));
    }
    return s;
}

// One pool "main" with one endpoint: enough for matching tests.
config::service simple(std::string name, std::vector<std::string> hosts, std::string prefix) {
    return make_service(std::move(name), std::move(hosts), std::move(prefix),
                        {{"main", 100, {"10.0.0.1:80"}}}, "main");
}

std::shared_ptr<const snapshot> build(const config::config& cfg, registry& ids,
                                      const state_map& state = {}) {
    std::string error;
    auto snap = snapshot::build(cfg, state, ids, &error);
    EXPECT_NE(snap, nullptr) << error;
    return snap;
}

std::string matched(const snapshot& snap, std::string_view host, std::string_view target) {
    const service* s = snap.match(host, target);
    return s == nullptr ? "<none>" : s->name;
}

void set_pool_health(registry& ids, const pool& p, bool healthy) {
    for (const auto& e : p.endpoints) {
        ids.health(e.id).healthy = healthy;
    }
}

// --- Matching (SPEC §3.1) ---------------------------------------------------

TEST(RoutingMatch, ExactBeatsWildcardBeatsHostless) {
    config::config cfg;
    cfg.services = {simple("exact", {"app.example.com"}, "/"),
                    simple("wild", {"*.example.com"}, "/"), simple("any", {}, "/")};
    registry ids;
    auto snap = build(cfg, ids);
    EXPECT_EQ(matched(*snap, "app.example.com", "/"), "exact");
    EXPECT_EQ(matched(*snap, "www.example.com", "/"), "wild");
    EXPECT_EQ(matched(*snap, "other.org", "/"), "any");
    EXPECT_EQ(matched(*snap, "", "/"), "any");
}

TEST(RoutingMatch, WildcardLongestSuffixWinsAtAnyDepth) {
    config::config cfg;
    cfg.services = {simple("short", {"*.example.com"}, "/"),
                    simple("long", {"*.eu.example.com"}, "/")};
    registry ids;
    auto snap = build(cfg, ids);
    EXPECT_EQ(matched(*snap, "a.eu.example.com", "/"), "long");
    EXPECT_EQ(matched(*snap, "x.y.eu.example.com", "/"), "long");
    EXPECT_EQ(matched(*snap, "a.b.example.com", "/"), "short");
    EXPECT_EQ(matched(*snap, "eu.example.com", "/"), "short");
}

TEST(RoutingMatch, WildcardDoesNotMatchBareSuffix) {
    config::config cfg;
    cfg.services = {simple("wild", {"*.example.com"}, "/")};
    registry ids;
    auto snap = build(cfg, ids);
    EXPECT_EQ(matched(*snap, "example.com", "/"), "<none>");
    EXPECT_EQ(matched(*snap, ".example.com", "/"), "<none>");
    EXPECT_EQ(matched(*snap, "notexample.com", "/"), "<none>");
    EXPECT_EQ(matched(*snap, "a.example.com", "/"), "wild");
}

TEST(RoutingMatch, CaseInsensitiveAndPortStripped) {
    config::config cfg;
    cfg.services = {simple("app", {"app.example.com"}, "/"), simple("v6", {"[::1]"}, "/"),
                    simple("v6bare", {"fe80::2"}, "/"), simple("wild", {"*.example.org"}, "/")};
    registry ids;
    auto snap = build(cfg, ids);
    EXPECT_EQ(matched(*snap, "APP.Example.COM", "/"), "app");
    EXPECT_EQ(matched(*snap, "app.example.com:8080", "/"), "app");
    EXPECT_EQ(matched(*snap, "App.Example.Com:443", "/"), "app");
    EXPECT_EQ(matched(*snap, "app.example.com.", "/"), "app");
    EXPECT_EQ(matched(*snap, "[::1]:8080", "/"), "v6");
    EXPECT_EQ(matched(*snap, "[::1]", "/"), "v6");
    EXPECT_EQ(matched(*snap, "[FE80::2]:80", "/"), "v6bare");
    EXPECT_EQ(matched(*snap, "WWW.Example.Org:80", "/"), "wild");
    EXPECT_EQ(matched(*snap, "[::1", "/"), "<none>");
}

TEST(RoutingMatch, OverlongHostMatchesOnlyHostless) {
    const std::string long_host = std::string(300, 'a') + ".example.com";
    config::config cfg;
    cfg.services = {simple("wild", {"*.example.com"}, "/")};
    registry ids;
    auto snap = build(cfg, ids);
    EXPECT_EQ(matched(*snap, long_host, "/"), "<none>");
    cfg.services.push_back(simple("any", {}, "/"));
    auto with_any = build(cfg, ids);
    EXPECT_EQ(matched(*with_any, long_host, "/"), "any");
}

TEST(RoutingMatch, LongestSegmentAwarePrefix) {
    config::config cfg;
    cfg.services = {simple("root", {}, "/"), simple("api", {}, "/api"),
                    simple("api-v2", {}, "/api/v2"), simple("static", {}, "/static/")};
    registry ids;
    auto snap = build(cfg, ids);
    EXPECT_EQ(matched(*snap, "h", "/api"), "api");
    EXPECT_EQ(matched(*snap, "h", "/api/"), "api");
    EXPECT_EQ(matched(*snap, "h", "/api/x"), "api");
    EXPECT_EQ(matched(*snap, "h", "/api?q=1"), "api");
    EXPECT_EQ(matched(*snap, "h", "/apix"), "root");
    EXPECT_EQ(matched(*snap, "h", "/api/v2"), "api-v2");
    EXPECT_EQ(matched(*snap, "h", "/api/v2/users?x=/api"), "api-v2");
    EXPECT_EQ(matched(*snap, "h", "/api/v20"), "api");
    EXPECT_EQ(matched(*snap, "h", "/static/app.js"), "static");
    EXPECT_EQ(matched(*snap, "h", "/static"), "root");
    EXPECT_EQ(matched(*snap, "h", "/"), "root");
    EXPECT_EQ(matched(*snap, "h", "/?q=/api"), "root");
}

TEST(RoutingMatch, NoServiceMatches) {
    config::config cfg;
    cfg.services = {simple("api", {"app.example.com"}, "/api")};
    registry ids;
    auto snap = build(cfg, ids);
    EXPECT_EQ(matched(*snap, "app.example.com", "/web"), "<none>");
    EXPECT_EQ(matched(*snap, "other.example.com", "/api"), "<none>");
}

TEST(RoutingMatch, HostLevelWithoutMatchingPrefixFallsThrough) {
    config::config cfg;
    cfg.services = {simple("exact-api", {"app.example.com"}, "/api"),
                    simple("wild-web", {"*.example.com"}, "/web"),
                    simple("wild-short", {"*.com"}, "/"), simple("any", {}, "/")};
    registry ids;
    auto snap = build(cfg, ids);
    EXPECT_EQ(matched(*snap, "app.example.com", "/api/x"), "exact-api");
    EXPECT_EQ(matched(*snap, "app.example.com", "/web"), "wild-web");
    // Neither the exact nor the longest wildcard level serves "/other".
    EXPECT_EQ(matched(*snap, "app.example.com", "/other"), "wild-short");
    EXPECT_EQ(matched(*snap, "app.example.org", "/other"), "any");
}

TEST(RoutingMatch, FindServiceByName) {
    config::config cfg;
    cfg.services = {simple("b", {}, "/b"), simple("a", {}, "/a"), simple("c", {}, "/c")};
    registry ids;
    auto snap = build(cfg, ids);
    ASSERT_NE(snap->find_service("a"), nullptr);
    EXPECT_EQ(snap->find_service("a")->name, "a");
    EXPECT_EQ(snap->find_service("c")->index, 2u);
    EXPECT_EQ(snap->find_service("d"), nullptr);
}

// --- Snapshot build ---------------------------------------------------------

TEST(RoutingSnapshot, PoolsSortedByNameWithConfigWeightsAndStable) {
    config::config cfg;
    cfg.services = {make_service("svc", {"App.Example.com"}, "/",
                                 {{"green", 0, {"10.0.1.1:80"}},
                                  {"blue", 100, {"10.0.0.1:80", "[::1]:81"}},
                                  {"canary", 5, {"10.0.2.1:80"}}},
                                 "blue")};
    registry ids;
    auto snap = build(cfg, ids);
    const service& s = snap->services().at(0);
    ASSERT_EQ(s.pools.size(), 3u);
    EXPECT_EQ(s.pools[0].name, "blue");
    EXPECT_EQ(s.pools[1].name, "canary");
    EXPECT_EQ(s.pools[2].name, "green");
    EXPECT_EQ(s.stable, 0u);
    EXPECT_FALSE(s.rollout_pool.has_value());
    EXPECT_EQ(s.generation, 1u);
    EXPECT_EQ(s.hosts, std::vector<std::string>{"app.example.com"});
    EXPECT_EQ(s.pools[1].weight, 5u);
    ASSERT_EQ(s.pools[0].endpoints.size(), 2u);
    EXPECT_EQ(s.pools[0].endpoints[1].host, "::1");
    EXPECT_EQ(s.pools[0].endpoints[1].port, 81);
    EXPECT_EQ(s.pools[0].endpoints[1].health, &ids.health(s.pools[0].endpoints[1].id));
    EXPECT_EQ(s.find_pool("green"), &s.pools[2]);
    EXPECT_EQ(s.find_pool("nope"), nullptr);
    EXPECT_EQ(ids.pool_count(), 3u);
    EXPECT_EQ(ids.endpoint_count(), 4u);
}

TEST(RoutingSnapshot, StateOverridesWeightsStableAndRollout) {
    config::config cfg;
    cfg.services = {make_service("svc", {}, "/",
                                 {{"blue", 100, {"10.0.0.1:80"}},
                                  {"green", 0, {"10.0.1.1:80"}},
                                  {"canary", 7, {"10.0.2.1:80"}}},
                                 "blue")};
    state_map state;
    service_state& st = state["svc"];
    st.weights = {{"blue", 0}, {"green", 100}};  // canary missing: keeps 7
    st.stable = "green";
    st.rollout_pool = "canary";
    st.generation = 42;
    registry ids;
    auto snap = build(cfg, ids, state);
    const service& s = snap->services().at(0);
    EXPECT_EQ(s.find_pool("blue")->weight, 0u);
    EXPECT_EQ(s.find_pool("green")->weight, 100u);
    EXPECT_EQ(s.find_pool("canary")->weight, 7u);
    EXPECT_EQ(s.pools[s.stable].name, "green");
    ASSERT_TRUE(s.rollout_pool.has_value());
    EXPECT_EQ(s.pools[*s.rollout_pool].name, "canary");
    EXPECT_EQ(s.generation, 42u);

    // An empty or unknown stable in the state falls back to the config.
    state["svc"].stable = "";
    auto snap2 = build(cfg, ids, state);
    EXPECT_EQ(snap2->services()[0].pools[snap2->services()[0].stable].name, "blue");
    state["svc"].stable = "gone";
    auto snap3 = build(cfg, ids, state);
    EXPECT_EQ(snap3->services()[0].pools[snap3->services()[0].stable].name, "blue");
}

TEST(RoutingSnapshot, IdsAndHealthStableAcrossRebuilds) {
    config::config cfg;
    cfg.services = {make_service("svc", {}, "/",
                                 {{"blue", 90, {"10.0.0.1:80", "10.0.0.2:80"}},
                                  {"canary", 10, {"10.0.2.1:80"}}},
                                 "blue"),
                    simple("other", {"o.example.com"}, "/")};
    registry ids;
    auto first = build(cfg, ids);

    cfg.services[0].pools[0].weight = 50;
    cfg.services[0].pools[1].weight = 50;
    // A new endpoint gets a new id; the old ones keep theirs.
    cfg.services[0].pools[0].endpoints.push_back(make_endpoint("10.0.0.3:80"));
    state_map state;
    state["svc"].weights = {{"canary", 70}};
    auto second = build(cfg, ids, state);
    EXPECT_GT(second->version(), first->version());

    const service& a = first->services()[0];
    const service& b = second->services()[0];
    ASSERT_EQ(a.pools.size(), b.pools.size());
    for (std::size_t i = 0; i < a.pools.size(); ++i) {
        EXPECT_EQ(a.pools[i].id, b.pools[i].id);
        for (std::size_t j = 0; j < a.pools[i].endpoints.size(); ++j) {
            EXPECT_EQ(a.pools[i].endpoints[j].id, b.pools[i].endpoints[j].id);
            EXPECT_EQ(a.pools[i].endpoints[j].health, b.pools[i].endpoints[j].health);
        }
    }
    EXPECT_EQ(b.find_pool("canary")->weight, 70u);
    EXPECT_EQ(b.find_pool("blue")->weight, 50u);
    const auto& new_endpoint = b.find_pool("blue")->endpoints.back();
    EXPECT_EQ(new_endpoint.id, ids.endpoint_count() - 1);

    // Health written through the registry is seen by both snapshots.
    ids.health(a.pools[0].endpoints[0].id).ejected = true;
    EXPECT_FALSE(a.pools[0].endpoints[0].usable());
    EXPECT_FALSE(b.pools[0].endpoints[0].usable());
}

TEST(RoutingRegistry, InternsDenseIdsAndReportsExhaustion) {
    registry ids;
    EXPECT_EQ(ids.intern_pool("s", "a"), 0u);
    EXPECT_EQ(ids.intern_pool("s", "b"), 1u);
    EXPECT_EQ(ids.intern_pool("s", "a"), 0u);
    EXPECT_EQ(ids.intern_endpoint("s", "a", "h:1"), 0u);
    EXPECT_EQ(ids.intern_endpoint("s", "b", "h:1"), 1u);
    EXPECT_EQ(ids.intern_endpoint("s", "a", "h:1"), 0u);
    for (std::uint32_t i = 2; i < max_pools; ++i) {
        ASSERT_TRUE(ids.intern_pool("fill", std::to_string(i)).has_value());
    }
    EXPECT_EQ(ids.pool_count(), max_pools);
    EXPECT_FALSE(ids.intern_pool("s", "new").has_value());
    EXPECT_EQ(ids.intern_pool("s", "b"), 1u);  // existing ids still resolve

    config::config cfg;
    cfg.services = {simple("another", {}, "/")};
    std::string error;
    EXPECT_EQ(snapshot::build(cfg, {}, ids, &error), nullptr);
    EXPECT_FALSE(error.empty());
}

TEST(RoutingRegistry, EndpointCapacity) {
    registry ids;
    for (std::uint32_t i = 0; i < max_endpoints; ++i) {
        ASSERT_EQ(ids.intern_endpoint("s", "p", std::to_string(i)), i);
    }
    EXPECT_FALSE(ids.intern_endpoint("s", "p", "one-more").has_value());
    EXPECT_TRUE(ids.health(max_endpoints - 1).usable());
}

// --- Pool choice (SPEC §3.2) ------------------------------------------------

struct fixture_service {
    registry ids;
    std::shared_ptr<const snapshot> snap;
    const service& svc() const { return snap->services()[0]; }
    const pool& named(std::string_view name) const { return *svc().find_pool(name); }
};

std::unique_ptr<fixture_service> make_fixture(std::vector<pool_spec> pools, std::string stable,
                                              std::string override_header = "X-Canary",
                                              const state_map& state = {}) {
    auto f = std::make_unique<fixture_service>();
    config::config cfg;
    cfg.services = {make_service("svc", {}, "/", std::move(pools), std::move(stable))};
    cfg.services[0].override_header = std::move(override_header);
    f->snap = build(cfg, f->ids, state);
    return f;
}

std::map<std::string, int> draw(const service& svc, int n, std::uint64_t seed = 7) {
    std::mt19937_64 rng(seed);
    std::map<std::string, int> counts;
    for (int i = 0; i < n; ++i) {
        pool_request req;
        req.random = rng();
        const pool_choice c = choose_pool(svc, req);
        counts[c.chosen == nullptr ? "<none>" : c.chosen->name]++;
        EXPECT_FALSE(c.overridden);
    }
    return counts;
}

TEST(RoutingChoosePool, WeightedSplitEightyTwenty) {
    auto f =
        make_fixture({{"stable", 80, {"10.0.0.1:80"}}, {"canary", 20, {"10.0.1.1:80"}}}, "stable");
    const auto counts = draw(f->svc(), 10000);
    EXPECT_NEAR(counts.at("stable") / 100.0, 80.0, 3.0);
    EXPECT_NEAR(counts.at("canary") / 100.0, 20.0, 3.0);
}

TEST(RoutingChoosePool, ZeroWeightNeverChosen) {
    auto f = make_fixture({{"blue", 100, {"10.0.0.1:80"}}, {"green", 0, {"10.0.1.1:80"}}}, "blue");
    const auto counts = draw(f->svc(), 10000);
    EXPECT_EQ(counts.at("blue"), 10000);
    EXPECT_EQ(counts.count("green"), 0u);
}

TEST(RoutingChoosePool, UnhealthyPoolGivesItsShareAway) {
    auto f = make_fixture({{"a", 50, {"10.0.0.1:80", "10.0.0.2:80"}},
                           {"b", 25, {"10.0.1.1:80"}},
                           {"c", 25, {"10.0.2.1:80"}}},
                          "a");
    set_pool_health(f->ids, f->named("a"), false);
    const auto counts = draw(f->svc(), 10000);
    EXPECT_EQ(counts.count("a"), 0u);
    EXPECT_NEAR(counts.at("b") / 100.0, 50.0, 3.0);
    EXPECT_NEAR(counts.at("c") / 100.0, 50.0, 3.0);

    // One usable endpoint is enough for the pool to stay eligible.
    f->ids.health(f->named("a").endpoints[1].id).healthy = true;
    const auto again = draw(f->svc(), 10000);
    EXPECT_NEAR(again.at("a") / 100.0, 50.0, 3.0);
}

TEST(RoutingChoosePool, NothingEligibleIsNull) {
    auto f = make_fixture({{"blue", 100, {"10.0.0.1:80"}}, {"green", 0, {"10.0.1.1:80"}}}, "blue");
    set_pool_health(f->ids, f->named("blue"), false);
    pool_request req;
    req.random = 12345;
    EXPECT_EQ(choose_pool(f->svc(), req).chosen, nullptr);
    req.affinity_bucket = 17;
    EXPECT_EQ(choose_pool(f->svc(), req).chosen, nullptr);
}

pool_choice with_override(const service& svc, std::string_view value, std::uint64_t random = 0) {
    pool_request req;
    req.override_value = value;
    req.random = random;
    return choose_pool(svc, req);
}

TEST(RoutingChoosePool, OverrideByNameNeverAndAlways) {
    state_map state;
    state["svc"].rollout_pool = "green";
    auto f = make_fixture({{"blue", 90, {"10.0.0.1:80"}},
                           {"canary", 10, {"10.0.2.1:80"}},
                           {"green", 0, {"10.0.1.1:80"}}},
                          "blue", "X-Canary", state);

    auto c = with_override(f->svc(), "green");  // weight 0 does not matter
    EXPECT_EQ(c.chosen, &f->named("green"));
    EXPECT_TRUE(c.overridden);

    for (std::uint64_t r = 0; r < 100; ++r) {
        c = with_override(f->svc(), "NeVeR", r);
        EXPECT_EQ(c.chosen, &f->named("blue"));
        EXPECT_TRUE(c.overridden);
    }
    c = with_override(f->svc(), "always");
    EXPECT_EQ(c.chosen, &f->named("green"));  // the rollout pool
    EXPECT_TRUE(c.overridden);
}

TEST(RoutingChoosePool, AlwaysWithoutRolloutTakesHeaviestNonStable) {
    auto f = make_fixture({{"alpha", 5, {"10.0.3.1:80"}},
                           {"blue", 80, {"10.0.0.1:80"}},
                           {"canary", 10, {"10.0.2.1:80"}},
                           {"delta", 10, {"10.0.4.1:80"}}},
                          "blue");
    auto c = with_override(f->svc(), "ALWAYS");
    EXPECT_EQ(c.chosen, &f->named("canary"));  // tie with delta: name order
    EXPECT_TRUE(c.overridden);

    // No non-stable pool carries weight: no override, a weighted choice.
    auto g = make_fixture({{"blue", 100, {"10.0.0.1:80"}}, {"green", 0, {"10.0.1.1:80"}}}, "blue");
    for (std::uint64_t r = 0; r < 50; ++r) {
        c = with_override(g->svc(), "always", r);
        EXPECT_EQ(c.chosen, &g->named("blue"));
        EXPECT_FALSE(c.overridden);
    }
}

TEST(RoutingChoosePool, UnknownOrUnhealthyOverrideFallsBackToWeighted) {
    auto f = make_fixture({{"blue", 100, {"10.0.0.1:80"}}, {"green", 0, {"10.0.1.1:80"}}}, "blue");
    auto c = with_override(f->svc(), "purple");
    EXPECT_EQ(c.chosen, &f->named("blue"));
    EXPECT_FALSE(c.overridden);

    set_pool_health(f->ids, f->named("green"), false);
    c = with_override(f->svc(), "green");
    EXPECT_EQ(c.chosen, &f->named("blue"));
    EXPECT_FALSE(c.overridden);
}

TEST(RoutingChoosePool, OverrideIgnoredWhenServiceHasNoOverrideHeader) {
    auto f =
        make_fixture({{"blue", 100, {"10.0.0.1:80"}}, {"green", 0, {"10.0.1.1:80"}}}, "blue", "");
    const auto c = with_override(f->svc(), "green");
    EXPECT_EQ(c.chosen, &f->named("blue"));
    EXPECT_FALSE(c.overridden);
}

pool_choice with_bucket(const service& svc, std::uint32_t bucket) {
    pool_request req;
    req.affinity_bucket = bucket;
    req.random = bucket * 7919u;  // must not influence the choice
    return choose_pool(svc, req);
}

TEST(RoutingAffinity, SameKeySamePool) {
    auto f =
        make_fixture({{"stable", 50, {"10.0.0.1:80"}}, {"canary", 50, {"10.0.1.1:80"}}}, "stable");
    for (int i = 0; i < 200; ++i) {
        const std::string key = "user-" + std::to_string(i);
        const pool* first = with_bucket(f->svc(), bucket_of(key)).chosen;
        ASSERT_NE(first, nullptr);
        for (std::uint64_t r = 0; r < 5; ++r) {
            pool_request req;
            req.affinity_bucket = bucket_of(key);
            req.random = r * 0x9E3779B97F4A7C15ULL;
            EXPECT_EQ(choose_pool(f->svc(), req).chosen, first);
        }
    }
}

TEST(RoutingAffinity, RaisingCanaryOnlyMovesStableToCanary) {
    auto before =
        make_fixture({{"stable", 95, {"10.0.0.1:80"}}, {"canary", 5, {"10.0.1.1:80"}}}, "stable");
    state_map state;
    state["svc"].weights = {{"stable", 90}, {"canary", 10}};
    auto after = make_fixture({{"stable", 95, {"10.0.0.1:80"}}, {"canary", 5, {"10.0.1.1:80"}}},
                              "stable", "X-Canary", state);
    int on_canary_before = 0;
    int on_canary_after = 0;
    for (int i = 0; i < 10000; ++i) {
        const std::uint32_t b = bucket_of("session-" + std::to_string(i));
        const bool was_canary = with_bucket(before->svc(), b).chosen->name == "canary";
        const bool is_canary = with_bucket(after->svc(), b).chosen->name == "canary";
        if (was_canary) {
            EXPECT_TRUE(is_canary) << "key " << i << " moved canary -> stable";
        }
        on_canary_before += was_canary;
        on_canary_after += is_canary;
    }
    EXPECT_NEAR(on_canary_before / 100.0, 5.0, 1.5);
    EXPECT_NEAR(on_canary_after / 100.0, 10.0, 1.5);
}

TEST(RoutingAffinity, NonStablePoolsTakeLowBucketsInNameOrder) {
    auto f = make_fixture({{"zeta-stable", 80, {"10.0.0.1:80"}},
                           {"b-canary", 10, {"10.0.2.1:80"}},
                           {"a-canary", 10, {"10.0.1.1:80"}}},
                          "zeta-stable");
    EXPECT_EQ(with_bucket(f->svc(), 0).chosen->name, "a-canary");
    EXPECT_EQ(with_bucket(f->svc(), 999).chosen->name, "a-canary");
    EXPECT_EQ(with_bucket(f->svc(), 1000).chosen->name, "b-canary");
    EXPECT_EQ(with_bucket(f->svc(), 1999).chosen->name, "b-canary");
    EXPECT_EQ(with_bucket(f->svc(), 2000).chosen->name, "zeta-stable");
    EXPECT_EQ(with_bucket(f->svc(), 9999).chosen->name, "zeta-stable");

    // The stable pool sorts first by name here: non-stable still go low.
    auto g = make_fixture({{"a-stable", 75, {"10.0.0.1:80"}}, {"m-canary", 25, {"10.0.1.1:80"}}},
                          "a-stable");
    EXPECT_EQ(with_bucket(g->svc(), 2499).chosen->name, "m-canary");
    EXPECT_EQ(with_bucket(g->svc(), 2500).chosen->name, "a-stable");

    // Without a usable stable pool the non-stable ones cover every bucket.
    set_pool_health(f->ids, f->named("zeta-stable"), false);
    EXPECT_EQ(with_bucket(f->svc(), 4999).chosen->name, "a-canary");
    EXPECT_EQ(with_bucket(f->svc(), 5000).chosen->name, "b-canary");
    EXPECT_EQ(with_bucket(f->svc(), 9999).chosen->name, "b-canary");
}

TEST(RoutingAffinity, HashAndCookieHelpers) {
    EXPECT_EQ(affinity_hash(""), 0xcbf29ce484222325ULL);
    EXPECT_EQ(affinity_hash("a"), 0xaf63dc4c8601ec8cULL);
    EXPECT_EQ(affinity_hash("foobar"), 0x85944171f73967e8ULL);
    EXPECT_LT(bucket_of("anything"), affinity_buckets);

    EXPECT_EQ(find_cookie("a=1; b=2", "b"), "2");
    EXPECT_EQ(find_cookie("a=1;b=2", "a"), "1");
    EXPECT_EQ(find_cookie("  a = 1 ;  sy_uid = \"xyz\" ", "sy_uid"), "xyz");
    EXPECT_EQ(find_cookie("x=1; x=2", "x"), "1");
    EXPECT_EQ(find_cookie("xa=1; ax=2", "x"), std::nullopt);
    EXPECT_EQ(find_cookie("flag; a=", "a"), "");
    EXPECT_EQ(find_cookie("", "a"), std::nullopt);
    EXPECT_EQ(find_cookie("a=1", ""), std::nullopt);
    EXPECT_EQ(find_cookie("a=\"", "a"), "\"");
}

// --- Endpoint choice (SPEC §3.3) --------------------------------------------

TEST(RoutingChooseEndpoint, BalancerStateStartsZeroed) {
    balancer_state st;
    EXPECT_EQ(st.cursor(0), 0u);
    EXPECT_EQ(st.cursor(max_pools - 1), 0u);
    EXPECT_EQ(st.active(max_endpoints - 1), 0u);
}

TEST(RoutingChooseEndpoint, RoundRobinCyclesEvenlyAndSkipsUnusable) {
    auto f = make_fixture({{"p", 100, {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}}}, "p");
    const pool& p = f->named("p");
    balancer_state st;
    std::map<std::string, int> counts;
    for (int i = 0; i < 300; ++i) {
        const endpoint* e = choose_endpoint(p, config::balance::round_robin, st, 0);
        ASSERT_NE(e, nullptr);
        EXPECT_EQ(e, &p.endpoints[static_cast<std::size_t>(i) % 3]);
        counts[e->address]++;
    }
    for (const auto& [address, n] : counts) {
        EXPECT_EQ(n, 100) << address;
    }

    f->ids.health(p.endpoints[1].id).ejected = true;
    for (int i = 0; i < 10; ++i) {
        const endpoint* e = choose_endpoint(p, config::balance::round_robin, st, 0);
        ASSERT_NE(e, nullptr);
        EXPECT_NE(e, &p.endpoints[1]);
    }
    set_pool_health(f->ids, p, false);
    EXPECT_EQ(choose_endpoint(p, config::balance::round_robin, st, 0), nullptr);
}

TEST(RoutingChooseEndpoint, RoundRobinExcludeHonoured) {
    auto f = make_fixture({{"p", 100, {"10.0.0.1:80", "10.0.0.2:80"}}}, "p");
    const pool& p = f->named("p");
    balancer_state st;
    for (int i = 0; i < 10; ++i) {
        EXPECT_EQ(choose_endpoint(p, config::balance::round_robin, st, 0, &p.endpoints[0]),
                  &p.endpoints[1]);
    }
    // The excluded endpoint is still used when it is the only usable one.
    f->ids.health(p.endpoints[1].id).healthy = false;
    EXPECT_EQ(choose_endpoint(p, config::balance::round_robin, st, 0, &p.endpoints[0]),
              &p.endpoints[0]);
}

TEST(RoutingChooseEndpoint, LeastRequestPrefersLessLoaded) {
    auto f = make_fixture({{"p", 100, {"10.0.0.1:80", "10.0.0.2:80"}}}, "p");
    const pool& p = f->named("p");
    balancer_state st;
    st.active(p.endpoints[0].id) = 5;
    std::mt19937_64 rng(11);
    for (int i = 0; i < 100; ++i) {
        EXPECT_EQ(choose_endpoint(p, config::balance::least_request, st, rng()), &p.endpoints[1]);
    }
    st.active(p.endpoints[1].id) = 9;
    for (int i = 0; i < 100; ++i) {
        EXPECT_EQ(choose_endpoint(p, config::balance::least_request, st, rng()), &p.endpoints[0]);
    }
}

TEST(RoutingChooseEndpoint, LeastRequestSpreadsAndNeverPicksTheMostLoaded) {
    auto f = make_fixture(
        {{"p", 100, {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"}}}, "p");
    const pool& p = f->named("p");
    balancer_state st;
    std::mt19937_64 rng(3);
    std::map<const endpoint*, int> idle;
    for (int i = 0; i < 4000; ++i) {
        idle[choose_endpoint(p, config::balance::least_request, st, rng())]++;
    }
    ASSERT_EQ(idle.size(), 4u);
    for (const auto& [e, n] : idle) {
        EXPECT_NEAR(n, 1000, 150);
    }
    // Two distinct candidates: the single most loaded endpoint never wins.
    st.active(p.endpoints[2].id) = 100;
    for (int i = 0; i < 1000; ++i) {
        EXPECT_NE(choose_endpoint(p, config::balance::least_request, st, rng()), &p.endpoints[2]);
    }
}

TEST(RoutingChooseEndpoint, LeastRequestExcludeAndHealth) {
    auto f = make_fixture({{"p", 100, {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}}}, "p");
    const pool& p = f->named("p");
    balancer_state st;
    std::mt19937_64 rng(5);
    f->ids.health(p.endpoints[2].id).healthy = false;
    for (int i = 0; i < 100; ++i) {
        EXPECT_EQ(choose_endpoint(p, config::balance::least_request, st, rng(), &p.endpoints[0]),
                  &p.endpoints[1]);
    }
    f->ids.health(p.endpoints[1].id).ejected = true;
    EXPECT_EQ(choose_endpoint(p, config::balance::least_request, st, rng(), &p.endpoints[0]),
              &p.endpoints[0]);
    f->ids.health(p.endpoints[0].id).healthy = false;
    EXPECT_EQ(choose_endpoint(p, config::balance::least_request, st, rng()), nullptr);
}

TEST(RoutingChooseEndpoint, SingleEndpointPool) {
    auto f = make_fixture({{"p", 100, {"10.0.0.1:80"}}}, "p");
    const pool& p = f->named("p");
    balancer_state st;
    for (const auto policy : {config::balance::round_robin, config::balance::least_request}) {
        EXPECT_EQ(choose_endpoint(p, policy, st, 1, &p.endpoints[0]), &p.endpoints[0]);
    }
    f->ids.health(p.endpoints[0].id).healthy = false;
    for (const auto policy : {config::balance::round_robin, config::balance::least_request}) {
        EXPECT_EQ(choose_endpoint(p, policy, st, 1), nullptr);
    }
}

}  // namespace
}  // namespace switchyard::routing
