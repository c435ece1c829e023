#include "health/guard.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <deque>
#include <iostream>
#include <limits>
#include <random>
#include <vector>

namespace switchyard::health {
namespace {

using namespace std::chrono_literals;

config::guard default_policy() {
    return config::guard{};  // the SPEC's defaults: min_requests 50, confidence 0.99, ...
}

// A window of `requests` requests, `errors` of them failed, every latency
// drawn from `latency_us`.
template <class Latency>
window_summary make_window(std::uint64_t requests, std::uint64_t errors, Latency latency_us) {
    window_summary w;
    w.requests = requests;
    w.errors = errors;
    for (std::uint64_t i = 0; i < requests; ++i) {
        w.latency.record(latency_us());
    }
    w.span = 30s;
    return w;
}

window_summary constant_window(std::uint64_t requests, std::uint64_t errors,
                               std::uint64_t latency_us) {
    return make_window(requests, errors, [&] { return latency_us; });
}

// Lognormal latencies around `median_ms` plus a fixed `extra_ms`: the jitter
// of a healthy service, and a slow version of it.
struct lognormal_latency {
    double median_ms = 5.0;
    double sigma = 0.5;
    double extra_ms = 0.0;

    std::uint64_t operator()(std::mt19937_64& random) const {
        std::normal_distribution<double> normal(0.0, sigma);
        const double ms = median_ms * std::exp(normal(random)) + extra_ms;
        return static_cast<std::uint64_t>(ms * 1000.0);
    }
};

window_summary lognormal_window(std::mt19937_64& random, std::uint64_t requests,
                                std::uint64_t errors, lognormal_latency latency) {
    return make_window(requests, errors, [&] { return latency(random); });
}

// ---------------------------------------------------------------- statistics

TEST(guard_statistics, normal_quantile_matches_reference_values) {
    // References: Wichura's AS241 (Python's statistics.NormalDist), ~1e-16.
    const std::array<std::pair<double, double>, 8> cases{{
        {0.5, 0.0},
        {0.975, 1.9599639845400536},
        {0.99, 2.3263478740408408},
        {0.995, 2.5758293035489},
        {1e-10, -6.361340902404056},
        {0.999999, 4.753424308817089},
        {0.02425, -1.9729610513118845},  // Acklam's region boundaries
        {0.97575, 1.9729610513118847},
    }};
    for (const auto& [p, x] : cases) {
        EXPECT_NEAR(normal_quantile(p), x, 1e-12 * std::max(1.0, std::abs(x))) << "p=" << p;
    }
    EXPECT_NEAR(normal_quantile(1e-300), -37.0470962993612, 1e-9);
    for (double p = 0.001; p < 1.0; p += 0.0137) {
        EXPECT_NEAR(normal_quantile(p), -normal_quantile(1.0 - p), 1e-9) << p;
    }
    EXPECT_EQ(normal_quantile(0.0), -std::numeric_limits<double>::infinity());
    EXPECT_EQ(normal_quantile(1.0), std::numeric_limits<double>::infinity());
    EXPECT_TRUE(std::isnan(normal_quantile(-0.1)));
    EXPECT_TRUE(std::isnan(normal_quantile(1.5)));
    EXPECT_TRUE(std::isnan(normal_quantile(std::numeric_limits<double>::quiet_NaN())));
}

TEST(guard_statistics, wilson_and_newcombe_match_reference_values) {
    const double z = normal_quantile(0.99);
    EXPECT_NEAR(wilson_lower(30, 60, z), 0.35618098867309766, 1e-12);
    EXPECT_NEAR(wilson_upper(30, 60, z), 0.6438190113269023, 1e-12);
    EXPECT_NEAR(wilson_lower(3, 1000, z), 0.0008527113312922564, 1e-12);
    EXPECT_NEAR(wilson_upper(3, 1000, z), 0.010497755571142927, 1e-12);
    EXPECT_EQ(wilson_lower(0, 50, z), 0.0);
    EXPECT_NEAR(wilson_upper(0, 50, z), 0.0976666559882379, 1e-12);
    EXPECT_EQ(wilson_upper(50, 50, z), 1.0);
    EXPECT_EQ(wilson_lower(0, 0, z), 0.0);
    EXPECT_EQ(wilson_upper(0, 0, z), 1.0);
    EXPECT_EQ(wilson_lower(70, 60, z), wilson_lower(60, 60, z));  // k > n is k = n

    EXPECT_NEAR(newcombe_lower(100, 200, 8, 800, z), 0.40794660343058337, 1e-12);
    EXPECT_NEAR(newcombe_lower(0, 50, 5, 50, z), -0.24063537386516354, 1e-12);
}

// P(Binomial(n, q) >= r), directly from the definition.
double binomial_tail(std::uint64_t n, double q, std::uint64_t r) {
    double tail = 0.0;
    for (std::uint64_t k = r; k <= n; ++k) {
        const double nn = double(n);
        const double kk = double(k);
        tail += std::exp(std::lgamma(nn + 1) - std::lgamma(kk + 1) - std::lgamma(nn - kk + 1) +
                         kk * std::log(q) + (nn - kk) * std::log1p(-q));
    }
    return tail;
}

TEST(guard_statistics, quantile_upper_rank_is_the_smallest_rank_with_the_confidence) {
    for (const std::uint64_t n : {104u, 150u, 240u, 1000u, 1800u, 20000u}) {
        const auto r = quantile_upper_rank(n, 0.95, 0.995);
        ASSERT_TRUE(r.has_value()) << n;
        ASSERT_LE(*r, n);
        EXPECT_LE(binomial_tail(n, 0.95, *r), 0.005 * (1 + 1e-9)) << n;
        EXPECT_GT(binomial_tail(n, 0.95, *r - 1), 0.005) << n;
    }
    // 0.95^103 = 0.0051 > 0.005: even the largest of 103 samples is not an
    // upper bound of their P95 at 99.5 %; of 104 it is (0.95^104 = 0.0048).
    EXPECT_FALSE(quantile_upper_rank(103, 0.95, 0.995).has_value());
    EXPECT_EQ(quantile_upper_rank(104, 0.95, 0.995), std::optional<std::uint64_t>(104));
    EXPECT_FALSE(quantile_upper_rank(0, 0.95, 0.995).has_value());
    // A busy pool's window: q^n underflows, the rank still comes out.
    const auto big = quantile_upper_rank(2'000'000, 0.95, 0.995);
    ASSERT_TRUE(big.has_value());
    const double sd = std::sqrt(2e6 * 0.95 * 0.05);
    EXPECT_NEAR(double(*big), 1.9e6 + 2.5758 * sd, 3.0);
}

TEST(guard_statistics, value_at_rank_reads_the_histogram) {
    latency_histogram h;
    for (std::uint64_t v = 1; v <= 100; ++v) {
        h.record(v);
    }
    EXPECT_EQ(value_at_rank(h, 1), 1.0);
    EXPECT_EQ(value_at_rank(h, 95), 95.0);
    EXPECT_EQ(value_at_rank(h, 100), 100.0);
    EXPECT_EQ(value_at_rank(h, 1000), 100.0);
    EXPECT_EQ(value_at_rank(latency_histogram{}, 5), 0.0);
}

// ---------------------------------------------------------------- judge

TEST(guard_judge, too_few_pool_requests_is_insufficient_data_never_a_breach) {
    const config::guard policy = default_policy();
    // 49 requests, all failed and all slow: still not enough to judge.
    const window_summary pool = constant_window(49, 49, 5'000'000);
    const window_summary baseline = constant_window(5000, 10, 5'000);
    const decision d = judge(pool, baseline, policy);
    EXPECT_EQ(d.result, verdict::insufficient_data);
    EXPECT_EQ(d.reason, breach_reason::none);
    EXPECT_EQ(d.pool.requests, 49u);
    EXPECT_EQ(d.baseline.requests, 5000u);
    for (const check& t : d.checks) {
        EXPECT_FALSE(t.made);
        EXPECT_FALSE(t.breach);
        EXPECT_FALSE(t.skipped.empty());
    }
    EXPECT_EQ(d.summary(),
              "insufficient data: the pool has 49 requests in the window, fewer than "
              "min_requests 50");

    const decision empty = judge(window_summary{}, window_summary{}, policy);
    EXPECT_EQ(empty.result, verdict::insufficient_data);

    // min_requests 0 still needs one request.
    config::guard zero = policy;
    zero.min_requests = 0;
    EXPECT_EQ(judge(window_summary{}, baseline, zero).result, verdict::insufficient_data);
}

TEST(guard_judge, clear_error_rate_breach_reports_the_numbers) {
    std::mt19937_64 random(1);
    const config::guard policy = default_policy();
    const window_summary pool = lognormal_window(random, 200, 100, {});
    const window_summary baseline = lognormal_window(random, 800, 8, {});
    const decision d = judge(pool, baseline, policy);

    ASSERT_EQ(d.result, verdict::breach) << d.summary();
    EXPECT_EQ(d.reason, breach_reason::error_rate);
    EXPECT_EQ(d.metric, "error_rate");
    EXPECT_DOUBLE_EQ(d.pool_value, 0.5);
    EXPECT_DOUBLE_EQ(d.baseline_value, 0.01);
    EXPECT_DOUBLE_EQ(d.threshold, 0.06);
    EXPECT_EQ(d.pool_requests, 200u);
    EXPECT_EQ(d.baseline_requests, 800u);
    EXPECT_NEAR(d.lower_bound, 0.40794660343058337 - 0.05, 1e-9);  // Newcombe, see above
    EXPECT_GT(d.statistic, d.critical);
    EXPECT_NEAR(d.critical, 2.3263478740408408, 1e-12);
    EXPECT_DOUBLE_EQ(d.confidence, 0.99);
    EXPECT_NE(d.test.find("Newcombe"), std::string::npos) << d.test;
    EXPECT_TRUE(d.baseline_compared);
    EXPECT_TRUE(d.checks[0].breach);  // the ceiling breaches too
    EXPECT_TRUE(d.checks[1].breach);
    EXPECT_FALSE(d.checks[2].breach);
    EXPECT_FALSE(d.checks[3].breach);
    EXPECT_DOUBLE_EQ(d.pool.error_rate, 0.5);
    EXPECT_DOUBLE_EQ(d.baseline.error_rate, 0.01);

    const std::string s = d.summary();
    std::cout << "  summary: " << s << "\n";
    EXPECT_NE(s.find("error_rate 0.5 vs stable 0.01 (+0.05 allowed), n=200/800"), std::string::npos)
        << s;
    EXPECT_NE(s.find("> 0 at 99%"), std::string::npos) << s;
}

TEST(guard_judge, clear_latency_breach_is_p95) {
    std::mt19937_64 random(2);
    const config::guard policy = default_policy();
    const window_summary baseline = lognormal_window(random, 2400, 24, {});
    const window_summary pool = lognormal_window(random, 600, 6, {.extra_ms = 300.0});
    const decision d = judge(pool, baseline, policy);

    ASSERT_EQ(d.result, verdict::breach) << d.summary();
    EXPECT_EQ(d.reason, breach_reason::p95);
    EXPECT_EQ(d.metric, "p95");
    EXPECT_GT(d.pool_value, 300.0);
    EXPECT_LT(d.pool_value, 330.0);
    EXPECT_GT(d.baseline_value, 8.0);  // lognormal(5 ms, 0.5): P95 = 11.4 ms
    EXPECT_LT(d.baseline_value, 16.0);
    EXPECT_GT(d.threshold, d.baseline_value + 100.0);  // stable's upper bound + 100 ms
    EXPECT_LT(d.threshold, d.baseline_value + 103.0);
    EXPECT_EQ(d.checks[3].above, 600u);
    EXPECT_GT(d.lower_bound, 0.9);
    EXPECT_NEAR(d.confidence, 0.995, 1e-12);
    EXPECT_FALSE(d.checks[0].breach);
    EXPECT_FALSE(d.checks[1].breach);
    EXPECT_FALSE(d.checks[2].breach);  // 305 ms is under the 1 s ceiling
    std::cout << "  summary: " << d.summary() << "\n";
    EXPECT_NE(d.summary().find("p95 3"), std::string::npos) << d.summary();
}

TEST(guard_judge, error_rate_is_the_reason_when_both_breach) {
    std::mt19937_64 random(3);
    const window_summary baseline = lognormal_window(random, 2000, 20, {});
    const window_summary pool = lognormal_window(random, 500, 250, {.extra_ms = 2000.0});
    const decision d = judge(pool, baseline, default_policy());
    ASSERT_EQ(d.result, verdict::breach);
    EXPECT_EQ(d.reason, breach_reason::error_rate);
    EXPECT_TRUE(d.checks[2].breach);
    EXPECT_TRUE(d.checks[3].breach);
}

TEST(guard_judge, ceilings_apply_without_a_baseline) {
    std::mt19937_64 random(4);
    const config::guard policy = default_policy();
    const window_summary none;
    const window_summary few = lognormal_window(random, 30, 0, {});  // stable below min_requests

    for (const window_summary* baseline : {&none, &few}) {
        // 10 % errors against a 5 % ceiling.
        const decision errors = judge(lognormal_window(random, 2000, 200, {}), *baseline, policy);
        ASSERT_EQ(errors.result, verdict::breach) << errors.summary();
        EXPECT_EQ(errors.reason, breach_reason::error_rate);
        EXPECT_FALSE(errors.baseline_compared);
        EXPECT_TRUE(errors.checks[0].breach);
        EXPECT_FALSE(errors.checks[1].made);
        EXPECT_FALSE(errors.checks[3].made);
        EXPECT_DOUBLE_EQ(errors.threshold, 0.05);
        EXPECT_NE(errors.summary().find("over ceiling 0.05"), std::string::npos)
            << errors.summary();

        // P95 of 1.5 s against the 1 s ceiling.
        const decision slow =
            judge(lognormal_window(random, 400, 0, {.median_ms = 1500.0, .sigma = 0.05}),
                  *baseline, policy);
        ASSERT_EQ(slow.result, verdict::breach) << slow.summary();
        EXPECT_EQ(slow.reason, breach_reason::p95);
        EXPECT_DOUBLE_EQ(slow.threshold, 1000.0);
        EXPECT_TRUE(slow.checks[2].breach);

        // Healthy: a pass, saying that only the ceilings were applied.
        const decision fine = judge(lognormal_window(random, 400, 4, {}), *baseline, policy);
        EXPECT_EQ(fine.result, verdict::pass) << fine.summary();
        EXPECT_FALSE(fine.baseline_compared);
        EXPECT_NE(fine.summary().find("ceilings only"), std::string::npos) << fine.summary();
    }
}

TEST(guard_judge, p95_increase_needs_enough_stable_latencies_for_its_bound) {
    std::mt19937_64 random(5);
    const config::guard policy = default_policy();
    const window_summary pool = lognormal_window(random, 400, 0, {.extra_ms = 300.0});
    // 80 stable requests: enough for the error-rate comparison, too few for
    // an upper bound of stable's P95 at 99.5 % (needs 104).
    const decision d = judge(pool, lognormal_window(random, 80, 0, {}), policy);
    EXPECT_TRUE(d.baseline_compared);
    EXPECT_TRUE(d.checks[1].made);
    EXPECT_FALSE(d.checks[3].made);
    EXPECT_NE(d.checks[3].skipped.find("too few"), std::string::npos) << d.checks[3].skipped;
    EXPECT_EQ(d.result, verdict::pass) << d.summary();  // 305 ms < the 1 s ceiling

    const decision enough = judge(pool, lognormal_window(random, 200, 0, {}), policy);
    EXPECT_EQ(enough.result, verdict::breach) << enough.summary();
    EXPECT_EQ(enough.reason, breach_reason::p95);
}

TEST(guard_judge, at_the_threshold_is_not_a_breach_and_just_above_it_is) {
    const config::guard policy = default_policy();
    const window_summary none;
    EXPECT_EQ(judge(constant_window(100'000, 5'000, 5'000), none, policy).result, verdict::pass);
    EXPECT_EQ(judge(constant_window(100'000, 5'500, 5'000), none, policy).result,
              verdict::breach);

    // 5 % of requests above max_p95 is a P95 at the ceiling; 6 % is above it.
    const auto latency_window = [](std::uint64_t n, std::uint64_t slow) {
        std::uint64_t i = 0;
        return make_window(n, 0, [&] { return i++ < slow ? 1'500'000u : 5'000u; });
    };
    EXPECT_EQ(judge(latency_window(100'000, 5'000), none, policy).result, verdict::pass);
    EXPECT_EQ(judge(latency_window(100'000, 6'000), none, policy).result, verdict::breach);

    // The increase: 5 points above stable is allowed, 6 are not (with the
    // ceiling out of the way).
    config::guard relative = policy;
    relative.max_error_rate = 0.5;
    const window_summary stable = constant_window(100'000, 1'000, 5'000);
    EXPECT_EQ(judge(constant_window(100'000, 5'900, 5'000), stable, relative).result,
              verdict::pass);
    const decision above = judge(constant_window(100'000, 7'000, 5'000), stable, relative);
    EXPECT_EQ(above.result, verdict::breach);
    EXPECT_FALSE(above.checks[0].breach);
    EXPECT_TRUE(above.checks[1].breach);
}

TEST(guard_judge, degenerate_policies_give_defined_decisions) {
    const window_summary pool = constant_window(100, 1, 5'000);
    const window_summary stable = constant_window(100, 1, 5'000);
    for (const double confidence : {0.0, 0.3, 0.5, 0.999999999999999, 1.0}) {
        config::guard policy = default_policy();
        policy.confidence = confidence;
        const decision d = judge(pool, stable, policy);
        EXPECT_NE(d.result, verdict::insufficient_data);
        for (const check& t : d.checks) {
            EXPECT_TRUE(std::isfinite(t.statistic)) << confidence;
            EXPECT_TRUE(std::isfinite(t.lower_bound)) << confidence;
            EXPECT_TRUE(std::isfinite(t.critical)) << confidence;
        }
    }
    // A zero error ceiling: one error is significant, none is not.
    config::guard strict = default_policy();
    strict.max_error_rate = 0.0;
    EXPECT_EQ(judge(pool, window_summary{}, strict).result, verdict::breach);
    EXPECT_EQ(judge(constant_window(100, 0, 5'000), window_summary{}, strict).result,
              verdict::pass);
    EXPECT_TRUE(std::isfinite(judge(pool, window_summary{}, strict).statistic));
}

TEST(guard_judge, equal_pools_pass_at_every_size) {
    std::mt19937_64 random(6);
    const config::guard policy = default_policy();
    for (const std::uint64_t n : {50u, 51u, 100u, 500u, 1500u, 20000u}) {
        const std::uint64_t errors = n * 3 / 100;
        const decision d = judge(lognormal_window(random, n, errors, {}),
                                 lognormal_window(random, n, errors, {}), policy);
        EXPECT_EQ(d.result, verdict::pass) << n << ": " << d.summary();
        EXPECT_LE(d.lower_bound, 0.0);
        if (n == 1500) {
            std::cout << "  summary: " << d.summary() << "\n";
        }
    }
}

// ---------------------------------------------------------------- simulations

// What one pool does in a simulated second.
struct behaviour {
    double error_rate = 0.03;
    lognormal_latency latency;
};

// Traffic at `rps` (Poisson arrivals) split by weight between stable (pool 0)
// and one other pool (pool 1), kept as per-second slots; window() merges the
// last `window_seconds` slots, as stats_registry does at 1 s slot width.
class simulation {
public:
    simulation(std::uint64_t seed, double rps, unsigned window_seconds)
        : random_(seed), rps_(rps), window_seconds_(window_seconds) {}

    void second(double other_share, const behaviour& stable, const behaviour& other) {
        std::poisson_distribution<unsigned> arrivals(rps_);
        std::bernoulli_distribution to_other(other_share);
        std::array<slot, 2> now;
        const unsigned n = arrivals(random_);
        for (unsigned i = 0; i < n; ++i) {
            const unsigned pool = to_other(random_) ? 1 : 0;
            const behaviour& b = pool == 1 ? other : stable;
            ++now[pool].requests;
            if (std::bernoulli_distribution(b.error_rate)(random_)) {
                ++now[pool].errors;
            }
            now[pool].latencies.push_back(b.latency(random_));
        }
        slots_.push_back(std::move(now));
        if (slots_.size() > window_seconds_) {
            slots_.pop_front();
        }
    }

    window_summary window(unsigned pool) const {
        window_summary w;
        for (const auto& s : slots_) {
            w.requests += s[pool].requests;
            w.errors += s[pool].errors;
            for (const std::uint64_t v : s[pool].latencies) {
                w.latency.record(v);
            }
        }
        w.span = std::chrono::seconds(slots_.size());
        return w;
    }

private:
    struct slot {
        std::uint64_t requests = 0;
        std::uint64_t errors = 0;
        std::vector<std::uint64_t> latencies;
    };

    std::mt19937_64 random_;
    double rps_;
    unsigned window_seconds_;
    std::deque<std::array<slot, 2>> slots_;
};

struct false_revert_result {
    unsigned seeds_with_breach = 0;
    std::uint64_t breaching_evaluations = 0;
    std::uint64_t evaluations = 0;
};

// Two pools with the same 3 % error rate and the same latency distribution,
// 50/50 at 100 rps, both starting empty (so the small samples of the first
// seconds are included), judged every second for 600 s.
false_revert_result run_equal_pools(const config::guard& policy, unsigned seeds) {
    false_revert_result out;
    const behaviour same{.error_rate = 0.03, .latency = {.median_ms = 5.0, .sigma = 0.5}};
    for (unsigned seed = 1; seed <= seeds; ++seed) {
        simulation sim(seed, 100.0, 30);
        pool_watch watch;
        bool breached = false;
        for (int t = 1; t <= 600; ++t) {
            sim.second(0.5, same, same);
            const decision d = watch.evaluate(true, sim.window(1), sim.window(0), policy);
            if (d.result != verdict::insufficient_data) {
                ++out.evaluations;
            }
            if (d.result == verdict::breach) {
                ++out.breaching_evaluations;
                if (!breached) {
                    std::cout << "  seed " << seed << " t=" << t << ": " << d.summary() << "\n";
                }
                breached = true;
            }
        }
        out.seeds_with_breach += breached ? 1 : 0;
    }
    return out;
}

TEST(guard_simulation, equal_pools_are_not_reverted_by_noise) {
    constexpr unsigned seeds = 20;
    const false_revert_result r = run_equal_pools(default_policy(), seeds);
    std::cout << "false-revert rate (3 % errors both, 50/50 at 100 rps, 30 s window, judged "
                 "every 1 s for 600 s, default policy): "
              << r.seeds_with_breach << "/" << seeds << " seeds, " << r.breaching_evaluations
              << "/" << r.evaluations << " evaluations breached\n";
    EXPECT_GT(r.evaluations, seeds * 590u);  // judged nearly every second
    EXPECT_LE(r.seeds_with_breach, 1u);
}

// Without the margins (max_error_rate_increase 0, max_p95_increase 0) each
// evaluation asks "is the pool worse than stable at all?". Each single
// evaluation must still hold its level, about 1 - confidence: this checks the
// tests' calibration. Re-testing every second then adds up, which the run
// count shows: that is what the margins are for.
TEST(guard_simulation, without_margins_each_evaluation_still_holds_its_level) {
    config::guard policy = default_policy();
    policy.max_error_rate_increase = 0.0;
    policy.max_p95_increase = 0ms;
    constexpr unsigned seeds = 20;
    const false_revert_result r = run_equal_pools(policy, seeds);
    const double per_evaluation = double(r.breaching_evaluations) / double(r.evaluations);
    std::cout << "zero margins: per-evaluation breach rate " << per_evaluation
              << " (nominal <= " << 1.0 - policy.confidence << " per test), runs with a breach "
              << r.seeds_with_breach << "/" << seeds << "\n";
    EXPECT_LT(per_evaluation, 0.03);
}

struct detection {
    int first_breach = -1;  // seconds after the change; -1 = never within the run
    breach_reason reason = breach_reason::none;
    std::string summary;
};

// Stable serves all traffic for `warmup` seconds; the other pool gets
// `share` from t = 0 behaving `healthy` for `healthy_for` seconds and `bad`
// after that. Returns the first breach, counted from the moment it turned bad.
detection time_to_detect(std::uint64_t seed, double rps, double share, const behaviour& stable,
                         const behaviour& healthy, const behaviour& bad, int healthy_for) {
    const config::guard policy = default_policy();
    simulation sim(seed, rps, 30);
    for (int t = 0; t < 60; ++t) {
        sim.second(0.0, stable, stable);
    }
    pool_watch watch;
    for (int t = 1; t <= 120; ++t) {
        sim.second(share, stable, t <= healthy_for ? healthy : bad);
        const decision d = watch.evaluate(true, sim.window(1), sim.window(0), policy);
        if (d.result == verdict::breach) {
            return {t - healthy_for, d.reason, d.summary()};
        }
    }
    return {};
}

void report_detection(const char* what, const std::vector<detection>& runs) {
    std::vector<int> times;
    for (const detection& d : runs) {
        times.push_back(d.first_breach);
    }
    std::sort(times.begin(), times.end());
    std::cout << what << ": first breach after " << times.front() << " s (min), "
              << times[times.size() / 2] << " s (median), " << times.back() << " s (max) over "
              << times.size() << " seeds; e.g. " << runs.front().summary << "\n";
}

TEST(guard_simulation, a_failing_canary_is_caught_within_seconds) {
    // Weight 20 of 100 at 300 rps: the canary gets ~60 requests a second.
    const behaviour stable{.error_rate = 0.01, .latency = {}};
    const behaviour failing{.error_rate = 0.5, .latency = {}};
    std::vector<detection> runs;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        runs.push_back(time_to_detect(seed, 300.0, 0.2, stable, failing, failing, 0));
        EXPECT_EQ(runs.back().reason, breach_reason::error_rate) << seed;
        EXPECT_GE(runs.back().first_breach, 1) << seed;
        EXPECT_LT(runs.back().first_breach, 5) << seed;
    }
    report_detection("time to detect 50 % errors (canary 20 % of 300 rps, bad from its start)",
                     runs);
}

TEST(guard_simulation, a_slow_canary_is_caught_within_seconds) {
    const behaviour stable{.error_rate = 0.01, .latency = {}};
    const behaviour slow{.error_rate = 0.01, .latency = {.extra_ms = 300.0}};
    std::vector<detection> runs;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        runs.push_back(time_to_detect(seed, 300.0, 0.2, stable, slow, slow, 0));
        EXPECT_EQ(runs.back().reason, breach_reason::p95) << seed;
        EXPECT_GE(runs.back().first_breach, 1) << seed;
        EXPECT_LT(runs.back().first_breach, 5) << seed;
    }
    report_detection("time to detect +300 ms (canary 20 % of 300 rps, slow from its start)", runs);
}

// The harder case: the canary served well for a full window, then turns bad;
// its 30 s window dilutes the change, so it takes longer. Bounded loosely:
// the number is printed for the record.
TEST(guard_simulation, a_canary_turning_bad_after_a_healthy_window_is_caught) {
    const behaviour stable{.error_rate = 0.01, .latency = {}};
    const behaviour failing{.error_rate = 0.5, .latency = {}};
    const behaviour slow{.error_rate = 0.01, .latency = {.extra_ms = 300.0}};
    std::vector<detection> errors;
    std::vector<detection> latency;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        errors.push_back(time_to_detect(seed, 300.0, 0.2, stable, stable, failing, 60));
        latency.push_back(time_to_detect(seed, 300.0, 0.2, stable, stable, slow, 60));
        EXPECT_EQ(errors.back().reason, breach_reason::error_rate) << seed;
        EXPECT_EQ(latency.back().reason, breach_reason::p95) << seed;
        EXPECT_GE(errors.back().first_breach, 1) << seed;
        EXPECT_GE(latency.back().first_breach, 1) << seed;
        EXPECT_LE(errors.back().first_breach, 10) << seed;
        EXPECT_LE(latency.back().first_breach, 10) << seed;
    }
    report_detection("time to detect 50 % errors after 60 s healthy", errors);
    report_detection("time to detect +300 ms after 60 s healthy", latency);
}

// ---------------------------------------------------------------- pool_watch

TEST(guard_pool_watch, no_usable_endpoint_for_three_evaluations_is_unavailable) {
    const config::guard policy = default_policy();
    const window_summary empty;
    const window_summary stable = constant_window(1000, 10, 5'000);
    pool_watch watch;

    EXPECT_EQ(watch.evaluate(false, empty, stable, policy).result, verdict::insufficient_data);
    EXPECT_EQ(watch.evaluate(false, empty, stable, policy).result, verdict::insufficient_data);
    EXPECT_EQ(watch.evaluations_without_endpoint(), 2u);
    const decision third = watch.evaluate(false, empty, stable, policy);
    ASSERT_EQ(third.result, verdict::breach);
    EXPECT_EQ(third.reason, breach_reason::unavailable);
    EXPECT_EQ(third.metric, "unavailable");
    EXPECT_EQ(third.summary(), "unavailable: no usable endpoint for 3 consecutive evaluations");
    EXPECT_EQ(watch.last().reason, breach_reason::unavailable);
    EXPECT_EQ(watch.evaluate(false, empty, stable, policy).reason, breach_reason::unavailable);

    // Usable again: the count starts over.
    EXPECT_EQ(watch.evaluate(true, empty, stable, policy).result, verdict::insufficient_data);
    EXPECT_EQ(watch.evaluations_without_endpoint(), 0u);
    EXPECT_NE(watch.evaluate(false, empty, stable, policy).result, verdict::breach);
    EXPECT_NE(watch.evaluate(false, empty, stable, policy).result, verdict::breach);
    EXPECT_EQ(watch.evaluate(false, empty, stable, policy).reason, breach_reason::unavailable);

    // Interrupted runs do not add up.
    pool_watch flapping;
    for (int i = 0; i < 10; ++i) {
        EXPECT_NE(flapping.evaluate(i % 3 == 2, empty, stable, policy).result, verdict::breach);
    }
    flapping.reset();
    EXPECT_EQ(flapping.evaluations_without_endpoint(), 0u);
}

TEST(guard_pool_watch, a_statistical_breach_wins_over_unavailable) {
    const config::guard policy = default_policy();
    const window_summary stable = constant_window(1000, 10, 5'000);
    const window_summary failing = constant_window(200, 150, 5'000);
    pool_watch watch;
    watch.evaluate(false, failing, stable, policy);
    watch.evaluate(false, failing, stable, policy);
    const decision d = watch.evaluate(false, failing, stable, policy);
    EXPECT_EQ(d.result, verdict::breach);
    EXPECT_EQ(d.reason, breach_reason::error_rate);
}

TEST(guard_pool_watch, a_captured_baseline_stands_in_for_a_stable_without_traffic) {
    config::guard policy = default_policy();
    policy.max_error_rate = 0.5;  // only the comparison with stable can catch +9 points
    const window_summary before = constant_window(3000, 30, 5'000);
    const window_summary idle;  // stable at 0 % during a 100 % step
    const window_summary pool = constant_window(3000, 300, 5'000);  // 10 %: +9 points

    pool_watch watch;
    const decision ceilings_only = watch.evaluate(true, pool, idle, policy);
    EXPECT_FALSE(ceilings_only.baseline_compared);
    EXPECT_EQ(ceilings_only.result, verdict::pass);

    watch.capture_baseline(before);
    ASSERT_TRUE(watch.has_captured_baseline());
    const decision compared = watch.evaluate(true, pool, idle, policy);
    EXPECT_TRUE(compared.baseline_compared);
    EXPECT_TRUE(compared.baseline_pinned);
    EXPECT_EQ(compared.result, verdict::breach);
    EXPECT_EQ(compared.reason, breach_reason::error_rate);
    EXPECT_EQ(compared.baseline_requests, 3000u);

    // Live stable figures win as soon as there are enough of them.
    const window_summary live = constant_window(500, 50, 5'000);
    const decision with_live = watch.evaluate(true, pool, live, policy);
    EXPECT_FALSE(with_live.baseline_pinned);
    EXPECT_EQ(with_live.baseline.requests, 500u);

    watch.release_baseline();
    EXPECT_FALSE(watch.has_captured_baseline());
    EXPECT_FALSE(watch.evaluate(true, pool, idle, policy).baseline_compared);
}

}  // namespace
}  // namespace switchyard::health
