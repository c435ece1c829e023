// The per-request half of routing (SPEC §3.2, §3.3): which pool, then which
// endpoint. Called on every request by the workers, so nothing here allocates
// and everything is linear in the number of pools or endpoints of one service.

#include <cstddef>

#include "routing/snapshot.hpp"

namespace switchyard::routing {

namespace {

char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// `keyword` is lower-case.
bool iequals(std::string_view text, std::string_view keyword) {
    if (text.size() != keyword.size()) {
        return false;
    }
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (ascii_lower(text[i]) != keyword[i]) {
            return false;
        }
    }
    return true;
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

bool eligible(const pool& p) {
    return p.weight > 0 && p.has_usable_endpoint();
}

// The pool an override header value names, before the health check.
// "never" and "always" are keywords first, so a pool literally named
// "always" cannot be forced by name (config validation may want to reject it).
const pool* override_target(const service& svc, std::string_view value) {
    value = trim(value);
    if (iequals(value, "never")) {
        return svc.stable < svc.pools.size() ? &svc.pools[svc.stable] : nullptr;
    }
    if (iequals(value, "always")) {
        if (svc.rollout_pool && *svc.rollout_pool < svc.pools.size()) {
            return &svc.pools[*svc.rollout_pool];
        }
        // No rollout in progress: the candidate with the most traffic is the
        // one an operator most plausibly means. Strict '>' keeps the first in
        // name order on ties; a pool without weight is nobody's candidate.
        const pool* best = nullptr;
        for (std::size_t i = 0; i < svc.pools.size(); ++i) {
            const pool& p = svc.pools[i];
            if (i == svc.stable || p.weight == 0) {
                continue;
            }
            if (best == nullptr || p.weight > best->weight) {
                best = &p;
            }
        }
        return best;
    }
    return svc.find_pool(value);
}

}  // namespace

pool_choice choose_pool(const service& svc, const pool_request& request) {
    if (request.override_value && !svc.override_header.empty()) {
        const pool* target = override_target(svc, *request.override_value);
        if (target != nullptr && target->has_usable_endpoint()) {
            return {target, true};
        }
    }

    std::uint64_t total = 0;
    for (const pool& p : svc.pools) {
        if (eligible(p)) {
            total += p.weight;
        }
    }
    if (total == 0) {
        return {};
    }

    // Health is read again in the second pass and may have changed since the
    // first (the control thread writes it concurrently). `last` makes that
    // race land on some eligible pool instead of falling off the end.
    const pool* last = nullptr;
    std::uint64_t cumulative = 0;

    if (!request.affinity_bucket) {
        const std::uint64_t r = request.random % total;
        for (const pool& p : svc.pools) {
            if (!eligible(p)) {
                continue;
            }
            last = &p;
            cumulative += p.weight;
            if (r < cumulative) {
                return {&p, false};
            }
        }
        return {last, false};
    }

    // Affinity: the non-stable pools own the low buckets, in name order, and
    // the stable pool everything above them. Raising one canary's weight (and
    // lowering stable's) only moves its upper boundary up, so users only ever
    // move stable -> canary, and a revert moves exactly them back. Boundaries
    // are computed from the cumulative weight each time rather than summed
    // per pool, so rounding never drifts and the last one reaches 10000 when
    // the stable pool is not eligible.
    const std::uint64_t bucket = *request.affinity_bucket % affinity_buckets;
    for (std::size_t i = 0; i < svc.pools.size(); ++i) {
        const pool& p = svc.pools[i];
        if (i == svc.stable || !eligible(p)) {
            continue;
        }
        last = &p;
        cumulative += p.weight;
        if (bucket < cumulative * affinity_buckets / total) {
            return {&p, false};
        }
    }
    if (svc.stable < svc.pools.size() && eligible(svc.pools[svc.stable])) {
        return {&svc.pools[svc.stable], false};
    }
    return {last, false};
}

balancer_state::balancer_state() : cursors_(max_pools, 0), active_(max_endpoints, 0) {}

const endpoint* choose_endpoint(const pool& p, config::balance policy, balancer_state& state,
                                std::uint64_t random, const endpoint* exclude) {
    const std::size_t n = p.endpoints.size();
    if (n == 0) {
        return nullptr;
    }
    if (n == 1) {
        return p.endpoints[0].usable() ? &p.endpoints[0] : nullptr;
    }

    // Compared by id, not address: a retry may pass an endpoint from the
    // snapshot the first attempt used, which may not be this one.
    auto excluded = [exclude](const endpoint& e) {
        return exclude != nullptr && e.id == exclude->id;
    };

    if (policy == config::balance::round_robin) {
        std::uint32_t& cursor = state.cursor(p.id);
        // The cursor may come from a snapshot where the pool was larger.
        const std::size_t start = cursor % n;
        const endpoint* fallback = nullptr;
        std::size_t fallback_index = 0;
        for (std::size_t k = 0; k < n; ++k) {
            const std::size_t i = (start + k) % n;
            const endpoint& e = p.endpoints[i];
            if (!e.usable()) {
                continue;
            }
            if (excluded(e)) {
                fallback = &e;
                fallback_index = i;
                continue;
            }
            cursor = static_cast<std::uint32_t>(i + 1);
            return &e;
        }
        if (fallback != nullptr) {
            cursor = static_cast<std::uint32_t>(fallback_index + 1);
        }
        return fallback;
    }

    // least_request, power of two choices: two distinct random candidates,
    // the less loaded wins. Candidates are counted first and then found by
    // rank, so the choice is uniform without a scratch array.
    std::size_t candidates = 0;
    const endpoint* first = nullptr;
    const endpoint* fallback = nullptr;
    for (const endpoint& e : p.endpoints) {
        if (!e.usable()) {
            continue;
        }
        if (excluded(e)) {
            fallback = &e;
            continue;
        }
        if (first == nullptr) {
            first = &e;
        }
        ++candidates;
    }
    if (candidates == 0) {
        return fallback;
    }
    if (candidates == 1) {
        return first;
    }
    const std::size_t rank_a = random % candidates;
    std::size_t rank_b = (random / candidates) % (candidates - 1);
    if (rank_b >= rank_a) {
        ++rank_b;
    }
    const endpoint* a = nullptr;
    const endpoint* b = nullptr;
    std::size_t rank = 0;
    for (const endpoint& e : p.endpoints) {
        if (!e.usable() || excluded(e)) {
            continue;
        }
        if (rank == rank_a) {
            a = &e;
        } else if (rank == rank_b) {
            b = &e;
        }
        ++rank;
    }
    // Health may have changed between the passes; settle for what was found.
    if (a == nullptr || b == nullptr) {
        return a != nullptr ? a : (b != nullptr ? b : first);
    }
    // Ties go to the first draw, which is itself uniform, so an idle pool is
    // spread evenly rather than favouring low indexes.
    return state.active(b->id) < state.active(a->id) ? b : a;
}

std::uint64_t affinity_hash(std::string_view key) {
    // FNV-1a 64: fixed constants, so every replica and every restart agrees.
    std::uint64_t hash = 14695981039346656037ULL;
    for (const char c : key) {
        hash ^= static_cast<unsigned char>(c);
        hash *= 1099511628211ULL;
    }
    return hash;
}

std::optional<std::string_view> find_cookie(std::string_view cookie_header, std::string_view name) {
    if (name.empty()) {
        return std::nullopt;
    }
    while (!cookie_header.empty()) {
        const std::size_t semicolon = cookie_header.find(';');
        const std::string_view pair = cookie_header.substr(0, semicolon);
        cookie_header = semicolon == std::string_view::npos ? std::string_view{}
                                                            : cookie_header.substr(semicolon + 1);
        const std::size_t equals = pair.find('=');
        if (equals == std::string_view::npos || trim(pair.substr(0, equals)) != name) {
            continue;
        }
        std::string_view value = trim(pair.substr(equals + 1));
        if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
            value = value.substr(1, value.size() - 2);
        }
        return value;
    }
    return std::nullopt;
}

}  // namespace switchyard::routing
