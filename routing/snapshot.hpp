#pragma once
// The routing state: an immutable snapshot of services, pools and endpoints,
// built on the control thread and published to every worker as a
// shared_ptr<const snapshot> (STYLE rule 2). Workers only read it.
//
// Identity that outlives snapshots (so that per-worker arrays, statistics and
// health survive a weight change or a reload) comes from the `registry`: it
// interns every (service, pool) and (service, pool, endpoint address) to a
// small integer id for the life of the process. Ids index per-worker arrays.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace switchyard::routing {

using pool_id = std::uint32_t;
using endpoint_id = std::uint32_t;

inline constexpr std::uint32_t max_pools = 4096;
inline constexpr std::uint32_t max_endpoints = 65536;

// Health of one endpoint: written by the control thread (active checks,
// outlier detection), read with relaxed loads by workers. Lives in the
// registry, so its address is stable for the life of the process.
struct endpoint_health {
    std::atomic<bool> healthy{true};  // passing active checks
    std::atomic<bool> ejected{false};  // ejected by outlier detection
    std::atomic<std::uint32_t> consecutive_failures{0};  // across all workers

    bool usable() const {
        return healthy.load(std::memory_order_relaxed) && !ejected.load(std::memory_order_relaxed);
    }
};

// Interns ids and owns endpoint health. Control thread only, except that the
// endpoint_health objects it hands out may be read from any thread.
class registry {
public:
    registry();
    ~registry();
    registry(const registry&) = delete;
    registry& operator=(const registry&) = delete;

    // nullopt when the capacity (max_pools / max_endpoints) is exhausted.
    std::optional<pool_id> intern_pool(std::string_view service, std::string_view pool);
    std::optional<endpoint_id> intern_endpoint(std::string_view service, std::string_view pool,
                                               std::string_view address);

    endpoint_health& health(endpoint_id id);
    const endpoint_health& health(endpoint_id id) const;

    std::uint32_t pool_count() const;
    std::uint32_t endpoint_count() const;

private:
    std::map<std::string, pool_id, std::less<>> pools_;
    std::map<std::string, endpoint_id, std::less<>> endpoints_;
    std::unique_ptr<endpoint_health[]> health_;  // max_endpoints, allocated once
};

struct endpoint {
    endpoint_id id = 0;
    std::string address;  // "host:port" as configured
    std::string host;
    std::uint16_t port = 0;
    const endpoint_health* health = nullptr;  // owned by the registry

    bool usable() const { return health == nullptr || health->usable(); }
};

struct pool {
    pool_id id = 0;
    std::string name;
    std::uint32_t weight = 0;
    std::vector<endpoint> endpoints;

    bool has_usable_endpoint() const;
};

// Runtime state of a service decided by operators, the guard and rollouts;
// the control plane keeps it and hands it to build().
struct service_state {
    std::map<std::string, std::uint32_t, std::less<>> weights;  // by pool name
    std::string stable;        // pool name
    std::string rollout_pool;  // pool under rollout, empty when none
    std::uint64_t generation = 1;
};

struct service {
    std::string name;
    std::uint32_t index = 0;  // position in snapshot::services()
    std::vector<std::string> hosts;  // lower-case; "*.suffix" for wildcards
    std::string path_prefix;
    std::vector<pool> pools;  // sorted by name (the affinity bucket order)
    std::uint32_t stable = 0;  // index into pools
    std::optional<std::uint32_t> rollout_pool;  // index into pools
    config::balance balance_policy = config::balance::round_robin;
    std::optional<config::affinity> affinity_policy;
    std::string override_header;
    bool retry_on_stable = true;
    std::uint64_t generation = 1;

    const pool* find_pool(std::string_view name) const;
};

class snapshot {
public:
    // Builds from the validated config and the runtime state of each service
    // (a service missing from `state` takes its config weights and stable).
    // Interns ids in `ids`. Returns nullptr and sets *error when the registry
    // capacity is exhausted.
    static std::shared_ptr<const snapshot> build(
        const config::config& cfg, const std::map<std::string, service_state, std::less<>>& state,
        registry& ids, std::string* error = nullptr);

    // SPEC §3.1: Host (case-insensitive, port stripped; exact, then longest
    // "*.suffix", then services without hosts), then the longest
    // segment-aware path_prefix. nullptr: no service matches (404).
    // No allocation.
    const service* match(std::string_view host_header, std::string_view target) const;

    const std::vector<service>& services() const { return services_; }
    const service* find_service(std::string_view name) const;

    std::uint64_t version() const { return version_; }

private:
    std::vector<service> services_;
    std::uint64_t version_ = 0;
    // Index structures private to the implementation.
    struct host_index;
    std::shared_ptr<const host_index> hosts_;
};

// --- Picking (SPEC §3.2, §3.3). Pure functions, no allocation. ---

struct pool_request {
    // Value of the service's override_header, if the request carries it.
    std::optional<std::string_view> override_value;
    // With affinity: bucket_of(key) of the request's key; without: nullopt.
    std::optional<std::uint32_t> affinity_bucket;
    // A fresh random number for the weighted choice.
    std::uint64_t random = 0;
};

struct pool_choice {
    const pool* chosen = nullptr;  // nullptr: no pool can serve (503)
    bool overridden = false;       // chosen by override_header: not judged by the guard
};

pool_choice choose_pool(const service& svc, const pool_request& request);

// Per-worker balancing state, indexed by ids. Owned by one worker; never
// shared. Sized for the registry capacity once, so never reallocated.
class balancer_state {
public:
    balancer_state();
    std::uint32_t& cursor(pool_id id) { return cursors_[id]; }
    std::uint32_t& active(endpoint_id id) { return active_[id]; }

private:
    std::vector<std::uint32_t> cursors_;  // round_robin position per pool
    std::vector<std::uint32_t> active_;   // requests in flight per endpoint
};

// Round robin or least_request (power of two choices, SPEC §3.3) over usable
// endpoints of `p`, skipping `exclude` when another usable endpoint exists.
// nullptr when no endpoint of the pool is usable.
const endpoint* choose_endpoint(const pool& p, config::balance policy, balancer_state& state,
                                std::uint64_t random, const endpoint* exclude = nullptr);

// --- Affinity helpers (SPEC §3.2). ---

inline constexpr std::uint32_t affinity_buckets = 10000;

// A fixed 64-bit hash (FNV-1a) so every replica agrees; bucket = hash % 10000.
std::uint64_t affinity_hash(std::string_view key);
inline std::uint32_t bucket_of(std::string_view key) {
    return static_cast<std::uint32_t>(affinity_hash(key) % affinity_buckets);
}

// The value of cookie `name` in a Cookie header value, if present.
std::optional<std::string_view> find_cookie(std::string_view cookie_header, std::string_view name);

}  // namespace switchyard::routing
