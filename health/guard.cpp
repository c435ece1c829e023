#include "health/guard.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>

namespace switchyard::health {

namespace {

// The share of requests a P95 lets exceed it.
constexpr double p95_tail = 0.05;

// Extreme confidences would make z infinite (and every bound trivial), below
// one half z turns negative and a "lower bound" would sit above the estimate.
double clamp_confidence(double confidence) {
    if (!(confidence >= 0.5)) {  // also NaN
        return 0.5;
    }
    return std::min(confidence, 1.0 - 1e-12);
}

double micros_to_ms(double micros) {
    return micros / 1000.0;
}

std::uint64_t ms_to_micros(double ms) {
    if (!(ms > 0.0)) {
        return 0;
    }
    return static_cast<std::uint64_t>(std::llround(ms * 1000.0));
}

double duration_ms(config::duration d) {
    return static_cast<double>(d.count());
}

pool_figures figures_of(const window_summary& w) {
    pool_figures f;
    f.requests = w.requests;
    f.errors = std::min(w.errors, w.requests);
    f.error_rate = w.error_rate();
    f.p95_ms = w.percentile_ms(0.95);
    return f;
}

// Score z of k/n against p0. Breach iff z > critical is the same event as
// wilson_lower(k, n, critical) > p0 (the Wilson interval inverts this test);
// z is reported because it reads on one scale across tests. A threshold of 0
// or 1 has no spread: clamped so that z stays finite and keeps its sign.
double score_z(std::uint64_t k, std::uint64_t n, double p0) {
    if (n == 0) {
        return 0.0;
    }
    const double p = std::clamp(p0, 1e-12, 1.0 - 1e-12);
    const double nn = static_cast<double>(n);
    return (static_cast<double>(std::min(k, n)) - nn * p) / std::sqrt(nn * p * (1.0 - p));
}

std::string number(double value, int significant = 3) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.*g", significant, value);
    return buffer;
}

std::string milliseconds(double ms) {
    char buffer[64];
    if (std::abs(ms) >= 100.0) {
        std::snprintf(buffer, sizeof buffer, "%.0f ms", ms);
    } else {
        std::snprintf(buffer, sizeof buffer, "%.1f ms", ms);
    }
    return buffer;
}

std::string percent(double confidence) {
    return number(confidence * 100.0, 4) + "%";
}

std::string conf_text(double confidence) {
    return "conf " + number(confidence, 6);
}

check error_rate_ceiling(const window_summary& pool, const pool_figures& base, bool with_base,
                         const config::guard& policy, double c, double z) {
    check t;
    t.kind = check_kind::error_rate_ceiling;
    t.made = true;
    t.value = pool.error_rate();
    t.baseline_value = with_base ? base.error_rate : 0.0;
    t.baseline_n = with_base ? base.requests : 0;
    t.allowed = policy.max_error_rate;
    t.threshold = policy.max_error_rate;
    t.n = pool.requests;
    t.confidence = c;
    t.critical = z;
    const std::uint64_t k = std::min(pool.errors, pool.requests);
    t.statistic = score_z(k, t.n, t.threshold);
    t.lower_bound = wilson_lower(k, t.n, z) - t.threshold;
    t.breach = t.lower_bound > 0.0;
    t.test = "one-sided Wilson score bound of the error rate vs max_error_rate, " + conf_text(c);
    return t;
}

check error_rate_increase(const window_summary& pool, const window_summary& baseline,
                          bool with_base, std::uint64_t min_requests, const config::guard& policy,
                          double c, double z) {
    check t;
    t.kind = check_kind::error_rate_increase;
    t.value = pool.error_rate();
    t.baseline_value = baseline.error_rate();
    t.allowed = policy.max_error_rate_increase;
    t.threshold = t.baseline_value + t.allowed;
    t.n = pool.requests;
    t.baseline_n = baseline.requests;
    t.confidence = c;
    t.critical = z;
    t.test = "one-sided Newcombe hybrid score bound of the error-rate difference vs "
             "max_error_rate_increase, " + conf_text(c);
    if (!with_base) {
        t.skipped = "stable has " + std::to_string(baseline.requests) +
                    " requests in the window, fewer than min_requests " +
                    std::to_string(min_requests);
        return t;
    }
    t.made = true;
    const std::uint64_t k1 = std::min(pool.errors, pool.requests);
    const std::uint64_t k2 = std::min(baseline.errors, baseline.requests);
    const double lower = newcombe_lower(k1, t.n, k2, t.baseline_n, z);
    const double difference = t.value - t.baseline_value;
    t.lower_bound = lower - t.allowed;
    // The half-width (difference - lower) is z standard errors of the hybrid
    // interval: expressing the excess in those units makes the statistic a z
    // whose comparison with `critical` is exactly the bound's.
    const double half_width = difference - lower;
    const double excess = difference - t.allowed;
    if (half_width > 0.0) {
        t.statistic = excess * z / half_width;
    } else {
        t.statistic = excess > 0.0 ? 1e9 : (excess < 0.0 ? -1e9 : 0.0);
    }
    t.breach = t.lower_bound > 0.0;
    return t;
}

// The binomial P95 test shared by both p95 checks: of n requests, `above`
// exceed `threshold_micros`; a P95 at or below it lets at most 5 % do so.
void p95_binomial(check& t, const latency_histogram& latency, std::uint64_t threshold_micros,
                  double z) {
    t.made = true;
    t.n = latency.count();
    t.above = std::min(latency.count_above(threshold_micros), t.n);
    t.statistic = score_z(t.above, t.n, p95_tail);
    t.lower_bound = wilson_lower(t.above, t.n, z) - p95_tail;
    t.breach = t.lower_bound > 0.0;
}

check p95_ceiling(const window_summary& pool, const pool_figures& base, bool with_base,
                  std::uint64_t min_requests, const config::guard& policy, double c, double z) {
    check t;
    t.kind = check_kind::p95_ceiling;
    t.value = pool.percentile_ms(0.95);
    t.baseline_value = with_base ? base.p95_ms : 0.0;
    t.baseline_n = with_base ? base.requests : 0;
    t.allowed = duration_ms(policy.max_p95);
    t.threshold = t.allowed;
    t.n = pool.latency.count();
    t.confidence = c;
    t.critical = z;
    t.test = "one-sided Wilson score bound of the share of requests above max_p95 vs 0.05, " +
             conf_text(c);
    if (t.n < min_requests) {
        t.skipped = "the pool has " + std::to_string(t.n) +
                    " latencies in the window, fewer than min_requests " +
                    std::to_string(min_requests);
        return t;
    }
    p95_binomial(t, pool.latency, ms_to_micros(t.threshold), z);
    return t;
}

check p95_increase(const window_summary& pool, const window_summary& baseline, bool with_base,
                   std::uint64_t min_requests, const config::guard& policy, double c) {
    // Bonferroni: stable's bound and the pool's test each get half of 1 - c,
    // so that the pair keeps level c.
    const double split = 1.0 - (1.0 - c) / 2.0;
    const double z = normal_quantile(split);
    check t;
    t.kind = check_kind::p95_increase;
    t.value = pool.percentile_ms(0.95);
    t.baseline_value = baseline.percentile_ms(0.95);
    t.allowed = duration_ms(policy.max_p95_increase);
    t.n = pool.latency.count();
    t.baseline_n = baseline.latency.count();
    t.confidence = split;
    t.critical = z;
    t.test = "one-sided Wilson score bound of the share of requests above (stable's P95 upper "
             "bound + max_p95_increase) vs 0.05, " + conf_text(split) + " for each (Bonferroni, " +
             conf_text(c) + " overall)";
    if (!with_base) {
        t.skipped = "stable has " + std::to_string(baseline.requests) +
                    " requests in the window, fewer than min_requests " +
                    std::to_string(min_requests);
        return t;
    }
    if (t.n < min_requests) {
        t.skipped = "the pool has " + std::to_string(t.n) +
                    " latencies in the window, fewer than min_requests " +
                    std::to_string(min_requests);
        return t;
    }
    const std::optional<std::uint64_t> rank = quantile_upper_rank(t.baseline_n, 0.95, split);
    if (!rank) {
        t.skipped = "stable's " + std::to_string(t.baseline_n) +
                    " latencies are too few for an upper bound of its P95 at " + percent(split);
        return t;
    }
    const double upper_ms = micros_to_ms(value_at_rank(baseline.latency, *rank));
    t.threshold = upper_ms + t.allowed;
    p95_binomial(t, pool.latency, ms_to_micros(t.threshold), z);
    return t;
}

void set_headline(decision& d, const check& t) {
    d.metric = std::string(t.metric());
    d.pool_value = t.value;
    d.baseline_value = t.baseline_value;
    d.threshold = t.threshold;
    d.pool_requests = t.n;
    d.baseline_requests = t.baseline_n;
    d.statistic = t.statistic;
    d.critical = t.critical;
    d.lower_bound = t.lower_bound;
    d.confidence = t.confidence;
    d.test = t.test;
}

const check& find(const decision& d, check_kind kind) {
    return d.checks[static_cast<std::size_t>(kind)];
}

std::string describe(const check& t, bool baseline_compared) {
    std::string out;
    const bool is_p95 = t.kind == check_kind::p95_ceiling || t.kind == check_kind::p95_increase;
    const auto value = [&](double v) { return is_p95 ? milliseconds(v) : number(v); };
    out += std::string(t.metric()) + " " + value(t.value);
    switch (t.kind) {
        case check_kind::error_rate_increase:
            out += " vs stable " + value(t.baseline_value) + " (+" + value(t.allowed) +
                   " allowed)";
            break;
        case check_kind::p95_increase:
            out += " vs stable " + value(t.baseline_value) + " (+" + value(t.allowed) +
                   " allowed over stable's upper bound: threshold " + value(t.threshold) + ")";
            break;
        case check_kind::error_rate_ceiling:
        case check_kind::p95_ceiling:
            out += " over ceiling " + value(t.threshold);
            if (baseline_compared) {
                out += " (stable " + value(t.baseline_value) + ")";
            }
            break;
    }
    out += ", n=" + std::to_string(t.n);
    if (baseline_compared || t.kind == check_kind::error_rate_increase ||
        t.kind == check_kind::p95_increase) {
        out += "/" + std::to_string(t.baseline_n);
    }
    if (is_p95) {
        out += ", " + std::to_string(t.above) + " above " + value(t.threshold) +
               ", lower bound of the excess share over 0.05 ";
    } else {
        out += ", lower bound of excess ";
    }
    out += number(t.lower_bound, 2) + (t.lower_bound > 0.0 ? " > 0" : " <= 0") + " at " +
           percent(t.confidence);
    return out;
}

}  // namespace

// ---------------------------------------------------------------- names

std::string_view to_string(verdict v) {
    switch (v) {
        case verdict::pass:
            return "pass";
        case verdict::insufficient_data:
            return "insufficient_data";
        case verdict::breach:
            return "breach";
    }
    return "insufficient_data";
}

std::string_view to_string(breach_reason r) {
    switch (r) {
        case breach_reason::none:
            return "none";
        case breach_reason::error_rate:
            return "error_rate";
        case breach_reason::p95:
            return "p95";
        case breach_reason::unavailable:
            return "unavailable";
    }
    return "none";
}

std::string_view check::metric() const {
    return kind == check_kind::p95_ceiling || kind == check_kind::p95_increase ? "p95"
                                                                               : "error_rate";
}

// ---------------------------------------------------------------- judge

decision judge(const window_summary& pool, const window_summary& baseline,
               const config::guard& policy) {
    decision d;
    // min_requests 0 would judge an empty window; one request is the least
    // that carries any evidence.
    const std::uint64_t min_requests = std::max<std::uint64_t>(policy.min_requests, 1);
    const double c = clamp_confidence(policy.confidence);
    const double z = normal_quantile(c);

    d.pool = figures_of(pool);
    d.baseline = figures_of(baseline);
    d.confidence = c;
    d.pool_requests = pool.requests;
    d.baseline_requests = baseline.requests;
    d.baseline_compared = baseline.requests >= min_requests;
    for (std::size_t i = 0; i < d.checks.size(); ++i) {
        d.checks[i].kind = static_cast<check_kind>(i);
    }

    if (pool.requests < min_requests) {
        d.result = verdict::insufficient_data;
        const std::string why = "the pool has " + std::to_string(pool.requests) +
                                " requests in the window, fewer than min_requests " +
                                std::to_string(min_requests);
        for (check& t : d.checks) {
            t.skipped = why;
        }
        return d;
    }

    const bool with_base = d.baseline_compared;
    d.checks[0] = error_rate_ceiling(pool, d.baseline, with_base, policy, c, z);
    d.checks[1] = error_rate_increase(pool, baseline, with_base, min_requests, policy, c, z);
    d.checks[2] = p95_ceiling(pool, d.baseline, with_base, min_requests, policy, c, z);
    d.checks[3] = p95_increase(pool, baseline, with_base, min_requests, policy, c);

    // Priority among breaches: error rate before latency, as the SPEC lists
    // the reasons (failing requests hurt users more than slow ones); within a
    // metric the increase test, whose message names both pools' values (SPEC
    // §5: the revert reason names the metric and both values).
    constexpr std::array<check_kind, 4> priority{
        check_kind::error_rate_increase, check_kind::error_rate_ceiling,
        check_kind::p95_increase, check_kind::p95_ceiling};
    for (const check_kind kind : priority) {
        const check& t = find(d, kind);
        if (t.breach) {
            d.result = verdict::breach;
            d.reason = t.kind == check_kind::p95_ceiling || t.kind == check_kind::p95_increase
                           ? breach_reason::p95
                           : breach_reason::error_rate;
            set_headline(d, t);
            return d;
        }
    }

    d.result = verdict::pass;
    // The headline of a pass is the test nearest to breaching, measured on
    // the common z scale, so that a status page shows what to watch.
    const check* nearest = nullptr;
    for (const check_kind kind : priority) {
        const check& t = find(d, kind);
        if (t.made && (nearest == nullptr ||
                       t.statistic - t.critical > nearest->statistic - nearest->critical)) {
            nearest = &t;
        }
    }
    if (nearest != nullptr) {  // always: the error-rate ceiling is made once n suffices
        set_headline(d, *nearest);
    }
    return d;
}

std::string decision::summary() const {
    switch (result) {
        case verdict::insufficient_data:
            // Every check carries the same reason in this case.
            return "insufficient data: " + checks[0].skipped;
        case verdict::breach: {
            if (reason == breach_reason::unavailable) {
                return "unavailable: no usable endpoint for " + number(pool_value) +
                       " consecutive evaluations";
            }
            for (const check& t : checks) {
                if (t.breach && t.test == test) {
                    return describe(t, baseline_compared);
                }
            }
            return metric + " breach";  // unreachable: the headline is one of the checks
        }
        case verdict::pass:
            break;
    }
    std::string out = "pass at " + percent(confidence) + ": ";
    if (baseline_compared) {
        out += "error_rate " + number(pool.error_rate) + " vs stable " +
               number(baseline.error_rate) + ", p95 " + milliseconds(pool.p95_ms) +
               " vs stable " + milliseconds(baseline.p95_ms) + ", n=" +
               std::to_string(pool.requests) + "/" + std::to_string(baseline.requests);
    } else {
        out += "error_rate " + number(pool.error_rate) + ", p95 " + milliseconds(pool.p95_ms) +
               ", n=" + std::to_string(pool.requests) + " (stable has " +
               std::to_string(baseline.requests) + " requests: ceilings only)";
    }
    if (baseline_pinned) {
        out += " (stable's figures captured earlier)";
    }
    return out;
}

// ---------------------------------------------------------------- pool_watch

decision pool_watch::evaluate(bool has_usable_endpoint, const window_summary& pool,
                              const window_summary& baseline, const config::guard& policy) {
    without_endpoint_ = has_usable_endpoint ? 0 : without_endpoint_ + 1;

    const std::uint64_t min_requests = std::max<std::uint64_t>(policy.min_requests, 1);
    const bool use_captured = captured_.has_value() && baseline.requests < min_requests;
    decision d = judge(pool, use_captured ? *captured_ : baseline, policy);
    d.baseline_pinned = use_captured;

    if (d.result != verdict::breach && without_endpoint_ >= unavailable_after) {
        // Keeps the figures and checks: an operator still sees the window.
        d.result = verdict::breach;
        d.reason = breach_reason::unavailable;
        d.metric = "unavailable";
        d.pool_value = static_cast<double>(without_endpoint_);
        d.baseline_value = 0.0;
        d.threshold = static_cast<double>(unavailable_after);
        d.statistic = 0.0;
        d.critical = 0.0;
        d.lower_bound = 0.0;
        d.test = "no usable endpoint (all failing checks or ejected) for " +
                 std::to_string(unavailable_after) + " consecutive evaluations";
    }
    last_ = d;
    return d;
}

void pool_watch::capture_baseline(const window_summary& baseline) {
    captured_ = baseline;
}

void pool_watch::release_baseline() {
    captured_.reset();
}

void pool_watch::reset() {
    without_endpoint_ = 0;
    captured_.reset();
    last_ = decision{};
}

// ---------------------------------------------------------------- statistics

double normal_quantile(double p) {
    if (std::isnan(p) || p < 0.0 || p > 1.0) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    if (p == 0.0) {
        return -std::numeric_limits<double>::infinity();
    }
    if (p == 1.0) {
        return std::numeric_limits<double>::infinity();
    }
    // Acklam's coefficients: relative error below 1.15e-9 before refinement.
    constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                            -2.759285104469687e+02, 1.383577518672690e+02,
                            -3.066479806614716e+01, 2.506628277459239e+00};
    constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                            -1.556989798598866e+02, 6.680131188771972e+01,
                            -1.328068155288572e+01};
    constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                            -2.400758277161838e+00, -2.549732539343734e+00,
                            4.374664141464968e+00,  2.938163982698783e+00};
    constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                            2.445134137142996e+00, 3.754408661907416e+00};
    constexpr double p_low = 0.02425;

    double x = 0.0;
    if (p < p_low) {
        const double q = std::sqrt(-2.0 * std::log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
    } else if (p <= 1.0 - p_low) {
        const double q = p - 0.5;
        const double r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
    } else {
        const double q = std::sqrt(-2.0 * std::log1p(-p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
    }
    // One Halley step on e = Φ(x) - p brings it to full double precision.
    // Above one half, e is taken as (1 - p) - (1 - Φ(x)), where both terms
    // still have significant digits (1 - p is exact there).
    const double e = p > 0.5 ? (1.0 - p) - 0.5 * std::erfc(x / std::numbers::sqrt2)
                             : 0.5 * std::erfc(-x / std::numbers::sqrt2) - p;
    const double u = e * std::sqrt(2.0 * std::numbers::pi) * std::exp(x * x / 2.0);
    x = x - u / (1.0 + x * u / 2.0);
    return x;
}

namespace {

struct wilson {
    double lower;
    double upper;
};

wilson wilson_bounds(std::uint64_t k, std::uint64_t n, double z) {
    if (n == 0) {
        return {0.0, 1.0};
    }
    k = std::min(k, n);
    const double nn = static_cast<double>(n);
    const double p = static_cast<double>(k) / nn;
    const double z2 = z * z;
    const double denominator = 1.0 + z2 / nn;
    const double centre = p + z2 / (2.0 * nn);
    const double half = z * std::sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn));
    // At k = 0 (k = n) the bound is exactly 0 (1); rounding must not move it.
    const double lower = k == 0 ? 0.0 : std::clamp((centre - half) / denominator, 0.0, 1.0);
    const double upper = k == n ? 1.0 : std::clamp((centre + half) / denominator, 0.0, 1.0);
    return {lower, upper};
}

}  // namespace

double wilson_lower(std::uint64_t k, std::uint64_t n, double z) {
    return wilson_bounds(k, n, z).lower;
}

double wilson_upper(std::uint64_t k, std::uint64_t n, double z) {
    return wilson_bounds(k, n, z).upper;
}

double newcombe_lower(std::uint64_t k1, std::uint64_t n1, std::uint64_t k2, std::uint64_t n2,
                      double z) {
    const double p1 = n1 ? static_cast<double>(std::min(k1, n1)) / static_cast<double>(n1) : 0.0;
    const double p2 = n2 ? static_cast<double>(std::min(k2, n2)) / static_cast<double>(n2) : 0.0;
    const wilson w1 = wilson_bounds(k1, n1, z);
    const wilson w2 = wilson_bounds(k2, n2, z);
    const double below1 = p1 - w1.lower;
    const double above2 = w2.upper - p2;
    return (p1 - p2) - std::sqrt(below1 * below1 + above2 * above2);
}

std::optional<std::uint64_t> quantile_upper_rank(std::uint64_t n, double q, double confidence) {
    if (n == 0 || !(q > 0.0) || !(q < 1.0)) {
        return std::nullopt;
    }
    const double alpha = 1.0 - clamp_confidence(confidence);
    // P(X_(r) < true quantile) = P(Binomial(n, q) >= r): add the binomial
    // terms from the top down while the tail stays within alpha. Log space,
    // because q^n underflows for the windows of busy pools; the terms that
    // underflow are too small to matter.
    const double nn = static_cast<double>(n);
    const double log_ratio = std::log((1.0 - q) / q);
    double log_term = nn * std::log(q);  // P(Binomial = n)
    double tail = 0.0;
    std::uint64_t r = n + 1;
    for (std::uint64_t k = n; k >= 1; --k) {
        const double term = std::exp(log_term);
        if (tail + term > alpha) {
            break;
        }
        tail += term;
        r = k;
        // P(= k - 1) = P(= k) * k / (n - k + 1) * (1 - q) / q
        log_term += std::log(static_cast<double>(k) / (nn - static_cast<double>(k) + 1.0)) +
                    log_ratio;
    }
    if (r > n) {
        return std::nullopt;
    }
    return r;
}

double value_at_rank(const latency_histogram& histogram, std::uint64_t rank) {
    if (histogram.count() == 0) {
        return 0.0;
    }
    rank = std::clamp<std::uint64_t>(rank, 1, histogram.count());
    const auto& buckets = histogram.buckets();
    std::uint64_t seen = 0;
    for (unsigned i = 0; i < latency_histogram::bucket_count; ++i) {
        seen += buckets[i];
        if (seen >= rank) {
            return latency_histogram::bucket_value(i);
        }
    }
    return latency_histogram::bucket_value(latency_histogram::bucket_count - 1);
}

}  // namespace switchyard::health
