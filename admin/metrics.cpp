#include "admin/metrics.hpp"

#include <prometheus/client_metric.h>
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <tuple>

#include "admin/control_plane.hpp"

namespace switchyard::admin {

// Guard reverts by (service, pool, reason): the only state of its own.
struct metrics::revert_counts {
    mutable std::mutex mutex;
    std::map<std::tuple<std::string, std::string, std::string>, std::uint64_t> counts;
};

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

constexpr std::array<std::string_view, 3> revert_reasons{"error_rate", "p95", "unavailable"};
constexpr std::array<std::string_view, 3> error_kinds{"connect", "timeout", "reset"};
static_assert(static_cast<std::size_t>(health::upstream_error_kind::connect) == 0 &&
              static_cast<std::size_t>(health::upstream_error_kind::timeout) == 1 &&
              static_cast<std::size_t>(health::upstream_error_kind::reset) == 2);

MetricFamily family(std::string name, std::string help, MetricType type) {
    MetricFamily f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
}

ClientMetric::Label label(std::string_view name, std::string_view value) {
    return ClientMetric::Label{std::string(name), std::string(value)};
}

void add_counter(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = value;
    f.metric.push_back(std::move(m));
}

void add_gauge(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = value;
    f.metric.push_back(std::move(m));
}

void append_nonempty(std::vector<MetricFamily>& out, MetricFamily f) {
    if (!f.metric.empty()) {
        out.push_back(std::move(f));
    }
}

// --- Services, pools, endpoints: the routing snapshot and the merged shards ---

class pool_collector : public prometheus::Collectable {
  public:
    pool_collector(std::function<std::shared_ptr<const routing::snapshot>()> snapshot,
                   const health::stats_registry* stats,
                   std::shared_ptr<const metrics::revert_counts> reverts)
        : snapshot_(std::move(snapshot)), stats_(stats), reverts_(std::move(reverts)) {}

    std::vector<MetricFamily> Collect() const override {
        auto requests = family("switchyard_requests_total",
                               "Requests answered downstream, by service, pool and status class.",
                               MetricType::Counter);
        auto duration = family("switchyard_request_duration_seconds",
                               "Time from the first byte sent upstream to the last byte of the "
                               "upstream's response, by service and pool.",
                               MetricType::Histogram);
        auto upstream_errors =
            family("switchyard_upstream_errors_total",
                   "Upstream failures (connect error, timeout, reset) by service and pool.",
                   MetricType::Counter);
        auto weight = family("switchyard_pool_weight", "Current routing weight of each pool.",
                             MetricType::Gauge);
        auto healthy =
            family("switchyard_endpoint_healthy",
                   "1 when the endpoint gets traffic (passing health checks and not ejected), "
                   "else 0.",
                   MetricType::Gauge);
        auto reverts = family("switchyard_guard_reverts_total",
                              "Reverts made by the guard, by service, pool and the metric that "
                              "breached.",
                              MetricType::Counter);

        std::set<std::tuple<std::string, std::string, std::string>> revert_keys;
        std::map<std::tuple<std::string, std::string, std::string>, std::uint64_t> revert_counts;
        {
            std::lock_guard lock(reverts_->mutex);
            revert_counts = reverts_->counts;
        }

        const std::shared_ptr<const routing::snapshot> snap = snapshot_ ? snapshot_() : nullptr;
        if (snap) {
            for (const routing::service& svc : snap->services()) {
                for (const routing::pool& p : svc.pools) {
                    collect_pool(svc, p, requests, duration, upstream_errors);
                    add_gauge(weight, {label("service", svc.name), label("pool", p.name)},
                              static_cast<double>(p.weight));
                    std::set<std::string_view> seen;
                    for (const routing::endpoint& ep : p.endpoints) {
                        if (!seen.insert(ep.address).second) {
                            continue;  // one series per address
                        }
                        add_gauge(healthy,
                                  {label("service", svc.name), label("pool", p.name),
                                   label("endpoint", ep.address)},
                                  ep.usable() ? 1.0 : 0.0);
                    }
                    // Every reason from zero, so that increase() sees the first revert.
                    for (std::string_view reason : revert_reasons) {
                        revert_keys.emplace(svc.name, p.name, std::string(reason));
                    }
                }
            }
        }
        for (const auto& entry : revert_counts) {
            revert_keys.insert(entry.first);
        }
        for (const auto& key : revert_keys) {
            const auto found = revert_counts.find(key);
            const std::uint64_t n = found == revert_counts.end() ? 0 : found->second;
            add_counter(reverts,
                        {label("service", std::get<0>(key)), label("pool", std::get<1>(key)),
                         label("reason", std::get<2>(key))},
                        static_cast<double>(n));
        }

        std::vector<MetricFamily> out;
        append_nonempty(out, std::move(requests));
        append_nonempty(out, std::move(duration));
        append_nonempty(out, std::move(upstream_errors));
        append_nonempty(out, std::move(weight));
        append_nonempty(out, std::move(healthy));
        append_nonempty(out, std::move(reverts));
        return out;
    }

  private:
    void collect_pool(const routing::service& svc, const routing::pool& p, MetricFamily& requests,
                      MetricFamily& duration, MetricFamily& upstream_errors) const {
        const health::totals t = stats_ ? stats_->pool_totals(p.id) : health::totals{};
        for (std::size_t i = 0; i < t.by_class.size(); ++i) {
            if (i == 0 && t.by_class[i] == 0) {
                continue;  // 1xx only once seen; 2xx..5xx always
            }
            const std::string code = std::to_string(i + 1) + "xx";
            add_counter(requests,
                        {label("service", svc.name), label("pool", p.name), label("code", code)},
                        static_cast<double>(t.by_class[i]));
        }

        ClientMetric h;
        h.label = {label("service", svc.name), label("pool", p.name)};
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < t.duration_buckets.size(); ++i) {
            cumulative += t.duration_buckets[i];
            const double bound = i < health::totals::duration_bounds.size()
                                     ? health::totals::duration_bounds[i]
                                     : std::numeric_limits<double>::infinity();
            h.histogram.bucket.push_back(ClientMetric::Bucket{cumulative, bound});
        }
        // The count is the sum of the buckets (so the +Inf bucket equals it).
        h.histogram.sample_count = cumulative;
        h.histogram.sample_sum = t.duration_sum_seconds;
        duration.metric.push_back(std::move(h));

        for (std::size_t i = 0; i < error_kinds.size(); ++i) {
            add_counter(
                upstream_errors,
                {label("service", svc.name), label("pool", p.name), label("kind", error_kinds[i])},
                static_cast<double>(t.upstream_errors[i]));
        }
    }

    std::function<std::shared_ptr<const routing::snapshot>()> snapshot_;
    const health::stats_registry* stats_;
    std::shared_ptr<const metrics::revert_counts> reverts_;
};

// --- Listeners and reloads ---

class frontend_collector : public prometheus::Collectable {
  public:
    frontend_collector(std::function<std::vector<proxy::listener_counters>()> listeners,
                       std::function<std::pair<std::uint64_t, std::uint64_t>()> reloads)
        : listeners_(std::move(listeners)), reloads_(std::move(reloads)) {}

    std::vector<MetricFamily> Collect() const override {
        std::vector<MetricFamily> out;
        if (listeners_) {
            auto open =
                family("switchyard_downstream_connections",
                       "Open downstream (client) connections per listener.", MetricType::Gauge);
            auto accepted =
                family("switchyard_accepted_connections_total",
                       "Downstream connections accepted per listener.", MetricType::Counter);
            auto unrouted = family("switchyard_unrouted_requests_total",
                                   "Requests no service matched (answered 404) per listener.",
                                   MetricType::Counter);
            std::set<std::string> seen;
            for (const proxy::listener_counters& l : listeners_()) {
                if (!seen.insert(l.name).second) {
                    continue;  // one series per listener name
                }
                add_gauge(open, {label("listener", l.name)},
                          static_cast<double>(l.open_connections));
                add_counter(accepted, {label("listener", l.name)},
                            static_cast<double>(l.accepted_connections));
                add_counter(unrouted, {label("listener", l.name)},
                            static_cast<double>(l.unrouted_requests));
            }
            append_nonempty(out, std::move(open));
            append_nonempty(out, std::move(accepted));
            append_nonempty(out, std::move(unrouted));
        }
        const auto [ok, failed] =
            reloads_ ? reloads_() : std::pair<std::uint64_t, std::uint64_t>{0, 0};
        auto reloads = family("switchyard_config_reloads_total",
                              "Configuration reloads (SIGHUP or POST /api/v1/reload) by result.",
                              MetricType::Counter);
        add_counter(reloads, {label("result", "ok")}, static_cast<double>(ok));
        add_counter(reloads, {label("result", "error")}, static_cast<double>(failed));
        out.push_back(std::move(reloads));
        return out;
    }

  private:
    std::function<std::vector<proxy::listener_counters>()> listeners_;
    std::function<std::pair<std::uint64_t, std::uint64_t>()> reloads_;
};

// --- The process (Linux /proc) and the build ---

// Fields of /proc/self/stat after the command name, which may hold spaces
// and parentheses: everything after the last ')'. Index 0 is field 3 (state).
std::vector<std::string> proc_stat_fields() {
    std::ifstream in("/proc/self/stat");
    std::string line;
    if (!in || !std::getline(in, line)) {
        return {};
    }
    const auto close = line.rfind(')');
    if (close == std::string::npos) {
        return {};
    }
    std::istringstream rest(line.substr(close + 1));
    std::vector<std::string> fields;
    for (std::string field; rest >> field;) {
        fields.push_back(std::move(field));
    }
    return fields;
}

// Field N of proc(5)'s /proc/[pid]/stat (1-based, as the manual numbers them).
std::optional<double> stat_field(const std::vector<std::string>& fields, std::size_t n) {
    if (n < 3 || n - 3 >= fields.size()) {
        return std::nullopt;
    }
    try {
        return std::stod(fields[n - 3]);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

std::optional<double> boot_time_seconds() {
    std::ifstream in("/proc/stat");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("btime ", 0) == 0) {
            try {
                return std::stod(line.substr(6));
            } catch (const std::exception&) {
                return std::nullopt;
            }
        }
    }
    return std::nullopt;
}

std::optional<double> process_start_time() {
    const long ticks = sysconf(_SC_CLK_TCK);
    const auto start = stat_field(proc_stat_fields(), 22);
    const auto boot = boot_time_seconds();
    if (ticks <= 0 || !start || !boot) {
        return std::nullopt;
    }
    return *boot + *start / static_cast<double>(ticks);
}

std::optional<double> open_fds() {
    std::error_code ec;
    std::filesystem::directory_iterator it("/proc/self/fd", ec);
    if (ec) {
        return std::nullopt;
    }
    double count = 0;
    for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
        if (ec) {
            return std::nullopt;
        }
        ++count;
    }
    // The iterator's own descriptor is one of them.
    return count > 0 ? count - 1 : 0;
}

class process_collector : public prometheus::Collectable {
  public:
    explicit process_collector(std::string version)
        : version_(version.empty() ? "unknown" : std::move(version)),
          start_time_(process_start_time()) {}

    std::vector<MetricFamily> Collect() const override {
        std::vector<MetricFamily> out;
        auto info = family("switchyard_build_info", "switchyard's version; the value is always 1.",
                           MetricType::Gauge);
        add_gauge(info, {label("version", version_)}, 1.0);
        out.push_back(std::move(info));

        const auto fields = proc_stat_fields();
        const long ticks = sysconf(_SC_CLK_TCK);
        const auto user = stat_field(fields, 14);
        const auto system = stat_field(fields, 15);
        if (user && system && ticks > 0) {
            auto f =
                family("process_cpu_seconds_total",
                       "Total user and system CPU time spent in seconds.", MetricType::Counter);
            add_counter(f, {}, (*user + *system) / static_cast<double>(ticks));
            out.push_back(std::move(f));
        }
        if (const auto vsize = stat_field(fields, 23)) {
            auto f = family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                            MetricType::Gauge);
            add_gauge(f, {}, *vsize);
            out.push_back(std::move(f));
        }
        const long page = sysconf(_SC_PAGESIZE);
        if (const auto rss = stat_field(fields, 24); rss && page > 0) {
            auto f = family("process_resident_memory_bytes", "Resident memory size in bytes.",
                            MetricType::Gauge);
            add_gauge(f, {}, *rss * static_cast<double>(page));
            out.push_back(std::move(f));
        }
        if (const auto fds = open_fds()) {
            auto f =
                family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge);
            add_gauge(f, {}, *fds);
            out.push_back(std::move(f));
        }
        rlimit limit{};
        if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
            auto f = family("process_max_fds", "Maximum number of open file descriptors.",
                            MetricType::Gauge);
            add_gauge(f, {}, static_cast<double>(limit.rlim_cur));
            out.push_back(std::move(f));
        }
        if (start_time_) {
            auto f =
                family("process_start_time_seconds",
                       "Start time of the process since unix epoch in seconds.", MetricType::Gauge);
            add_gauge(f, {}, *start_time_);
            out.push_back(std::move(f));
        }
        return out;
    }

  private:
    std::string version_;
    std::optional<double> start_time_;
};

}  // namespace

metrics::metrics(metrics_sources sources) : reverts_(std::make_shared<revert_counts>()) {
    collectables_.push_back(
        std::make_unique<pool_collector>(std::move(sources.snapshot), sources.stats, reverts_));
    collectables_.push_back(std::make_unique<frontend_collector>(std::move(sources.listeners),
                                                                 std::move(sources.reloads)));
    collectables_.push_back(std::make_unique<process_collector>(std::move(sources.version)));
}

metrics::~metrics() = default;

void metrics::on_event(const event& e) {
    if (e.kind != "revert" || e.actor != "guard" || !e.details) {
        return;
    }
    const auto* pool = e.details->if_contains("pool");
    if (pool == nullptr || !pool->is_string()) {
        return;
    }
    std::string reason = "unknown";
    if (const auto* metric = e.details->if_contains("metric");
        metric != nullptr && metric->is_string() && !metric->get_string().empty()) {
        reason = std::string(metric->get_string());
    }
    std::lock_guard lock(reverts_->mutex);
    ++reverts_->counts[{e.service, std::string(pool->get_string()), std::move(reason)}];
}

std::string metrics::scrape() {
    std::vector<MetricFamily> families;
    for (const auto& c : collectables_) {
        auto collected = c->Collect();
        families.insert(families.end(), std::make_move_iterator(collected.begin()),
                        std::make_move_iterator(collected.end()));
    }
    return prometheus::TextSerializer().Serialize(families);
}

}  // namespace switchyard::admin
