// Building snapshots (control thread) and matching requests to services
// (workers, SPEC §3.1). The registry lives here too: it is what keeps ids and
// health stable while snapshots come and go.

#include "routing/snapshot.hpp"

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <utility>

namespace switchyard::routing {

namespace {

// Snapshot versions only need to be distinct and increasing within the
// process, so that workers and the admin API can tell two publications apart.
std::atomic<std::uint64_t> g_next_version{1};

// The longest host name DNS allows is 253 characters; 255 leaves room for a
// trailing dot. Anything longer cannot be a name we were configured with, and
// bounding it lets match() lower-case into a stack buffer instead of a string.
constexpr std::size_t max_host_length = 255;

char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lower_copy(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        c = ascii_lower(c);
    }
    return out;
}

// "[::1]" and "::1" name the same host; the index keeps the unbracketed form
// so that a configured host matches whichever form a client sends.
std::string_view strip_brackets(std::string_view host) {
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        return host.substr(1, host.size() - 2);
    }
    return host;
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
        text.remove_prefix(1);
    }
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
        text.remove_suffix(1);
    }
    return text;
}

// The host part of a Host header value: port removed ("h:80", "[v6]:80"),
// brackets removed, one trailing dot removed (an FQDN names the same host).
// A bare IPv6 literal without brackets has several colons and no port.
std::string_view host_of(std::string_view header) {
    std::string_view host = trim(header);
    if (!host.empty() && host.front() == '[') {
        const std::size_t close = host.find(']');
        if (close == std::string_view::npos) {
            return {};  // malformed: no host can match it
        }
        host = host.substr(1, close - 1);
    } else {
        const std::size_t colon = host.find(':');
        if (colon != std::string_view::npos &&
            host.find(':', colon + 1) == std::string_view::npos) {
            host = host.substr(0, colon);
        }
    }
    if (!host.empty() && host.back() == '.') {
        host.remove_suffix(1);
    }
    return host;
}

// Segment-aware prefix test (SPEC §3.1): "/api" matches "/api", "/api/x" but
// not "/apix". A prefix that already ends in '/' sits on a segment boundary,
// so a plain prefix test is enough; "/" (or an empty prefix) matches all.
bool prefix_matches(std::string_view prefix, std::string_view path) {
    if (prefix.empty() || prefix == "/") {
        return true;
    }
    if (!path.starts_with(prefix)) {
        return false;
    }
    if (prefix.back() == '/' || path.size() == prefix.size()) {
        return true;
    }
    return path[prefix.size()] == '/';
}

std::optional<std::uint32_t> index_of_pool(const std::vector<pool>& pools, std::string_view name) {
    const auto it = std::lower_bound(pools.begin(), pools.end(), name,
                                     [](const pool& p, std::string_view n) { return p.name < n; });
    if (it == pools.end() || it->name != name) {
        return std::nullopt;
    }
    return static_cast<std::uint32_t>(it - pools.begin());
}

}  // namespace

// ---------------------------------------------------------------------------
// registry

registry::registry() : health_(std::make_unique<endpoint_health[]>(max_endpoints)) {}

registry::~registry() = default;

std::optional<pool_id> registry::intern_pool(std::string_view service, std::string_view pool) {
    std::string key;
    key.reserve(service.size() + 1 + pool.size());
    key.append(service).append("/").append(pool);
    if (const auto it = pools_.find(key); it != pools_.end()) {
        return it->second;
    }
    if (pools_.size() >= max_pools) {
        return std::nullopt;
    }
    const auto id = static_cast<pool_id>(pools_.size());
    pools_.emplace(std::move(key), id);
    return id;
}

std::optional<endpoint_id> registry::intern_endpoint(std::string_view service,
                                                     std::string_view pool,
                                                     std::string_view address) {
    std::string key;
    key.reserve(service.size() + pool.size() + address.size() + 2);
    key.append(service).append("/").append(pool).append("/").append(address);
    if (const auto it = endpoints_.find(key); it != endpoints_.end()) {
        return it->second;
    }
    if (endpoints_.size() >= max_endpoints) {
        return std::nullopt;
    }
    const auto id = static_cast<endpoint_id>(endpoints_.size());
    endpoints_.emplace(std::move(key), id);
    return id;
}

endpoint_health& registry::health(endpoint_id id) {
    assert(id < max_endpoints);
    return health_[id];
}

const endpoint_health& registry::health(endpoint_id id) const {
    assert(id < max_endpoints);
    return health_[id];
}

std::uint32_t registry::pool_count() const {
    return static_cast<std::uint32_t>(pools_.size());
}

std::uint32_t registry::endpoint_count() const {
    return static_cast<std::uint32_t>(endpoints_.size());
}

// ---------------------------------------------------------------------------
// pool, service

bool pool::has_usable_endpoint() const {
    return std::any_of(endpoints.begin(), endpoints.end(),
                       [](const endpoint& e) { return e.usable(); });
}

const pool* service::find_pool(std::string_view name) const {
    const auto index = index_of_pool(pools, name);
    return index ? &pools[*index] : nullptr;
}

// ---------------------------------------------------------------------------
// snapshot

// Host lookup tables, built once per snapshot so match() only does binary
// searches over sorted vectors (no hashing of a lowered copy, no allocation).
// Every candidate list is sorted by path_prefix length, longest first, so the
// first service whose prefix matches is the longest-prefix winner.
struct snapshot::host_index {
    struct entry {
        std::string key;  // exact host, or ".suffix" for "*.suffix"
        std::vector<std::uint32_t> services;
    };
    std::vector<entry> exact;     // sorted by key
    std::vector<entry> wildcard;  // sorted by key
    std::vector<std::uint32_t> any_host;
    std::vector<std::uint32_t> by_name;  // service indices sorted by name

    static const entry* find(const std::vector<entry>& table, std::string_view key) {
        const auto it =
            std::lower_bound(table.begin(), table.end(), key,
                             [](const entry& e, std::string_view k) { return e.key < k; });
        if (it == table.end() || it->key != key) {
            return nullptr;
        }
        return &*it;
    }
};

namespace {

void add_candidate(std::vector<std::uint32_t>& list, std::uint32_t index) {
    // A service listing the same host twice must appear once.
    if (std::find(list.begin(), list.end(), index) == list.end()) {
        list.push_back(index);
    }
}

}  // namespace

std::shared_ptr<const snapshot> snapshot::build(
    const config::config& cfg, const std::map<std::string, service_state, std::less<>>& state,
    registry& ids, std::string* error) {
    auto fail = [error](std::string message) -> std::shared_ptr<const snapshot> {
        if (error != nullptr) {
            *error = std::move(message);
        }
        return nullptr;
    };

    auto snap = std::make_shared<snapshot>();
    snap->services_.reserve(cfg.services.size());

    for (const config::service& cs : cfg.services) {
        const auto found_state = state.find(cs.name);
        const service_state* st = found_state != state.end() ? &found_state->second : nullptr;

        service s;
        s.name = cs.name;
        s.index = static_cast<std::uint32_t>(snap->services_.size());
        s.hosts.reserve(cs.hosts.size());
        for (const std::string& h : cs.hosts) {
            s.hosts.push_back(lower_copy(h));
        }
        s.path_prefix = cs.path_prefix;
        s.balance_policy = cs.balance_policy;
        s.affinity_policy = cs.affinity_policy;
        s.override_header = cs.override_header;
        s.retry_on_stable = cs.retry_on_stable;
        s.generation = st != nullptr ? st->generation : 1;

        s.pools.reserve(cs.pools.size());
        for (const config::pool& cp : cs.pools) {
            pool p;
            const auto pid = ids.intern_pool(cs.name, cp.name);
            if (!pid) {
                return fail("routing registry full: more than " + std::to_string(max_pools) +
                            " pools (service " + cs.name + ", pool " + cp.name + ")");
            }
            p.id = *pid;
            p.name = cp.name;
            p.weight = cp.weight;
            if (st != nullptr) {
                if (const auto w = st->weights.find(cp.name); w != st->weights.end()) {
                    p.weight = w->second;
                }
            }
            p.endpoints.reserve(cp.endpoints.size());
            for (const config::endpoint& ce : cp.endpoints) {
                const auto eid = ids.intern_endpoint(cs.name, cp.name, ce.address);
                if (!eid) {
                    return fail("routing registry full: more than " +
                                std::to_string(max_endpoints) + " endpoints (service " + cs.name +
                                ", pool " + cp.name + ", endpoint " + ce.address + ")");
                }
                endpoint e;
                e.id = *eid;
                e.address = ce.address;
                e.host = ce.host;
                e.port = ce.port;
                e.health = &ids.health(*eid);
                p.endpoints.push_back(std::move(e));
            }
            s.pools.push_back(std::move(p));
        }
        // Name order is the affinity bucket order: every replica must agree on
        // it regardless of the order pools were written in the file.
        std::sort(s.pools.begin(), s.pools.end(),
                  [](const pool& a, const pool& b) { return a.name < b.name; });

        // The state names pools by name; a name that no longer exists (the
        // pool was removed by a reload) falls back to the configuration.
        std::optional<std::uint32_t> stable;
        if (st != nullptr && !st->stable.empty()) {
            stable = index_of_pool(s.pools, st->stable);
        }
        if (!stable) {
            stable = index_of_pool(s.pools, cs.stable);
        }
        s.stable = stable.value_or(0);
        if (st != nullptr && !st->rollout_pool.empty()) {
            s.rollout_pool = index_of_pool(s.pools, st->rollout_pool);
        }

        snap->services_.push_back(std::move(s));
    }

    auto index = std::make_shared<host_index>();
    for (const service& s : snap->services_) {
        if (s.hosts.empty()) {
            add_candidate(index->any_host, s.index);
        }
        for (const std::string& h : s.hosts) {
            if (h == "*") {
                // A bare "*" means any host, like a service without hosts.
                add_candidate(index->any_host, s.index);
                continue;
            }
            const bool wild = h.size() > 2 && h.starts_with("*.");
            auto& table = wild ? index->wildcard : index->exact;
            // Wildcards keep the leading dot so that "*.example.com" is looked
            // up as ".example.com" and can never equal the bare "example.com".
            std::string key(wild ? std::string_view(h).substr(1) : strip_brackets(h));
            if (key.size() > 1 && key.back() == '.') {
                key.pop_back();  // match() drops the FQDN dot from requests too
            }
            auto it = std::lower_bound(
                table.begin(), table.end(), key,
                [](const host_index::entry& e, const std::string& k) { return e.key < k; });
            if (it == table.end() || it->key != key) {
                it = table.insert(it, host_index::entry{std::move(key), {}});
            }
            add_candidate(it->services, s.index);
        }
    }
    const auto& services = snap->services_;
    auto by_prefix = [&services](std::vector<std::uint32_t>& list) {
        std::stable_sort(list.begin(), list.end(), [&services](std::uint32_t a, std::uint32_t b) {
            return services[a].path_prefix.size() > services[b].path_prefix.size();
        });
    };
    for (auto& e : index->exact) {
        by_prefix(e.services);
    }
    for (auto& e : index->wildcard) {
        by_prefix(e.services);
    }
    by_prefix(index->any_host);
    index->by_name.resize(services.size());
    for (std::uint32_t i = 0; i < services.size(); ++i) {
        index->by_name[i] = i;
    }
    std::stable_sort(index->by_name.begin(), index->by_name.end(),
                     [&services](std::uint32_t a, std::uint32_t b) {
                         return services[a].name < services[b].name;
                     });

    snap->hosts_ = std::move(index);
    snap->version_ = g_next_version.fetch_add(1, std::memory_order_relaxed);
    return snap;
}

const service* snapshot::match(std::string_view host_header, std::string_view target) const {
    const std::string_view path = target.substr(0, target.find('?'));

    auto first_matching = [this,
                           path](const std::vector<std::uint32_t>& candidates) -> const service* {
        for (const std::uint32_t i : candidates) {
            if (prefix_matches(services_[i].path_prefix, path)) {
                return &services_[i];
            }
        }
        return nullptr;
    };

    // Levels, most specific first: the exact host, then each "*.suffix" that
    // covers the host from the longest suffix to the shortest, then services
    // without hosts. A level whose services all have a non-matching
    // path_prefix does not end the search: the request falls to the next,
    // less specific level, so that e.g. "api.example.com" serving only "/v2"
    // still lets "*.example.com" or a hostless catch-all serve "/".
    const std::string_view raw = host_of(host_header);
    if (!raw.empty() && raw.size() <= max_host_length && hosts_ != nullptr) {
        char buffer[max_host_length];
        for (std::size_t i = 0; i < raw.size(); ++i) {
            buffer[i] = ascii_lower(raw[i]);
        }
        const std::string_view host(buffer, raw.size());

        if (const auto* e = host_index::find(hosts_->exact, host)) {
            if (const service* s = first_matching(e->services)) {
                return s;
            }
        }
        if (!hosts_->wildcard.empty()) {
            // Suffixes starting at each dot, left to right = longest first.
            // The dot at position 0 is skipped: "*.x" needs a label before it.
            for (std::size_t dot = host.find('.', 1); dot != std::string_view::npos;
                 dot = host.find('.', dot + 1)) {
                if (const auto* e = host_index::find(hosts_->wildcard, host.substr(dot))) {
                    if (const service* s = first_matching(e->services)) {
                        return s;
                    }
                }
            }
        }
    }
    return hosts_ != nullptr ? first_matching(hosts_->any_host) : nullptr;
}

const service* snapshot::find_service(std::string_view name) const {
    if (hosts_ == nullptr) {
        return nullptr;
    }
    const auto& order = hosts_->by_name;
    const auto it = std::lower_bound(
        order.begin(), order.end(), name,
        [this](std::uint32_t i, std::string_view n) { return services_[i].name < n; });
    if (it == order.end() || services_[*it].name != name) {
        return nullptr;
    }
    return &services_[*it];
}

}  // namespace switchyard::routing
