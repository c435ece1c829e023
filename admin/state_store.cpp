// State stores: the JSON document, the in-memory store and the atomic file
// store.

#include "admin/state_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

namespace switchyard::admin {

namespace json = boost::json;

namespace {

constexpr std::int64_t document_version = 1;

std::string errno_text(int code) {
    return std::strerror(code);
}

// --- reading helpers: each returns false and sets *error naming the key ---

bool fail(std::string* error, std::string message) {
    if (error != nullptr) {
        *error = std::move(message);
    }
    return false;
}

bool read_unsigned(const json::object& obj, std::string_view key, std::uint64_t max,
                   std::uint64_t& out, std::string_view where, std::string* error) {
    const json::value* v = obj.if_contains(key);
    if (v == nullptr) {
        return fail(error, std::string(where) + " has no \"" + std::string(key) + "\"");
    }
    std::uint64_t n = 0;
    if (v->is_uint64()) {
        n = v->get_uint64();
    } else if (v->is_int64() && v->get_int64() >= 0) {
        n = static_cast<std::uint64_t>(v->get_int64());
    } else {
        return fail(error, std::string(where) + " \"" + std::string(key) +
                               "\" is not a non-negative integer");
    }
    if (n > max) {
        return fail(error, std::string(where) + " \"" + std::string(key) + "\" is too large");
    }
    out = n;
    return true;
}

// A string, or null standing for "none" (stored as an empty string) when
// `nullable`.
bool read_string(const json::object& obj, std::string_view key, bool nullable, std::string& out,
                 std::string_view where, std::string* error) {
    const json::value* v = obj.if_contains(key);
    if (v == nullptr) {
        return fail(error, std::string(where) + " has no \"" + std::string(key) + "\"");
    }
    if (nullable && v->is_null()) {
        out.clear();
        return true;
    }
    if (!v->is_string()) {
        return fail(error, std::string(where) + " \"" + std::string(key) + "\" is not a string");
    }
    out = std::string(v->get_string());
    return true;
}

const json::object* read_object(const json::object& obj, std::string_view key,
                                std::string_view where, std::string* error) {
    const json::value* v = obj.if_contains(key);
    if (v == nullptr || !v->is_object()) {
        fail(error, std::string(where) + " has no \"" + std::string(key) + "\" object");
        return nullptr;
    }
    return &v->get_object();
}

bool read_rollout(const json::object& obj, persisted_rollout& out, const std::string& where,
                  std::string* error) {
    std::string state;
    if (!read_string(obj, "state", false, state, where, error)) {
        return false;
    }
    const auto parsed = parse_rollout_state(state);
    if (!parsed) {
        return fail(error, where + " has an unknown state \"" + state + "\"");
    }
    out.state = *parsed;
    if (!read_string(obj, "pool", true, out.pool, where, error) ||
        !read_string(obj, "reason", true, out.reason, where, error)) {
        return false;
    }
    const json::value* step = obj.if_contains("step");
    if (step == nullptr) {
        return fail(error, where + " has no \"step\"");
    }
    if (step->is_null()) {
        out.step.reset();
    } else {
        std::uint64_t n = 0;
        if (!read_unsigned(obj, "step", std::numeric_limits<int>::max(), n, where, error)) {
            return false;
        }
        out.step = static_cast<int>(n);
    }
    return true;
}

bool read_service(const json::object& obj, persisted_service& out, const std::string& where,
                  std::string* error) {
    if (!read_string(obj, "stable", false, out.stable, where, error) ||
        !read_string(obj, "config_stable", false, out.config_stable, where, error) ||
        !read_string(obj, "previous", true, out.previous, where, error) ||
        !read_unsigned(obj, "generation", std::numeric_limits<std::uint64_t>::max(), out.generation,
                       where, error)) {
        return false;
    }
    const json::object* pools = read_object(obj, "pools", where, error);
    if (pools == nullptr) {
        return false;
    }
    for (const auto& [name, value] : *pools) {
        const std::string pool_where = where + " pool \"" + std::string(name) + "\"";
        if (!value.is_object()) {
            return fail(error, pool_where + " is not an object");
        }
        std::uint64_t weight = 0;
        std::uint64_t config_weight = 0;
        const auto max = std::numeric_limits<std::uint32_t>::max();
        if (!read_unsigned(value.get_object(), "weight", max, weight, pool_where, error) ||
            !read_unsigned(value.get_object(), "config_weight", max, config_weight, pool_where,
                           error)) {
            return false;
        }
        out.pools[std::string(name)] = persisted_pool{static_cast<std::uint32_t>(weight),
                                                      static_cast<std::uint32_t>(config_weight)};
    }
    const json::object* rollout = read_object(obj, "rollout", where, error);
    return rollout != nullptr && read_rollout(*rollout, out.rollout, where + " rollout", error);
}

json::value nullable(const std::string& text) {
    if (text.empty()) {
        return nullptr;
    }
    return json::value(text);
}

// A name beside `path` that no file has yet, so that setting a corrupt file
// aside never replaces an earlier one set aside in the same second.
std::string corrupt_name(const std::string& path) {
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
    const std::string base = path + ".corrupt-" + std::to_string(seconds);
    std::string candidate = base;
    for (int n = 1; ::access(candidate.c_str(), F_OK) == 0; ++n) {
        candidate = base + "." + std::to_string(n);
    }
    return candidate;
}

bool write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

}  // namespace

std::string_view to_string(rollout_state state) {
    switch (state) {
        case rollout_state::idle:
            return "idle";
        case rollout_state::progressing:
            return "progressing";
        case rollout_state::paused:
            return "paused";
        case rollout_state::promoted:
            return "promoted";
        case rollout_state::reverted:
            return "reverted";
    }
    return "idle";
}

std::optional<rollout_state> parse_rollout_state(std::string_view text) {
    for (const auto state : {rollout_state::idle, rollout_state::progressing, rollout_state::paused,
                             rollout_state::promoted, rollout_state::reverted}) {
        if (to_string(state) == text) {
            return state;
        }
    }
    return std::nullopt;
}

std::string to_json(const persisted_state& state) {
    json::object services;
    for (const auto& [name, svc] : state.services) {
        json::object pools;
        for (const auto& [pool_name, pool] : svc.pools) {
            pools[pool_name] =
                json::object{{"weight", pool.weight}, {"config_weight", pool.config_weight}};
        }
        json::object rollout{{"state", to_string(svc.rollout.state)},
                             {"pool", nullable(svc.rollout.pool)},
                             {"step", nullptr},
                             {"reason", nullable(svc.rollout.reason)}};
        if (svc.rollout.step) {
            rollout["step"] = *svc.rollout.step;
        }
        services[name] = json::object{{"stable", svc.stable},
                                      {"config_stable", svc.config_stable},
                                      {"previous", nullable(svc.previous)},
                                      {"generation", svc.generation},
                                      {"pools", std::move(pools)},
                                      {"rollout", std::move(rollout)}};
    }
    json::object doc{{"version", document_version},
                     {"last_event_id", state.last_event_id},
                     {"services", std::move(services)}};
    return json::serialize(doc) + "\n";
}

std::optional<persisted_state> parse_state(std::string_view text, std::string* error) {
    json::error_code ec;
    const json::value doc = json::parse(text, ec);
    if (ec) {
        fail(error, "it is not valid JSON (" + ec.message() + ")");
        return std::nullopt;
    }
    if (!doc.is_object()) {
        fail(error, "it is not a JSON object");
        return std::nullopt;
    }
    const json::object& root = doc.get_object();
    std::uint64_t version = 0;
    if (!read_unsigned(root, "version", std::numeric_limits<std::uint64_t>::max(), version,
                       "the document", error)) {
        return std::nullopt;
    }
    if (version != document_version) {
        fail(error, "it has version " + std::to_string(version) + ", this build reads version " +
                        std::to_string(document_version));
        return std::nullopt;
    }
    persisted_state state;
    if (!read_unsigned(root, "last_event_id", std::numeric_limits<std::uint64_t>::max(),
                       state.last_event_id, "the document", error)) {
        return std::nullopt;
    }
    const json::object* services = read_object(root, "services", "the document", error);
    if (services == nullptr) {
        return std::nullopt;
    }
    for (const auto& [name, value] : *services) {
        const std::string where = "service \"" + std::string(name) + "\"";
        if (!value.is_object()) {
            fail(error, where + " is not an object");
            return std::nullopt;
        }
        persisted_service svc;
        if (!read_service(value.get_object(), svc, where, error)) {
            return std::nullopt;
        }
        state.services.emplace(std::string(name), std::move(svc));
    }
    return state;
}

state_store::~state_store() = default;

// ---------------------------------------------------------------------------
// memory_state_store

load_result memory_state_store::load() {
    load_result out;
    if (stored) {
        out.result = load_result::status::ok;
        out.state = stored;
    }
    return out;
}

bool memory_state_store::save(const persisted_state& state, std::string& error) {
    if (fail_saves) {
        error = "the state store refused the write (simulated failure)";
        return false;
    }
    stored = state;
    ++saves;
    return true;
}

// ---------------------------------------------------------------------------
// file_state_store

file_state_store::file_state_store(std::string path) : path_(std::move(path)) {}

load_result file_state_store::load() {
    load_result out;
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return out;  // first start: nothing saved yet
        }
        out.result = load_result::status::failed;
        out.error = "cannot read state file " + path_ + ": " + errno_text(errno);
        return out;
    }
    std::string text;
    char buffer[16384];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const int code = errno;
            ::close(fd);
            out.result = load_result::status::failed;
            out.error = "cannot read state file " + path_ + ": " + errno_text(code);
            return out;
        }
        if (n == 0) {
            break;
        }
        text.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);

    std::string why;
    if (auto state = parse_state(text, &why)) {
        out.result = load_result::status::ok;
        out.state = std::move(state);
        return out;
    }
    // Never overwrite what we cannot read: an operator may want it back, and
    // the next save() would otherwise destroy the evidence.
    const std::string aside = corrupt_name(path_);
    if (::rename(path_.c_str(), aside.c_str()) != 0) {
        out.result = load_result::status::failed;
        out.error = "state file " + path_ + " is corrupt (" + why +
                    ") and could not be set aside: " + errno_text(errno);
        return out;
    }
    out.result = load_result::status::corrupt;
    out.error = "state file " + path_ + " is corrupt (" + why + "); it was renamed to " + aside +
                " and the state starts from the config";
    return out;
}

bool file_state_store::save(const persisted_state& state, std::string& error) {
    namespace fs = std::filesystem;
    const fs::path target(path_);
    // The temporary file must be in the same directory: rename() is atomic
    // only within one file system.
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    std::string temp = (dir / ("." + target.filename().string() + ".tmp-XXXXXX")).string();

    const int fd = ::mkstemp(temp.data());
    if (fd < 0) {
        error = "cannot write state file " + path_ + ": " + errno_text(errno);
        return false;
    }
    const auto give_up = [&](int code) {
        ::unlink(temp.c_str());
        error = "cannot write state file " + path_ + ": " + errno_text(code);
        return false;
    };
    if (!write_all(fd, to_json(state))) {
        const int code = errno;
        ::close(fd);
        return give_up(code);
    }
    // fsync before rename: otherwise a crash can leave the new name pointing
    // at a file whose data never reached the disk.
    if (::fsync(fd) != 0) {
        const int code = errno;
        ::close(fd);
        return give_up(code);
    }
    if (::close(fd) != 0) {
        return give_up(errno);
    }
    if (::rename(temp.c_str(), path_.c_str()) != 0) {
        return give_up(errno);
    }
    // The rename itself lives in the directory; until the directory is synced
    // a crash may bring the old file back.
    const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) {
        error = "cannot sync the directory of state file " + path_ + ": " + errno_text(errno);
        return false;
    }
    const int synced = ::fsync(dir_fd);
    const int code = errno;
    ::close(dir_fd);
    // Some file systems cannot sync a directory (EINVAL); the rename is then
    // as durable as they make it.
    if (synced != 0 && code != EINVAL) {
        error = "cannot sync the directory of state file " + path_ + ": " + errno_text(code);
        return false;
    }
    return true;
}

}  // namespace switchyard::admin
