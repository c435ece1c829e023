#include "health/outlier.hpp"

#include <algorithm>
#include <unordered_set>

namespace switchyard::health {

namespace {

// "30s", "1m", "1500ms": the largest unit that divides the duration exactly.
std::string format_duration(clock::duration d) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    if (ms != 0 && ms % 3'600'000 == 0) {
        return std::to_string(ms / 3'600'000) + "h";
    }
    if (ms != 0 && ms % 60'000 == 0) {
        return std::to_string(ms / 60'000) + "m";
    }
    if (ms % 1000 == 0) {
        return std::to_string(ms / 1000) + "s";
    }
    return std::to_string(ms) + "ms";
}

}  // namespace

std::vector<ejection_change> outlier_detector::scan(const routing::pool& pool,
                                                    routing::registry& ids,
                                                    const config::outlier_detection& policy,
                                                    clock::time_point now) {
    std::vector<ejection_change> changes;

    // Returns first, so that their places count as free below.
    std::size_t ejected = 0;
    for (const auto& ep : pool.endpoints) {
        auto& health = ids.health(ep.id);
        if (!health.ejected.load(std::memory_order_relaxed)) {
            continue;
        }
        const auto it = records_.find(ep.id);
        if (it != records_.end() && it->second.ejected_until > now) {
            ++ejected;
            continue;
        }
        health.consecutive_failures.store(0, std::memory_order_relaxed);
        health.ejected.store(false, std::memory_order_relaxed);
        changes.push_back(
            {ep.id, ep.address, false,
             it == records_.end()
                 ? std::string("ejection ended")
                 : "ejection of " + format_duration(it->second.last_duration) + " ended"});
    }

    const std::size_t cap =
        std::max<std::size_t>(1, pool.endpoints.size() * policy.max_ejection_percent / 100);
    const std::uint32_t threshold = std::max<std::uint32_t>(policy.consecutive_failures, 1);
    for (const auto& ep : pool.endpoints) {
        if (ejected >= cap) {
            break;
        }
        auto& health = ids.health(ep.id);
        if (health.ejected.load(std::memory_order_relaxed)) {
            continue;
        }
        const std::uint32_t failures = health.consecutive_failures.load(std::memory_order_relaxed);
        if (failures < threshold) {
            continue;
        }
        record& r = records_[ep.id];
        ++r.ejections;
        r.last_duration = policy.base_ejection * r.ejections;
        r.ejected_until = now + r.last_duration;
        health.consecutive_failures.store(0, std::memory_order_relaxed);
        health.ejected.store(true, std::memory_order_relaxed);
        ++ejected;
        changes.push_back({ep.id, ep.address, true,
                           std::to_string(failures) + " consecutive failures: ejected for " +
                               format_duration(r.last_duration) + " (ejection " +
                               std::to_string(r.ejections) + ")"});
    }
    return changes;
}

void outlier_detector::retain(std::span<const routing::endpoint_id> keep, routing::registry& ids) {
    const std::unordered_set<routing::endpoint_id> kept(keep.begin(), keep.end());
    for (auto it = records_.begin(); it != records_.end();) {
        if (kept.contains(it->first)) {
            ++it;
            continue;
        }
        auto& health = ids.health(it->first);
        if (health.ejected.load(std::memory_order_relaxed)) {
            health.consecutive_failures.store(0, std::memory_order_relaxed);
            health.ejected.store(false, std::memory_order_relaxed);
        }
        it = records_.erase(it);
    }
}

unsigned outlier_detector::ejection_count(routing::endpoint_id id) const {
    const auto it = records_.find(id);
    return it == records_.end() ? 0 : it->second.ejections;
}

}  // namespace switchyard::health
