#pragma once
// The persistence seam of the control plane (SPEC §6: "runtime decisions
// survive, deliberate edits win").
//
// `persisted_state` is the runtime state of every service that must outlive
// the process: weights, stable, previous, rollout, generation, plus the
// config values last seen (so that a restart or reload can tell a deliberate
// edit of the config file from a runtime decision) and the last event id (so
// that event ids keep increasing across restarts).
//
// `state_store` is the interface the control plane saves through. Today there
// is an in-memory store and a file store; a later replica-sharing store (etcd)
// implements the same two calls.
//
// Threads: a store is used by one thread at a time (the control thread); the
// calls block on I/O. Ownership: whoever constructs a store owns it; the
// control plane only borrows it.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace switchyard::admin {

// Lifecycle of a progressive rollout (SPEC §5, §6 SERVICE "rollout.state").
enum class rollout_state { idle, progressing, paused, promoted, reverted };

std::string_view to_string(rollout_state state);
std::optional<rollout_state> parse_rollout_state(std::string_view text);

struct persisted_pool {
    std::uint32_t weight = 0;
    std::uint32_t config_weight = 0;  // the config file's weight when last seen

    friend bool operator==(const persisted_pool&, const persisted_pool&) = default;
};

struct persisted_rollout {
    rollout_state state = rollout_state::idle;
    std::string pool;         // empty: none
    std::optional<int> step;  // index into rollout.steps; nullopt: none
    std::string reason;       // empty: none

    friend bool operator==(const persisted_rollout&, const persisted_rollout&) = default;
};

struct persisted_service {
    std::map<std::string, persisted_pool, std::less<>> pools;  // by pool name
    std::string stable;
    std::string config_stable;  // the config file's `stable` when last seen
    std::string previous;       // stable before the last switch/promote; empty: none
    std::uint64_t generation = 1;
    persisted_rollout rollout;

    friend bool operator==(const persisted_service&, const persisted_service&) = default;
};

struct persisted_state {
    std::map<std::string, persisted_service, std::less<>> services;  // by service name
    std::uint64_t last_event_id = 0;

    friend bool operator==(const persisted_state&, const persisted_state&) = default;
};

// The JSON form shared by every store (and readable by operators):
// {"version":1,"last_event_id":N,"services":{NAME:{"stable":..,"config_stable":..,
//  "previous":..|null,"generation":N,"pools":{POOL:{"weight":N,"config_weight":N}},
//  "rollout":{"state":..,"pool":..|null,"step":N|null,"reason":..|null}}}}
// Unknown keys are ignored (a newer writer may add some); a missing or
// mistyped known key, or another "version", makes the document corrupt.
std::string to_json(const persisted_state& state);
// nullopt and *error set (one sentence) when `text` is not such a document.
std::optional<persisted_state> parse_state(std::string_view text, std::string* error);

struct load_result {
    enum class status {
        ok,       // `state` holds what was stored
        empty,    // nothing stored yet
        corrupt,  // unreadable content, set aside (renamed); `error` says where to
        failed,   // could not be read (or set aside); `error` says why
    };
    status result = status::empty;
    std::optional<persisted_state> state;
    std::string error;  // one sentence for the log, for corrupt and failed
};

class state_store {
public:
    virtual ~state_store();

    // What was saved last. A corrupt store is set aside, never overwritten:
    // the next save() starts afresh beside it.
    virtual load_result load() = 0;

    // Replaces what is stored, all or nothing. false and `error` (one
    // sentence) when it could not; what was stored before is then intact.
    virtual bool save(const persisted_state& state, std::string& error) = 0;
};

// Keeps the state in memory (a process without `state_file`, and tests that
// simulate a restart by handing the same store to a new control plane).
class memory_state_store final : public state_store {
public:
    load_result load() override;
    bool save(const persisted_state& state, std::string& error) override;

    std::optional<persisted_state> stored;  // what save() wrote; settable by tests
    unsigned saves = 0;                     // successful saves
    bool fail_saves = false;                // tests: make save() fail
};

// Keeps the state in one JSON file (`state_file:`). save() is atomic and
// durable: it writes a temporary file in the same directory, fsyncs it,
// renames it over the file and fsyncs the directory, so a crash leaves the old
// or the new state, never a mix. A corrupt file is renamed to
// "FILE.corrupt-<unix seconds>" by load().
class file_state_store final : public state_store {
public:
    explicit file_state_store(std::string path);

    load_result load() override;
    bool save(const persisted_state& state, std::string& error) override;

    const std::string& path() const { return path_; }

private:
    std::string path_;
};

}  // namespace switchyard::admin
