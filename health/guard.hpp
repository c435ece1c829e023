#pragma once
// The guard's judgement (SPEC §5): is a non-stable pool significantly worse
// than its thresholds? Pure logic: no Asio, no threads, no clock reads. The
// control thread merges the window figures (stats_registry::summary) and
// passes them in; this file only does arithmetic on them.
//
// Threads: judge() and the free functions are pure and may be called from any
// thread. A pool_watch is plain data owned by one caller (the control thread),
// one per judged pool; it is not synchronised.
//
// Failure: nothing throws except std::bad_alloc (the strings of a decision).
// Degenerate input (empty windows, a zero threshold, a confidence outside
// (0.5, 1)) gives a defined decision, never NaN, an exception or a crash.
//
// ---------------------------------------------------------------- the method
//
// Each evaluation makes up to four one-sided tests at the policy's
// `confidence` c (z = Φ⁻¹(c), 2.326 at the default 0.99). A test breaches only
// when the lower confidence bound of the pool's excess over its threshold is
// above zero; a breach of any test is a breach of the pool.
//
//   error_rate ceiling   p = errors/requests of the pool. Breach when the
//                        lower Wilson score bound of p > max_error_rate.
//   error_rate increase  d = p_pool − p_stable. Breach when Newcombe's hybrid
//                        score lower bound of d (method 10, built from the two
//                        Wilson bounds) > max_error_rate_increase. Newcombe
//                        rather than the unpooled Wald interval because error
//                        rates are small: Wald's interval collapses when a
//                        pool has 0 errors and its level drifts for small p.
//   p95 ceiling          k = pool requests slower than max_p95 (n = pool
//                        requests with a latency). A true P95 ≤ T means at
//                        most 5 % are above T, so breach when the lower Wilson
//                        bound of k/n > 0.05. This tests the P95 itself
//                        without estimating it: no density, no bootstrap.
//   p95 increase         The same binomial test against
//                        T = U + max_p95_increase, where U is a
//                        distribution-free upper confidence bound of stable's
//                        P95 (an order statistic whose rank comes from the
//                        exact binomial distribution). Both bounds are at
//                        c' = 1 − (1 − c)/2 (Bonferroni), so the two-sample
//                        test keeps its level c overall: with stable's point
//                        estimate instead of U, an unluckily low estimate
//                        would let noise breach once stable's P95 is
//                        uncertain by about max_p95_increase (slow services).
//
// Why re-testing every second does not turn noise into a revert: the null
// hypothesis is "the pool is at its threshold", not "the pool equals
// stable". A pool as healthy as stable sits max_error_rate_increase (5
// points) and max_p95_increase (100 ms) below its thresholds. Once its
// window holds a few hundred requests that gap is many standard errors, and
// a breach per evaluation becomes vanishingly rare (3 % errors against the
// 5 % ceiling: 7e-4 at n = 50, 7e-7 at n = 500, 2e-11 at n = 1500), so
// hundreds of correlated re-tests add up to nothing; the confidence bound
// mainly has to absorb the noise of small samples. Without the margins each
// evaluation would spend its 1 − c again: guard_test measures 15 of 20
// ten-minute runs of equal pools breaching with both increases set to zero,
// and none with the defaults.
//
// Sample size: a pool with fewer than `min_requests` judged requests in the
// window is `insufficient_data`, never a breach. When stable has fewer than
// `min_requests`, the relative tests are not made and only the ceilings
// apply (decision::baseline_compared = false, the verdict can still be
// pass); the p95 increase test additionally needs enough stable requests for
// U to exist at c' (at least 104 at c = 0.99: 0.95^n ≤ 0.005). pool_watch can
// hold a baseline captured earlier for the times stable has no traffic (a
// 100 % rollout step, post_switch_watch).
//
// Known limits: Wilson's bound is approximate; at a threshold, its actual
// one-sided level is about 1–1.5 % for c = 0.99, and up to ~3 % for a few
// small n because k is discrete (Clopper–Pearson would hold ≤ 1 % but reacts
// later near the threshold). Latencies are read from the histogram of
// stats.hpp: a request less than 1/64 above a threshold may count as not
// above it (conservative), and U is a bucket midpoint (< 1 % off).

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "health/stats.hpp"

namespace switchyard::health {

enum class verdict { pass, insufficient_data, breach };
enum class breach_reason { none, error_rate, p95, unavailable };

// "pass" | "insufficient_data" | "breach"; the SPEC's names.
std::string_view to_string(verdict v);
// "none" | "error_rate" | "p95" | "unavailable"; the metric label of
// switchyard_guard_reverts_total.
std::string_view to_string(breach_reason r);

// Plain figures of one pool's window, for the admin API and the event record.
struct pool_figures {
    std::uint64_t requests = 0;
    std::uint64_t errors = 0;
    double error_rate = 0.0;
    double p95_ms = 0.0;
};

enum class check_kind { error_rate_ceiling, error_rate_increase, p95_ceiling, p95_increase };

// One of the four tests. Error rates are fractions; latencies milliseconds.
struct check {
    check_kind kind = check_kind::error_rate_ceiling;
    bool made = false;           // false: not enough data, see `skipped`
    bool breach = false;         // made and lower_bound > 0
    std::string skipped;         // why it was not made (empty when made)
    double value = 0.0;          // pool's error rate, or pool's P95 (ms)
    double baseline_value = 0.0; // stable's error rate, or stable's P95 estimate (ms)
    double allowed = 0.0;        // the policy value: ceiling or increase
    double threshold = 0.0;      // what the pool is tested against (error rate or ms)
    std::uint64_t n = 0;         // pool requests (with latency, for p95)
    std::uint64_t baseline_n = 0;
    std::uint64_t above = 0;     // p95 tests: pool requests slower than `threshold`
    double confidence = 0.0;     // level of this test (c, or c' for p95 increase)
    double statistic = 0.0;      // z: score z of the share (Wilson tests) or the
                                 // excess over the Newcombe standard error
    double critical = 0.0;       // Φ⁻¹(confidence): breach iff statistic > critical
    double lower_bound = 0.0;    // lower bound of the excess: of (error rate −
                                 // threshold), (difference − allowed), or
                                 // (share above threshold − 0.05)
    std::string test;            // which test, in words

    std::string_view metric() const;  // "error_rate" or "p95"
};

struct decision {
    verdict result = verdict::insufficient_data;
    breach_reason reason = breach_reason::none;

    // The headline: the breaching test (for pass, the test closest to a
    // breach; for insufficient_data, empty metric and zeros). Copied from
    // `checks` so that an event record can be written from these alone.
    std::string metric;            // "error_rate" | "p95" | "unavailable" | ""
    double pool_value = 0.0;       // error rate, P95 in ms, or evaluations without an endpoint
    double baseline_value = 0.0;
    double threshold = 0.0;
    std::uint64_t pool_requests = 0;
    std::uint64_t baseline_requests = 0;
    double statistic = 0.0;
    double critical = 0.0;
    double lower_bound = 0.0;
    double confidence = 0.0;
    std::string test;

    pool_figures pool;
    pool_figures baseline;         // the baseline actually used (may be pinned)
    bool baseline_compared = false;  // the relative tests could be made
    bool baseline_pinned = false;    // pool_watch used a captured baseline
    std::array<check, 4> checks{};   // in check_kind order

    // One sentence for logs, the rollout reason and the revert event, e.g.
    // "error_rate 0.31 vs stable 0.01 (+0.05 allowed), n=412/3702, lower
    //  bound of excess 0.21 > 0 at 99%".
    std::string summary() const;
};

// Judges one non-stable pool's window against the absolute ceilings and
// against `baseline`, stable's figures for the same window (pass an empty
// summary when there is none). Ignores policy.enabled: whether to judge at all
// is the caller's decision. Breach reason: error_rate before p95 when both
// breach; within a metric, the increase test is the headline when it breaches,
// because it names both pools' values.
decision judge(const window_summary& pool, const window_summary& baseline,
               const config::guard& policy);

// Per-pool memory of the guard between evaluations. Call evaluate() once per
// `evaluate_every` for each judged pool. A new pool_watch (or reset()) is due
// whenever the pool starts being judged afresh (weights change, rollout start).
class pool_watch {
public:
    // SPEC §5: a pool with weight but no healthy endpoint for this many
    // evaluations in a row is a breach (reason unavailable).
    static constexpr unsigned unavailable_after = 3;

    // `has_usable_endpoint`: the pool has an endpoint passing active checks
    // and not ejected. A statistical breach takes precedence over
    // `unavailable` (it carries more numbers). When stable has fewer than
    // min_requests and a baseline was captured, the captured one is used.
    decision evaluate(bool has_usable_endpoint, const window_summary& pool,
                      const window_summary& baseline, const config::guard& policy);

    // Keeps `baseline` as the comparison for the times stable has too little
    // traffic of its own: before a 100 % rollout step, or at a switch for the
    // post_switch_watch (SPEC §5). Replaces any earlier capture.
    void capture_baseline(const window_summary& baseline);
    void release_baseline();
    bool has_captured_baseline() const { return captured_.has_value(); }

    unsigned evaluations_without_endpoint() const { return without_endpoint_; }
    // The most recent decision (insufficient_data before the first).
    const decision& last() const { return last_; }
    // Forgets the endpoint count, the last decision and the captured baseline.
    void reset();

private:
    unsigned without_endpoint_ = 0;
    std::optional<window_summary> captured_;
    decision last_;
};

// ---------------------------------------------------------------- statistics
// Exposed for tests and for anyone who wants to explain a decision.

// Φ⁻¹(p), the standard normal quantile: Acklam's rational approximation
// refined by one Halley step on std::erfc (|error| < 1e-12 over (0, 1)).
// ±infinity at p = 1 and 0, NaN outside [0, 1].
double normal_quantile(double p);

// Wilson score bounds of a binomial proportion k/n at the given z (one-sided
// bounds at Φ(z)). n = 0 gives [0, 1]; k > n is treated as k = n.
double wilson_lower(std::uint64_t k, std::uint64_t n, double z);
double wilson_upper(std::uint64_t k, std::uint64_t n, double z);

// Newcombe's hybrid score lower bound of p1 − p2 (p1 = k1/n1, p2 = k2/n2) at
// the given z: (p1 − p2) − sqrt((p1 − l1)² + (u2 − p2)²) with Wilson bounds.
double newcombe_lower(std::uint64_t k1, std::uint64_t n1, std::uint64_t k2, std::uint64_t n2,
                      double z);

// Rank r (1-based) of the order statistic that is an upper confidence bound
// of the q-quantile of n samples at `confidence`: the smallest r with
// P(Binomial(n, q) ≥ r) ≤ 1 − confidence, computed exactly. nullopt when no
// rank qualifies (q^n > 1 − confidence: too few samples). Costs
// O(n·(1 − q)) steps.
std::optional<std::uint64_t> quantile_upper_rank(std::uint64_t n, double q, double confidence);

// The value of rank r (1-based, nearest-rank) in the histogram, in
// microseconds (bucket midpoint); 0 when the histogram is empty.
double value_at_rank(const latency_histogram& histogram, std::uint64_t rank);

}  // namespace switchyard::health
