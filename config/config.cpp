// Loading and validation of the configuration file (SPEC §2).
//
// The walk is defensive by design: yaml-cpp throws on almost every misuse, so
// values are only read after their node type has been checked, and every
// problem is recorded and the walk goes on, so that `switchyard check` shows
// an operator all of them at once. A remaining exception (a yaml-cpp bug or
// bad_alloc) still becomes an error, never an escape to the caller.

#include "config/config.hpp"
#include "config/tls.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <set>
#include <system_error>
#include <utility>

namespace switchyard::config {

namespace {

// --- Small text helpers -----------------------------------------------------

std::string lower(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
        return static_cast<char>((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
    });
    return out;
}

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Decimal digits only: no sign, no spaces, no base prefix. Rejects values
// that do not fit rather than wrapping.
std::optional<std::uint64_t> parse_digits(std::string_view text) {
    if (text.empty() || !std::all_of(text.begin(), text.end(), is_digit)) {
        return std::nullopt;
    }
    std::uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || ptr != text.data() + text.size()) {
        return std::nullopt;
    }
    return value;
}

// RFC 9110 token: what a header or cookie name may contain.
bool is_token(std::string_view text) {
    static constexpr std::string_view extra = "!#$%&'*+-.^_`|~";
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
        return is_alpha(c) || is_digit(c) || extra.find(c) != std::string_view::npos;
    });
}

// Names of services and pools end up in URLs of the admin API, in metric
// labels and in override header values: keep them to a safe alphabet.
bool is_name(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
        return is_alpha(c) || is_digit(c) || c == '-' || c == '_' || c == '.';
    });
}

// A DNS name (letters, digits, '-', and '_' which container platforms use in
// service names) or, when every label is numeric, a dotted-quad IPv4 address.
bool is_dns_name_or_ipv4(std::string_view host) {
    if (host.empty() || host.size() > 253) {
        return false;
    }
    bool all_numeric = true;
    std::size_t start = 0;
    while (true) {
        std::size_t dot = host.find('.', start);
        std::string_view label = host.substr(
            start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
            return false;
        }
        for (char c : label) {
            if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_') {
                return false;
            }
        }
        if (!std::all_of(label.begin(), label.end(), is_digit)) {
            all_numeric = false;
        }
        if (dot == std::string_view::npos) {
            break;
        }
        start = dot + 1;
    }
    if (all_numeric) {
        // "10.0.0.300" or "1.2.3" would otherwise pass as names and then fail
        // (or, worse, resolve oddly) at runtime.
        in_addr v4{};
        return ::inet_pton(AF_INET, std::string(host).c_str(), &v4) == 1;
    }
    return true;
}

bool is_ipv6(std::string_view host) {
    in6_addr v6{};
    return !host.empty() && ::inet_pton(AF_INET6, std::string(host).c_str(), &v6) == 1;
}

std::optional<host_port> split_host_port(std::string_view text, bool allow_port_zero) {
    std::string_view host;
    std::string_view port;
    if (!text.empty() && text.front() == '[') {
        std::size_t close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return std::nullopt;
        }
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        if (!is_ipv6(host)) {
            return std::nullopt;
        }
    } else {
        std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            return std::nullopt;
        }
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        // A bare IPv6 address ("::1:80") is ambiguous: brackets are required.
        if (!is_dns_name_or_ipv4(host)) {
            return std::nullopt;
        }
    }
    if (port.size() > 5) {
        return std::nullopt;
    }
    auto number = parse_digits(port);
    if (!number || *number > 65535 || (*number == 0 && !allow_port_zero)) {
        return std::nullopt;
    }
    return host_port{std::string(host), static_cast<std::uint16_t>(*number)};
}

// Optimal string alignment distance: a transposition ("weigth") counts as
// one edit, which is the most common typo in a key.
std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i) {
        d[i][0] = i;
    }
    for (std::size_t j = 0; j <= b.size(); ++j) {
        d[0][j] = j;
    }
    for (std::size_t i = 1; i <= a.size(); ++i) {
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
            }
        }
    }
    return d[a.size()][b.size()];
}

std::string format(mark m) {
    return std::to_string(m.line) + ":" + std::to_string(m.column);
}

// yaml-cpp marks are 0-based; a null mark (an empty document) maps to the
// start of the file, which is where an operator looks for "missing" things.
mark to_mark(const YAML::Mark& m) {
    if (m.is_null() || m.line < 0 || m.column < 0) {
        return {1, 1};
    }
    return {m.line + 1, m.column + 1};
}

std::string describe(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Map:
            return "a map";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Scalar:
            return "'" + node.Scalar() + "'";
        default:
            return "empty";
    }
}

// Why a file named by the config cannot be used, or nullopt when it can be
// read. Reading one byte catches directories, which open() accepts.
std::optional<std::string> unreadable(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return std::generic_category().message(errno);
    }
    char byte = 0;
    ssize_t n = ::read(fd, &byte, 1);
    int read_errno = errno;
    ::close(fd);
    if (n < 0) {
        return std::generic_category().message(read_errno);
    }
    return std::nullopt;
}

// --- Error collection -------------------------------------------------------

struct diagnostic {
    mark at;
    std::string message;
};

// Every error found in one load, reported in file order.
class diagnostics {
  public:
    explicit diagnostics(std::string file) : file_(std::move(file)) {}

    void error(mark at, std::string message) { list_.push_back({at, std::move(message)}); }
    bool empty() const { return list_.empty(); }

    std::vector<std::string> take() {
        std::stable_sort(list_.begin(), list_.end(), [](const diagnostic& a, const diagnostic& b) {
            return std::pair(a.at.line, a.at.column) < std::pair(b.at.line, b.at.column);
        });
        std::vector<std::string> out;
        for (const diagnostic& d : list_) {
            std::string line = file_ + ":" + format(d.at) + ": " + d.message;
            if (std::find(out.begin(), out.end(), line) == out.end()) {
                out.push_back(std::move(line));
            }
        }
        list_.clear();
        return out;
    }

  private:
    std::string file_;
    std::vector<diagnostic> list_;
};

// --- Generic node walking ---------------------------------------------------

// A key and its value as found in the file. `key_at` is where errors about
// the value point when the value itself has no useful position (a null value
// is marked by yaml-cpp at the next token, often on the next line).
struct field {
    std::string key;
    mark key_at;
    YAML::Node value;
    bool entry = false;  // an entry of the list named `key`, at `key_at`

    std::string subject() const { return entry ? "an entry of '" + key + "'" : "'" + key + "'"; }

    bool is_null() const { return !value.IsDefined() || value.IsNull(); }
    mark value_at() const { return is_null() ? key_at : to_mark(value.Mark()); }
};

// Reads the typed value of one field, or records why it cannot and returns
// nullopt; the caller then keeps the default, so the walk goes on.
class value_reader {
  public:
    explicit value_reader(diagnostics& diag) : diag_(diag) {}

    diagnostics& diag() const { return diag_; }

    std::optional<std::string> scalar(const field& f, std::string_view expected) const {
        if (f.is_null()) {
            diag_.error(f.key_at, f.subject() + " needs a value (" + std::string(expected) + ")");
            return std::nullopt;
        }
        if (!f.value.IsScalar()) {
            diag_.error(f.value_at(), f.subject() + " must be " + std::string(expected) + ", not " +
                                          describe(f.value));
            return std::nullopt;
        }
        return f.value.Scalar();
    }

    std::optional<std::string> string(const field& f, bool allow_empty = true) const {
        auto text = scalar(f, "a string");
        if (text && text->empty() && !allow_empty) {
            diag_.error(f.value_at(), f.subject() + " must not be empty");
            return std::nullopt;
        }
        return text;
    }

    // YAML 1.2 core schema booleans only: "yes"/"on" are YAML 1.1 and are the
    // kind of near-miss this strictness is meant to catch.
    std::optional<bool> boolean(const field& f) const {
        auto text = scalar(f, "true or false");
        if (!text) {
            return std::nullopt;
        }
        if (*text == "true" || *text == "True" || *text == "TRUE") {
            return true;
        }
        if (*text == "false" || *text == "False" || *text == "FALSE") {
            return false;
        }
        diag_.error(f.value_at(), f.subject() + " must be true or false (got '" + *text + "')");
        return std::nullopt;
    }

    std::optional<std::uint32_t> integer(
        const field& f, std::uint32_t min = 0,
        std::uint32_t max = std::numeric_limits<std::uint32_t>::max()) const {
        auto text = scalar(f, "a non-negative integer");
        if (!text) {
            return std::nullopt;
        }
        if (text->size() > 1 && text->front() == '-' && parse_digits(text->substr(1))) {
            diag_.error(f.value_at(), f.subject() + " must not be negative (got " + *text + ")");
            return std::nullopt;
        }
        auto value = parse_digits(*text);
        if (!value) {
            diag_.error(f.value_at(),
                        f.subject() + " must be a non-negative integer (got '" + *text + "')");
            return std::nullopt;
        }
        if (*value > max) {
            diag_.error(f.value_at(), f.subject() + " must be at most " + std::to_string(max) +
                                          " (got " + *text + ")");
            return std::nullopt;
        }
        if (*value < min) {
            diag_.error(f.value_at(), f.subject() + " must be at least " + std::to_string(min) +
                                          " (got " + *text + ")");
            return std::nullopt;
        }
        return static_cast<std::uint32_t>(*value);
    }

    // A fraction in [0, 1], or in (0, 1) when `exclusive`.
    std::optional<double> fraction(const field& f, bool exclusive) const {
        auto text = scalar(f, "a number between 0 and 1");
        if (!text) {
            return std::nullopt;
        }
        double value = 0;
        auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
        bool number =
            ec == std::errc{} && ptr == text->data() + text->size() && std::isfinite(value);
        bool in_range = exclusive ? (value > 0.0 && value < 1.0) : (value >= 0.0 && value <= 1.0);
        if (!number || !in_range) {
            diag_.error(f.value_at(),
                        f.subject() + " must be a number " +
                            (exclusive ? "strictly between 0 and 1" : "between 0 and 1 inclusive") +
                            " (got '" + *text + "')");
            return std::nullopt;
        }
        return value;
    }

    std::optional<duration> time(const field& f, bool allow_zero) const {
        auto text = scalar(f, "a duration");
        if (!text) {
            return std::nullopt;
        }
        auto value = parse_duration(*text);
        if (!value) {
            diag_.error(f.value_at(), "bad duration '" + *text + "' for " + f.subject() +
                                          " (expected an integer with a unit ms, s, m or h, "
                                          "like 250ms, 2s, 5m, 1h)");
            return std::nullopt;
        }
        if (!allow_zero && value->count() == 0) {
            diag_.error(f.value_at(), f.subject() + " must be greater than zero");
            return std::nullopt;
        }
        return value;
    }

    std::optional<std::uint64_t> size(const field& f, bool allow_zero) const {
        auto text = scalar(f, "a size");
        if (!text) {
            return std::nullopt;
        }
        auto value = parse_size(*text);
        if (!value) {
            diag_.error(f.value_at(), "bad size '" + *text + "' for " + f.subject() +
                                          " (expected bytes, or an integer with KiB, MiB or "
                                          "GiB; KB, MB and GB are not accepted)");
            return std::nullopt;
        }
        if (!allow_zero && *value == 0) {
            diag_.error(f.value_at(), f.subject() + " must be greater than zero");
            return std::nullopt;
        }
        return value;
    }

    std::optional<status_range> statuses(const field& f) const {
        auto text = scalar(f, "a status range");
        if (!text) {
            return std::nullopt;
        }
        auto value = parse_status_range(*text);
        if (!value) {
            diag_.error(f.value_at(), "bad status range '" + *text + "' for " + f.subject() +
                                          " (expected CODE or LOW-HIGH, within 100-599, "
                                          "LOW <= HIGH)");
            return std::nullopt;
        }
        return value;
    }

    // The entries of a list, each as a field named after the list so that
    // messages about an entry read like messages about a key.
    std::optional<std::vector<field>> list(const field& f) const {
        if (f.is_null()) {
            diag_.error(f.key_at, f.subject() + " needs a value (a list)");
            return std::nullopt;
        }
        if (!f.value.IsSequence()) {
            diag_.error(f.value_at(), f.subject() + " must be a list, not " + describe(f.value));
            return std::nullopt;
        }
        std::vector<field> entries;
        for (const YAML::Node& entry : f.value) {
            mark at = to_mark(entry.Mark());
            if (!entry.IsDefined() || entry.IsNull()) {
                at = f.value_at();
            }
            entries.push_back({f.key, at, entry, true});
        }
        return entries;
    }

    // Records an unreadable file at the value naming it.
    void readable(const field& f, const std::string& path, std::string_view what) const {
        if (auto why = unreadable(path)) {
            diag_.error(f.value_at(),
                        "cannot read " + std::string(what) + " '" + path + "': " + *why);
        }
    }

  private:
    diagnostics& diag_;
};

// One YAML map checked against the keys it may hold. On construction it
// reports, for the whole map at once: a node that is not a map, keys that are
// not strings, duplicate keys (yaml-cpp 0.7 keeps them silently; the second is
// reported) and unknown keys (with the closest known key as a suggestion).
// An empty `known` list accepts any key (maps keyed by a name, like `pools`).
//
// A null node is an empty map: `health_check:` alone turns checks on with the
// defaults. Errors about a missing key point at `missing_at`, the enclosing
// key (or the node itself for list entries).
class map_reader : public value_reader {
  public:
    map_reader(diagnostics& diag, const YAML::Node& node, std::string subject, mark missing_at,
               std::initializer_list<std::string_view> known = {})
        : value_reader(diag), missing_at_(missing_at) {
        if (!node.IsDefined() || node.IsNull()) {
            return;
        }
        if (!node.IsMap()) {
            diag.error(to_mark(node.Mark()), subject + " must be a map, not " + describe(node));
            valid_ = false;
            return;
        }
        for (auto it = node.begin(); it != node.end(); ++it) {
            const YAML::Node key = it->first;  // a copy: it->first is a temporary
            mark key_at = to_mark(key.Mark());
            if (!key.IsScalar()) {
                diag.error(key_at, "keys in " + subject + " must be strings, not " + describe(key));
                continue;
            }
            const std::string& text = key.Scalar();
            const auto seen = std::find_if(seen_.begin(), seen_.end(),
                                           [&](const auto& k) { return k.first == text; });
            if (seen != seen_.end()) {
                diag.error(key_at,
                           "duplicate key '" + text + "' (first at " + format(seen->second) + ")");
                continue;
            }
            // Every key is remembered, so a second typo of the same key is
            // reported as a duplicate rather than twice as unknown.
            seen_.emplace_back(text, key_at);
            if (known.size() != 0 && std::find(known.begin(), known.end(), text) == known.end()) {
                diag.error(key_at, unknown_key_message(text, known));
                // Never stored in fields_: YAML::Node assignment rebinds the
                // document's node, so shuffling fields_ would corrupt the
                // values of the keys after it.
                continue;
            }
            fields_.push_back({text, key_at, it->second});
        }
    }

    bool valid() const { return valid_; }
    mark at() const { return missing_at_; }
    const std::vector<field>& fields() const { return fields_; }

    const field* get(std::string_view key) const {
        auto it = std::find_if(fields_.begin(), fields_.end(),
                               [&](const field& f) { return f.key == key; });
        return it == fields_.end() ? nullptr : &*it;
    }

    // As get(), and reports the key as missing (once the map itself is fine).
    const field* require(std::string_view key, std::string_view context) const {
        const field* f = get(key);
        if (f == nullptr && valid_) {
            diag().error(missing_at_, std::string(context) + " is missing required key '" +
                                          std::string(key) + "'");
        }
        return f;
    }

    // Typed setters: `out` keeps its default when the key is absent or bad.
    void set_string(std::string_view key, std::string& out, bool allow_empty = true) const {
        assign(key, out, [&](const field& f) { return string(f, allow_empty); });
    }
    void set_bool(std::string_view key, bool& out) const {
        assign(key, out, [&](const field& f) { return boolean(f); });
    }
    void set_integer(std::string_view key, std::uint32_t& out, std::uint32_t min = 0,
                     std::uint32_t max = std::numeric_limits<std::uint32_t>::max()) const {
        assign(key, out, [&](const field& f) { return integer(f, min, max); });
    }
    void set_fraction(std::string_view key, double& out, bool exclusive = false) const {
        assign(key, out, [&](const field& f) { return fraction(f, exclusive); });
    }
    void set_duration(std::string_view key, duration& out, bool allow_zero) const {
        assign(key, out, [&](const field& f) { return time(f, allow_zero); });
    }
    void set_size(std::string_view key, std::uint64_t& out, bool allow_zero) const {
        assign(key, out, [&](const field& f) { return size(f, allow_zero); });
    }
    void set_statuses(std::string_view key, status_range& out) const {
        assign(key, out, [&](const field& f) { return statuses(f); });
    }

  private:
    template <class T, class Read>
    void assign(std::string_view key, T& out, Read read) const {
        if (const field* f = get(key)) {
            if (auto value = read(*f)) {
                out = *value;
            }
        }
    }

    static std::string unknown_key_message(const std::string& key,
                                           std::initializer_list<std::string_view> known) {
        std::string message = "unknown key '" + key + "'";
        std::string_view best;
        std::size_t best_distance = std::numeric_limits<std::size_t>::max();
        std::string folded = lower(key);
        for (std::string_view candidate : known) {
            std::size_t d = edit_distance(folded, candidate);
            if (d < best_distance) {
                best_distance = d;
                best = candidate;
            }
        }
        // Close enough to be a typo, not so loose that short keys match anything.
        std::size_t limit = std::max<std::size_t>(1, std::min<std::size_t>(3, key.size() / 3));
        if (!best.empty() && best_distance <= limit) {
            message += " (did you mean '" + std::string(best) + "'?)";
        }
        return message;
    }

    mark missing_at_;
    bool valid_ = true;
    std::vector<field> fields_;
    std::vector<std::pair<std::string, mark>> seen_;  // every key, for duplicates
};

// --- The configuration walk -------------------------------------------------

class loader {
  public:
    explicit loader(const std::string& file) : diag_(file), read_(diag_) { cfg_.file = file; }

    load_result run(std::string_view yaml) {
        try {
            std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml));
            if (documents.size() > 1) {
                diag_.error(to_mark(documents[1].Mark()),
                            "only one YAML document is allowed in a configuration file");
            }
            read_root(documents.empty() ? YAML::Node() : documents.front());
        } catch (const YAML::Exception& e) {
            diag_.error(to_mark(e.mark), e.msg.empty() ? std::string(e.what()) : e.msg);
        } catch (const std::exception& e) {
            diag_.error({1, 1}, std::string("internal error while reading the file: ") + e.what());
        }
        load_result result;
        result.errors = diag_.take();
        if (result.errors.empty()) {
            result.value = std::move(cfg_);
        }
        return result;
    }

  private:
    void read_root(const YAML::Node& root) {
        if (!root.IsDefined() || root.IsNull()) {
            diag_.error({1, 1}, "the configuration is empty: missing required key 'services'");
            return;
        }
        map_reader top(diag_, root, "the configuration", {1, 1},
                       {"listeners", "admin", "state_file", "events_file", "workers",
                        "drain_timeout", "access_log", "limits", "upstream_defaults", "services"});
        if (!top.valid()) {
            return;
        }
        read_listeners(top.get("listeners"));
        if (const field* f = top.get("admin")) {
            read_admin(*f);
        }
        top.set_string("state_file", cfg_.state_file);
        top.set_string("events_file", cfg_.events_file);
        top.set_integer("workers", cfg_.workers);
        top.set_duration("drain_timeout", cfg_.drain_timeout, true);
        top.set_string("access_log", cfg_.access_log, false);
        if (const field* f = top.get("limits")) {
            read_limits(*f);
        }
        if (const field* f = top.get("upstream_defaults")) {
            read_upstream(*f);
        }
        if (const field* f = top.require("services", "the configuration")) {
            read_services(*f);
        }
        check_addresses();
    }

    // Listeners and admin bind; port 0 (any free port) is allowed there.
    std::optional<host_port> bind_address(const field& f) {
        auto text = read_.string(f);
        if (!text) {
            return std::nullopt;
        }
        auto parsed = parse_bind_address(*text);
        if (!parsed) {
            diag_.error(f.value_at(),
                        f.subject() + " must be host:port or [v6]:port (got '" + *text + "')");
        }
        return parsed;
    }

    void read_listeners(const field* f) {
        if (f == nullptr) {
            cfg_.listeners.push_back(listener{});
            return;
        }
        auto entries = read_.list(*f);
        if (!entries) {
            return;
        }
        if (entries->empty()) {
            diag_.error(f->value_at(),
                        "'listeners' must name at least one listener "
                        "(omit it for the default 0.0.0.0:8080)");
            return;
        }
        for (std::size_t i = 0; i < entries->size(); ++i) {
            const field& entry = (*entries)[i];
            map_reader m(diag_, entry.value, "a listener", entry.key_at,
                         {"name", "address", "tls"});
            listener l;
            l.at = entry.key_at;
            l.name = "listener-" + std::to_string(i + 1);
            listener_marks marks{l.at, {}};
            if (const field* n = m.get("name")) {
                if (auto name = read_.string(*n, false)) {
                    l.name = *name;
                    marks.name_at = n->value_at();
                }
            }
            if (const field* a = m.require("address", "listener '" + l.name + "'")) {
                if (auto hp = bind_address(*a)) {
                    l.address = a->value.Scalar();
                    l.host = hp->host;
                    l.port = hp->port;
                    marks.address_at = a->value_at();
                }
            }
            listener_marks_.push_back(marks);
            if (const field* t = m.get("tls")) {
                l.tls = read_listener_tls(*t);
            }
            cfg_.listeners.push_back(std::move(l));
        }
    }

    listener_tls read_listener_tls(const field& f) {
        map_reader m(diag_, f.value, "'tls'", f.key_at, {"cert", "key", "min_version"});
        listener_tls tls;
        bool files_readable = true;
        mark cert_at;
        mark key_at;
        if (const field* c = m.require("cert", "'tls'")) {
            if (auto path = read_.string(*c, false)) {
                tls.cert = *path;
                read_.readable(*c, tls.cert, "tls cert");
                files_readable = files_readable && !unreadable(tls.cert);
                cert_at = c->value_at();
            } else {
                files_readable = false;
            }
        } else {
            files_readable = false;
        }
        if (const field* k = m.require("key", "'tls'")) {
            if (auto path = read_.string(*k, false)) {
                tls.key = *path;
                read_.readable(*k, tls.key, "tls key");
                files_readable = files_readable && !unreadable(tls.key);
                key_at = k->value_at();
            } else {
                files_readable = false;
            }
        } else {
            files_readable = false;
        }
        // Readable is not enough: the listeners load these files with
        // OpenSSL, so a bad PEM or a key of another certificate fails here
        // (check, startup, reload) rather than on the first handshake.
        if (files_readable) {
            if (auto loaded = check_tls_pair(tls); !loaded) {
                diag_.error(loaded.fault == tls_fault::cert ? cert_at : key_at, loaded.message);
            }
        }
        if (const field* v = m.get("min_version")) {
            if (auto text = read_.string(*v)) {
                if (*text == "1.2" || *text == "1.3") {
                    tls.min_version = *text;
                } else {
                    diag_.error(v->value_at(),
                                "'min_version' must be \"1.2\" or \"1.3\" (got '" + *text + "')");
                }
            }
        }
        return tls;
    }

    void read_admin(const field& f) {
        map_reader m(diag_, f.value, "'admin'", f.key_at,
                     {"address", "token_file", "read_token_file"});
        admin& a = cfg_.admin_listener;
        a.at = f.key_at;
        if (const field* addr = m.get("address")) {
            if (auto hp = bind_address(*addr)) {
                a.address = addr->value.Scalar();
                a.host = hp->host;
                a.port = hp->port;
                a.at = addr->value_at();
                admin_address_at_ = a.at;
            }
        }
        for (auto [key, out] : {std::pair{"token_file", &a.token_file},
                                std::pair{"read_token_file", &a.read_token_file}}) {
            const field* t = m.get(key);
            if (t == nullptr) {
                continue;
            }
            auto path = read_.string(*t);
            if (!path || path->empty()) {
                continue;
            }
            *out = *path;
            check_token_file(*t, *path);
        }
    }

    // An empty token would make every "Bearer " header match: refuse it here
    // rather than let the admin API start wide open.
    void check_token_file(const field& f, const std::string& path) {
        if (auto why = unreadable(path)) {
            diag_.error(f.value_at(), "cannot read " + f.key + " '" + path + "': " + *why);
            return;
        }
        std::ifstream in(path, std::ios::binary);
        std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (content.find_first_not_of(" \t\r\n") == std::string::npos) {
            diag_.error(f.value_at(), f.key + " '" + path + "' is empty");
        }
    }

    void read_limits(const field& f) {
        map_reader m(diag_, f.value, "'limits'", f.key_at,
                     {"max_request_line_bytes", "max_request_header_bytes", "max_headers",
                      "max_request_body_bytes", "header_timeout", "idle_timeout", "body_timeout",
                      "send_timeout", "max_connections", "reject_underscore_headers"});
        limits& l = cfg_.limit;
        m.set_size("max_request_line_bytes", l.max_request_line_bytes, false);
        m.set_size("max_request_header_bytes", l.max_request_header_bytes, false);
        m.set_integer("max_headers", l.max_headers, 1);
        m.set_size("max_request_body_bytes", l.max_request_body_bytes, true);
        m.set_duration("header_timeout", l.header_timeout, false);
        m.set_duration("idle_timeout", l.idle_timeout, false);
        m.set_duration("body_timeout", l.body_timeout, false);
        m.set_duration("send_timeout", l.send_timeout, false);
        m.set_integer("max_connections", l.max_connections);
        m.set_bool("reject_underscore_headers", l.reject_underscore_headers);
    }

    void read_upstream(const field& f) {
        map_reader m(diag_, f.value, "'upstream_defaults'", f.key_at,
                     {"connect_timeout", "response_timeout", "read_timeout",
                      "max_idle_per_endpoint", "retries", "tls"});
        upstream_defaults& u = cfg_.upstream;
        m.set_duration("connect_timeout", u.connect_timeout, false);
        m.set_duration("response_timeout", u.response_timeout, false);
        m.set_duration("read_timeout", u.read_timeout, false);
        m.set_integer("max_idle_per_endpoint", u.max_idle_per_endpoint);
        m.set_integer("retries", u.retries);
        const field* t = m.get("tls");
        if (t == nullptr) {
            return;
        }
        map_reader tls(diag_, t->value, "'tls'", t->key_at,
                       {"enabled", "ca_file", "server_name", "verify"});
        tls.set_bool("enabled", u.tls.enabled);
        tls.set_string("ca_file", u.tls.ca_file, false);
        tls.set_string("server_name", u.tls.server_name);
        tls.set_bool("verify", u.tls.verify);
        // The CA bundle matters only when TLS to upstreams is on; the default
        // bundle is checked too when verification will need it.
        if (u.tls.enabled) {
            if (const field* ca = tls.get("ca_file")) {
                if (ca->value.IsScalar() && !ca->value.Scalar().empty()) {
                    read_.readable(*ca, u.tls.ca_file, "ca_file");
                    if (u.tls.verify && !unreadable(u.tls.ca_file)) {
                        // Read as the upstream connections will read it.
                        if (auto why = check_ca_file(u.tls.ca_file); !why.empty()) {
                            diag_.error(ca->value_at(), why);
                        }
                    }
                }
            } else if (u.tls.verify) {
                if (auto why = unreadable(u.tls.ca_file)) {
                    diag_.error(t->key_at,
                                "cannot read the default ca_file '" + u.tls.ca_file + "': " + *why);
                } else if (auto bad = check_ca_file(u.tls.ca_file); !bad.empty()) {
                    diag_.error(t->key_at, "the default " + bad);
                }
            }
        }
    }

    void read_services(const field& f) {
        auto entries = read_.list(f);
        if (!entries) {
            return;
        }
        if (entries->empty()) {
            diag_.error(f.value_at(), "'services' must list at least one service");
            return;
        }
        struct seen {
            std::string name;
            mark name_at;
            std::set<std::string> hosts;
            std::string prefix;
        };
        std::vector<seen> earlier;
        for (const field& entry : *entries) {
            mark name_at = entry.key_at;
            std::optional<service> parsed = read_service(entry, name_at);
            if (!parsed) {
                continue;
            }
            service& s = *parsed;
            std::set<std::string> hosts(s.hosts.begin(), s.hosts.end());
            for (const seen& e : earlier) {
                if (!s.name.empty() && e.name == s.name) {
                    diag_.error(name_at, "duplicate service name '" + s.name + "' (first at " +
                                             format(e.name_at) + ")");
                }
                if (e.hosts == hosts && e.prefix == s.path_prefix) {
                    diag_.error(s.at, "service '" + s.name +
                                          "' has the same hosts and path_prefix as service '" +
                                          e.name + "' (at " + format(e.name_at) + ")");
                    break;
                }
            }
            earlier.push_back({s.name, name_at, std::move(hosts), s.path_prefix});
            cfg_.services.push_back(std::move(s));
        }
    }

    // nullopt when the entry is not a map (already reported): such an entry
    // must not take part in the duplicate checks.
    std::optional<service> read_service(const field& entry, mark& name_at) {
        map_reader m(diag_, entry.value, "a service", entry.key_at,
                     {"name", "hosts", "path_prefix", "stable", "pools", "balance", "affinity",
                      "override_header", "retry_on_stable", "health_check", "outlier_detection",
                      "guard", "rollout", "smoke"});
        service s;
        s.at = entry.key_at;
        if (!m.valid()) {
            return std::nullopt;
        }
        if (!entry.value.IsMap()) {
            diag_.error(entry.key_at, "a service must be a map with 'name', 'stable' and 'pools'");
            return std::nullopt;
        }
        if (const field* n = m.require("name", "a service")) {
            if (auto name = read_.string(*n, false)) {
                name_at = n->value_at();
                if (is_name(*name)) {
                    s.name = *name;
                } else {
                    diag_.error(name_at,
                                "service name '" + *name +
                                    "' may only contain letters, digits, '-', '_' and '.'");
                }
            }
        }
        std::string context = s.name.empty() ? "a service" : "service '" + s.name + "'";
        if (const field* h = m.get("hosts")) {
            read_hosts(*h, s);
        }
        if (const field* p = m.get("path_prefix")) {
            if (auto prefix = read_.string(*p)) {
                if (prefix->empty() || prefix->front() != '/' ||
                    prefix->find_first_of("?# \t") != std::string::npos) {
                    diag_.error(p->value_at(),
                                "'path_prefix' must start with '/' and hold no "
                                "'?', '#' or spaces (got '" +
                                    *prefix + "')");
                } else {
                    s.path_prefix = *prefix;
                }
            }
        }
        const field* pools_field = m.require("pools", context);
        if (pools_field != nullptr) {
            read_pools(*pools_field, s);
        }
        if (const field* st = m.require("stable", context)) {
            if (auto stable = read_.string(*st, false)) {
                s.stable = *stable;
                if (!s.pools.empty() && s.find_pool(s.stable) == nullptr) {
                    diag_.error(st->value_at(), "stable pool '" + s.stable +
                                                    "' is not one of the pools of " + context +
                                                    " (" + pool_names(s) + ")");
                }
            }
        }
        if (const field* b = m.get("balance")) {
            if (auto text = read_.string(*b)) {
                if (*text == "round_robin") {
                    s.balance_policy = balance::round_robin;
                } else if (*text == "least_request") {
                    s.balance_policy = balance::least_request;
                } else {
                    diag_.error(b->value_at(),
                                "'balance' must be round_robin or least_request "
                                "(got '" +
                                    *text + "')");
                }
            }
        }
        if (const field* a = m.get("affinity")) {
            s.affinity_policy = read_affinity(*a);
        }
        if (const field* o = m.get("override_header")) {
            if (auto text = read_.string(*o)) {
                if (!text->empty() && !is_token(*text)) {
                    diag_.error(o->value_at(),
                                "'override_header' must be a header name (got '" + *text + "')");
                } else {
                    s.override_header = *text;
                }
            }
        }
        m.set_bool("retry_on_stable", s.retry_on_stable);
        if (const field* h = m.get("health_check")) {
            s.active_health = read_health_check(*h);
        }
        if (const field* o = m.get("outlier_detection")) {
            read_outlier(*o, s.outlier);
        }
        if (const field* g = m.get("guard")) {
            read_guard(*g, s.guard_policy);
        }
        if (const field* r = m.get("rollout")) {
            read_rollout(*r, s.rollout_policy);
        }
        if (const field* sm = m.get("smoke")) {
            read_smoke(*sm, s.smoke_test);
        }
        return s;
    }

    static std::string pool_names(const service& s) {
        std::string names;
        for (const pool& p : s.pools) {
            names += (names.empty() ? "" : ", ") + p.name;
        }
        return names.empty() ? "none" : names;
    }

    // Patterns are matched against a lower-cased Host without its port, so
    // they are stored lower-cased and a port in a pattern could never match.
    void read_hosts(const field& f, service& s) {
        auto entries = read_.list(f);
        if (!entries) {
            return;
        }
        for (const field& entry : *entries) {
            auto text = read_.string(entry);
            if (!text) {
                continue;
            }
            std::string host = lower(*text);
            std::string_view name = host;
            if (name.starts_with("*.")) {
                name.remove_prefix(2);
            }
            bool bracketed_v6 = name.size() > 2 && name.front() == '[' && name.back() == ']' &&
                                is_ipv6(name.substr(1, name.size() - 2));
            if (!bracketed_v6 && !is_dns_name_or_ipv4(name)) {
                diag_.error(entry.key_at, "bad host pattern '" + *text +
                                              "' (a DNS name, optionally with a leading '*.', "
                                              "and no port)");
                continue;
            }
            s.hosts.push_back(std::move(host));
        }
    }

    void read_pools(const field& f, service& s) {
        map_reader pools(diag_, f.value, "'pools'", f.key_at);
        if (!pools.valid()) {
            return;
        }
        if (pools.fields().empty()) {
            diag_.error(f.key_at, "'pools' must define at least one pool");
            return;
        }
        bool weights_ok = true;
        for (const field& entry : pools.fields()) {
            pool p;
            p.name = entry.key;
            p.at = entry.key_at;
            p.weight_at = entry.key_at;
            if (!is_name(p.name)) {
                diag_.error(entry.key_at,
                            "pool name '" + p.name +
                                "' may only contain letters, digits, '-', '_' and '.'");
            } else if (p.name == "always" || p.name == "never") {
                diag_.error(entry.key_at,
                            "pool name '" + p.name + "' is reserved (an override_header value)");
            }
            map_reader m(diag_, entry.value, "pool '" + p.name + "'", entry.key_at,
                         {"endpoints", "weight"});
            if (const field* w = m.get("weight")) {
                p.weight_at = w->value_at();
                if (auto weight = read_.integer(*w, 0, max_weight)) {
                    p.weight = *weight;
                } else {
                    weights_ok = false;
                }
            }
            if (const field* e = m.get("endpoints")) {
                read_endpoints(*e, p);
            } else if (m.valid()) {
                diag_.error(entry.key_at, "pool '" + p.name + "' has no endpoints");
            }
            if (!m.valid()) {
                weights_ok = false;
            }
            s.pools.push_back(std::move(p));
        }
        bool any_weight =
            std::any_of(s.pools.begin(), s.pools.end(), [](const pool& p) { return p.weight > 0; });
        if (weights_ok && !any_weight) {
            diag_.error(f.key_at,
                        "all pool weights are zero: at least one pool needs a weight "
                        "above 0 (a pool without 'weight' has 0)");
        }
    }

    void read_endpoints(const field& f, pool& p) {
        auto entries = read_.list(f);
        if (!entries) {
            return;
        }
        if (entries->empty()) {
            diag_.error(f.value_at(), "pool '" + p.name + "' has no endpoints");
            return;
        }
        for (const field& entry : *entries) {
            auto text = read_.string(entry);
            if (!text) {
                continue;
            }
            auto hp = parse_host_port(*text);
            if (!hp) {
                diag_.error(entry.key_at, "endpoint '" + *text +
                                              "' is not host:port (a DNS name, IPv4 or [IPv6] "
                                              "host and a port 1-65535)");
                continue;
            }
            auto same = [&](const endpoint& e) { return e.address == *text; };
            if (std::any_of(p.endpoints.begin(), p.endpoints.end(), same)) {
                diag_.error(entry.key_at,
                            "duplicate endpoint '" + *text + "' in pool '" + p.name + "'");
                continue;
            }
            p.endpoints.push_back({*text, hp->host, hp->port, entry.key_at});
        }
    }

    affinity read_affinity(const field& f) {
        map_reader m(diag_, f.value, "'affinity'", f.key_at, {"key", "cookie"});
        affinity a;
        if (const field* k = m.get("key")) {
            if (auto text = read_.string(*k)) {
                std::string_view key = *text;
                bool ok = true;
                if (key == "client_ip") {
                    a.kind = affinity::key_kind::client_ip;
                } else if (key.starts_with("cookie:")) {
                    a.kind = affinity::key_kind::cookie;
                    a.key_name = key.substr(7);
                    ok = is_token(a.key_name);
                } else if (key.starts_with("header:")) {
                    a.kind = affinity::key_kind::header;
                    a.key_name = key.substr(7);
                    ok = is_token(a.key_name);
                } else {
                    ok = false;
                }
                if (!ok) {
                    a.kind = affinity::key_kind::none;
                    a.key_name.clear();
                    diag_.error(k->value_at(),
                                "'key' must be cookie:NAME, header:NAME or "
                                "client_ip (got '" +
                                    *text + "')");
                }
            }
        }
        if (const field* c = m.get("cookie")) {
            if (auto text = read_.string(*c)) {
                if (is_token(*text)) {
                    a.cookie = *text;
                } else {
                    diag_.error(c->value_at(),
                                "'cookie' must be a cookie name (got '" + *text + "')");
                }
            }
        }
        return a;
    }

    health_check read_health_check(const field& f) {
        map_reader m(diag_, f.value, "'health_check'", f.key_at,
                     {"path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold",
                      "expected_status"});
        health_check h;
        read_path(m, "path", h.path);
        m.set_duration("interval", h.interval, false);
        m.set_duration("timeout", h.timeout, false);
        m.set_integer("healthy_threshold", h.healthy_threshold, 1);
        m.set_integer("unhealthy_threshold", h.unhealthy_threshold, 1);
        m.set_statuses("expected_status", h.expected_status);
        return h;
    }

    // A request path (health check, smoke test): what goes on the request line.
    bool valid_path(const field& f, const std::string& path) {
        if (path.empty() || path.front() != '/' ||
            path.find_first_of(" \t\r\n#") != std::string::npos) {
            diag_.error(f.value_at(),
                        f.subject() + " must be a path starting with '/' (got '" + path + "')");
            return false;
        }
        return true;
    }

    void read_path(const map_reader& m, std::string_view key, std::string& out) {
        if (const field* p = m.get(key)) {
            if (auto text = read_.string(*p)) {
                if (valid_path(*p, *text)) {
                    out = *text;
                }
            }
        }
    }

    void read_outlier(const field& f, outlier_detection& o) {
        map_reader m(diag_, f.value, "'outlier_detection'", f.key_at,
                     {"consecutive_failures", "base_ejection", "max_ejection_percent"});
        m.set_integer("consecutive_failures", o.consecutive_failures, 1);
        m.set_duration("base_ejection", o.base_ejection, false);
        m.set_integer("max_ejection_percent", o.max_ejection_percent, 0, 100);
    }

    void read_guard(const field& f, guard& g) {
        map_reader m(diag_, f.value, "'guard'", f.key_at,
                     {"enabled", "window", "evaluate_every", "min_requests", "max_error_rate",
                      "max_error_rate_increase", "max_p95", "max_p95_increase", "confidence",
                      "post_switch_watch"});
        m.set_bool("enabled", g.enabled);
        m.set_duration("window", g.window, false);
        m.set_duration("evaluate_every", g.evaluate_every, false);
        m.set_integer("min_requests", g.min_requests);
        m.set_fraction("max_error_rate", g.max_error_rate);
        m.set_fraction("max_error_rate_increase", g.max_error_rate_increase);
        m.set_duration("max_p95", g.max_p95, true);
        m.set_duration("max_p95_increase", g.max_p95_increase, true);
        m.set_fraction("confidence", g.confidence, true);
        m.set_duration("post_switch_watch", g.post_switch_watch, true);
    }

    void read_rollout(const field& f, rollout& r) {
        map_reader m(diag_, f.value, "'rollout'", f.key_at,
                     {"steps", "step_interval", "auto_promote"});
        if (const field* s = m.get("steps")) {
            read_steps(*s, r);
        }
        m.set_duration("step_interval", r.step_interval, false);
        m.set_bool("auto_promote", r.auto_promote);
    }

    void read_steps(const field& f, rollout& r) {
        auto entries = read_.list(f);
        if (!entries) {
            return;
        }
        if (entries->empty()) {
            diag_.error(f.value_at(), "'steps' must list at least one percentage");
            return;
        }
        std::vector<std::uint32_t> steps;
        bool ok = true;
        for (const field& entry : *entries) {
            auto step = read_.integer(entry, 1, 100);
            if (!step) {
                ok = false;
                continue;
            }
            if (!steps.empty() && *step <= steps.back()) {
                diag_.error(entry.key_at, "rollout steps must be strictly ascending (" +
                                              std::to_string(*step) + " after " +
                                              std::to_string(steps.back()) + ")");
                ok = false;
                continue;
            }
            steps.push_back(*step);
        }
        if (ok) {
            r.steps = std::move(steps);
        }
    }

    void read_smoke(const field& f, smoke& s) {
        map_reader m(diag_, f.value, "'smoke'", f.key_at, {"paths", "expect_status"});
        if (const field* p = m.get("paths")) {
            if (auto entries = read_.list(*p)) {
                std::vector<std::string> paths;
                for (const field& entry : *entries) {
                    if (auto text = read_.string(entry)) {
                        if (valid_path(entry, *text)) {
                            paths.push_back(*text);
                        }
                    }
                }
                s.paths = std::move(paths);
            }
        }
        m.set_statuses("expect_status", s.expect_status);
    }

    // Two listeners (or a listener and admin) on one address would fail at
    // bind time with a vaguer message; port 0 means "any free port" and so
    // never collides.
    void check_addresses() {
        auto key = [](const std::string& host, std::uint16_t port) {
            return lower(host) + "|" + std::to_string(port);
        };
        // Only listeners from the file have marks; the default one cannot clash.
        for (std::size_t i = 0; i < listener_marks_.size(); ++i) {
            const listener& l = cfg_.listeners[i];
            const listener_marks& lm = listener_marks_[i];
            for (std::size_t j = 0; j < i; ++j) {
                const listener& e = cfg_.listeners[j];
                const listener_marks& em = listener_marks_[j];
                if (l.name == e.name) {
                    diag_.error(lm.name_at, "duplicate listener name '" + l.name + "' (first at " +
                                                format(em.name_at) + ")");
                }
                bool placed = lm.address_at.line > 0 && em.address_at.line > 0;
                if (placed && l.port != 0 && key(l.host, l.port) == key(e.host, e.port)) {
                    diag_.error(lm.address_at, "duplicate listener address '" + l.address +
                                                   "' (first at " + format(em.address_at) + ")");
                }
            }
            const admin& a = cfg_.admin_listener;
            if (admin_address_at_.line > 0 && lm.address_at.line > 0 && a.port != 0 &&
                key(a.host, a.port) == key(l.host, l.port)) {
                diag_.error(admin_address_at_, "admin address '" + a.address +
                                                   "' is also the address of listener '" + l.name +
                                                   "'");
            }
        }
    }

    // Far above any sensible weight, low enough that a sum over every pool of
    // a service cannot overflow 32 bits.
    static constexpr std::uint32_t max_weight = 1'000'000;

    diagnostics diag_;
    value_reader read_;
    config cfg_;
    // Where each listener of the file names itself and its address; the
    // address mark has line 0 when it is absent or bad.
    struct listener_marks {
        mark name_at;
        mark address_at;
    };
    std::vector<listener_marks> listener_marks_;
    mark admin_address_at_;  // line 0 when not in the file or bad
};

}  // namespace

const pool* service::find_pool(std::string_view wanted) const {
    auto it =
        std::find_if(pools.begin(), pools.end(), [&](const pool& p) { return p.name == wanted; });
    return it == pools.end() ? nullptr : &*it;
}

const service* config::find_service(std::string_view wanted) const {
    auto it = std::find_if(services.begin(), services.end(),
                           [&](const service& s) { return s.name == wanted; });
    return it == services.end() ? nullptr : &*it;
}

load_result load_string(std::string_view yaml, const std::string& file_name) {
    return loader(file_name).run(yaml);
}

load_result load_file(const std::string& path) {
    // POSIX reads, so that the message carries the real reason (EACCES,
    // ENOENT, EISDIR) rather than a stream's failbit.
    auto fail = [&](int err) {
        load_result result;
        result.errors.push_back(path + ": cannot read: " + std::generic_category().message(err));
        return result;
    };
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return fail(errno);
    }
    std::string content;
    char buffer[16 * 1024];
    while (true) {
        ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            int err = errno;
            ::close(fd);
            return fail(err);
        }
        if (n == 0) {
            break;
        }
        content.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return load_string(content, path);
}

std::optional<duration> parse_duration(std::string_view text) {
    std::size_t digits = 0;
    while (digits < text.size() && is_digit(text[digits])) {
        ++digits;
    }
    // 15 digits of hours still fit in int64 milliseconds; more is a typo.
    if (digits == 0 || digits > 15) {
        return std::nullopt;
    }
    auto number = parse_digits(text.substr(0, digits));
    std::string_view unit = text.substr(digits);
    std::uint64_t factor = 0;
    if (unit == "ms") {
        factor = 1;
    } else if (unit == "s") {
        factor = 1000;
    } else if (unit == "m") {
        factor = 60 * 1000;
    } else if (unit == "h") {
        factor = 60 * 60 * 1000;
    }
    if (!number || factor == 0) {
        return std::nullopt;
    }
    return duration(static_cast<duration::rep>(*number * factor));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
    std::size_t digits = 0;
    while (digits < text.size() && is_digit(text[digits])) {
        ++digits;
    }
    auto number = parse_digits(text.substr(0, digits));
    std::string_view unit = text.substr(digits);
    std::uint64_t factor = 0;
    if (unit.empty()) {
        factor = 1;
    } else if (unit == "KiB") {
        factor = std::uint64_t{1} << 10;
    } else if (unit == "MiB") {
        factor = std::uint64_t{1} << 20;
    } else if (unit == "GiB") {
        factor = std::uint64_t{1} << 30;
    }
    if (!number || factor == 0 || *number > std::numeric_limits<std::uint64_t>::max() / factor) {
        return std::nullopt;
    }
    return *number * factor;
}

std::optional<status_range> parse_status_range(std::string_view text) {
    std::size_t dash = text.find('-');
    std::string_view low_text = text.substr(0, dash);
    std::string_view high_text = dash == std::string_view::npos ? low_text : text.substr(dash + 1);
    auto low = low_text.size() == 3 ? parse_digits(low_text) : std::nullopt;
    auto high = high_text.size() == 3 ? parse_digits(high_text) : std::nullopt;
    if (!low || !high || *low < 100 || *high > 599 || *low > *high) {
        return std::nullopt;
    }
    return status_range{static_cast<unsigned>(*low), static_cast<unsigned>(*high)};
}

std::optional<host_port> parse_host_port(std::string_view text) {
    return split_host_port(text, false);
}

std::optional<host_port> parse_bind_address(std::string_view text) {
    return split_host_port(text, true);
}

}  // namespace switchyard::config
