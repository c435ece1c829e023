#pragma once
// The access log (SPEC §1): one JSON object per request, written off the
// request path. Each worker appends lines to its own access_log_buffer (no
// lock, no allocation in steady state) and hands whole batches to the one
// access_log_sink of the process, which takes its mutex once per batch.
//
// access_log_sink
//   Owns the log's file descriptor (or borrows fd 2 for "stderr").
//   Threads: write() from any worker, reopen() from any thread.
//   Failure: opening at startup throws std::runtime_error naming the path; a
//   failed reopen keeps the old descriptor and returns false; a failed write
//   drops that batch (the request path never waits on a broken log).
//
// access_log_buffer
//   One per worker; worker thread only (flush() also from the thread that
//   joined the worker). A null sink disables it: enabled() is then false and
//   the session skips everything.

#include <chrono>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace switchyard::proxy {

class access_log_sink {
public:
    // `target` is "stderr" or a file path (opened O_APPEND|O_CREAT, 0640).
    explicit access_log_sink(std::string target);
    ~access_log_sink();
    access_log_sink(const access_log_sink&) = delete;
    access_log_sink& operator=(const access_log_sink&) = delete;

    // Appends `batch` (whole lines) to the log.
    void write(std::string_view batch);
    // Opens the path anew and swaps it in (logrotate: rename, then SIGUSR1).
    // True for stderr. On failure `error` says why and the old file stays.
    bool reopen(std::string& error);
    const std::string& target() const { return target_; }

private:
    std::string target_;
    std::mutex mutex_;
    int fd_ = -1;
    bool owned_ = false;
};

// The `access_log:` setting: null for "off", else the sink. Throws
// std::runtime_error when the file cannot be opened.
std::unique_ptr<access_log_sink> make_access_log(const std::string& setting);

// One request as it is logged. Empty string_views with their `has_` flag
// false are written as null.
struct access_entry {
    std::string_view method;
    std::string_view path;
    bool has_request = false;  // method and path known (the header was parsed)
    unsigned status = 0;
    std::string_view service;  // empty: null
    std::string_view pool;     // empty: null
    std::string_view endpoint; // empty: null
    std::int64_t upstream_us = -1;  // < 0: null
    std::int64_t total_us = 0;
    std::uint64_t bytes_sent = 0;      // response body bytes sent to the client
    std::uint64_t bytes_received = 0;  // request body bytes read from the client
    std::string_view request_id;       // empty: null
};

class access_log_buffer {
public:
    static constexpr std::size_t capacity = 64 * 1024;
    static constexpr std::size_t flush_threshold = 32 * 1024;

    explicit access_log_buffer(access_log_sink* sink);

    bool enabled() const { return sink_ != nullptr; }
    // Formats one line; flushes when the buffer is over flush_threshold.
    void append(const access_entry& e);
    // Hands what is buffered to the sink.
    void flush();
    bool empty() const { return buffer_.empty(); }

private:
    void append_time();

    access_log_sink* sink_;
    std::string buffer_;
    std::time_t cached_second_ = -1;
    char cached_text_[24] = {};  // "2026-11-26T13:26:10"
    std::size_t cached_len_ = 0;
};

}  // namespace switchyard::proxy
