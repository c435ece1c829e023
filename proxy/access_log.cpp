#include "proxy/access_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace switchyard::proxy {

namespace {

int open_log(const std::string& path) {
    return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

void append_uint(std::string& out, std::uint64_t v) {
    char digits[24];
    const auto r = std::to_chars(digits, digits + sizeof digits, v);
    out.append(digits, r.ptr);
}

// Microseconds as milliseconds with three decimals ("1.234").
void append_ms(std::string& out, std::int64_t us) {
    append_uint(out, static_cast<std::uint64_t>(us / 1000));
    const auto frac = static_cast<unsigned>(us % 1000);
    const char tail[4] = {'.', static_cast<char>('0' + frac / 100),
                          static_cast<char>('0' + frac / 10 % 10), static_cast<char>('0' + frac % 10)};
    out.append(tail, sizeof tail);
}

// A JSON string: quotes, backslashes and control characters escaped; other
// bytes (UTF-8 or not) copied as they are.
void append_string(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out.push_back('"');
    std::size_t plain = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) {
            continue;
        }
        out.append(s.data() + plain, i - plain);
        plain = i + 1;
        switch (c) {
            case '"': out.append("\\\""); break;
            case '\\': out.append("\\\\"); break;
            case '\n': out.append("\\n"); break;
            case '\r': out.append("\\r"); break;
            case '\t': out.append("\\t"); break;
            default: {
                const char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
                out.append(esc, sizeof esc);
            }
        }
    }
    out.append(s.data() + plain, s.size() - plain);
    out.push_back('"');
}

void append_string_or_null(std::string& out, std::string_view s, bool present) {
    if (present) {
        append_string(out, s);
    } else {
        out.append("null");
    }
}

}  // namespace

access_log_sink::access_log_sink(std::string target) : target_(std::move(target)) {
    if (target_ == "stderr") {
        fd_ = STDERR_FILENO;
        return;
    }
    fd_ = open_log(target_);
    if (fd_ < 0) {
        throw std::runtime_error("access_log: cannot open " + target_ + ": " +
                                 std::strerror(errno));
    }
    owned_ = true;
}

access_log_sink::~access_log_sink() {
    if (owned_ && fd_ >= 0) {
        ::close(fd_);
    }
}

void access_log_sink::write(std::string_view batch) {
    std::lock_guard lock(mutex_);
    while (!batch.empty()) {
        const ssize_t n = ::write(fd_, batch.data(), batch.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;  // disk full, file gone: this batch is lost, requests go on
        }
        batch.remove_prefix(static_cast<std::size_t>(n));
    }
}

bool access_log_sink::reopen(std::string& error) {
    if (!owned_) {
        return true;
    }
    const int fd = open_log(target_);
    if (fd < 0) {
        error = "access_log: cannot reopen " + target_ + ": " + std::strerror(errno) +
                "; still writing to the previous file";
        return false;
    }
    int old = fd;
    {
        std::lock_guard lock(mutex_);
        std::swap(old, fd_);
    }
    ::close(old);
    return true;
}

std::unique_ptr<access_log_sink> make_access_log(const std::string& setting) {
    if (setting.empty() || setting == "off") {
        return nullptr;
    }
    return std::make_unique<access_log_sink>(setting);
}

access_log_buffer::access_log_buffer(access_log_sink* sink) : sink_(sink) {
    if (sink_ != nullptr) {
        buffer_.reserve(capacity);
    }
}

void access_log_buffer::append_time() {
    const auto now = std::chrono::system_clock::now();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch())
                        .count();
    const std::time_t second = static_cast<std::time_t>(ms / 1000);
    if (second != cached_second_) {
        std::tm tm{};
        ::gmtime_r(&second, &tm);
        cached_len_ = std::strftime(cached_text_, sizeof cached_text_, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_second_ = second;
    }
    const auto frac = static_cast<unsigned>(ms % 1000);
    buffer_.push_back('"');
    buffer_.append(cached_text_, cached_len_);
    const char tail[6] = {'.', static_cast<char>('0' + frac / 100),
                          static_cast<char>('0' + frac / 10 % 10),
                          static_cast<char>('0' + frac % 10), 'Z', '"'};
    buffer_.append(tail, sizeof tail);
}

void access_log_buffer::append(const access_entry& e) {
    if (sink_ == nullptr) {
        return;
    }
    std::string& out = buffer_;
    out.append("{\"time\":");
    append_time();
    out.append(",\"method\":");
    append_string_or_null(out, e.method, e.has_request);
    out.append(",\"path\":");
    append_string_or_null(out, e.path, e.has_request);
    out.append(",\"status\":");
    append_uint(out, e.status);
    out.append(",\"service\":");
    append_string_or_null(out, e.service, !e.service.empty());
    out.append(",\"pool\":");
    append_string_or_null(out, e.pool, !e.pool.empty());
    out.append(",\"endpoint\":");
    append_string_or_null(out, e.endpoint, !e.endpoint.empty());
    out.append(",\"upstream_ms\":");
    if (e.upstream_us >= 0) {
        append_ms(out, e.upstream_us);
    } else {
        out.append("null");
    }
    out.append(",\"total_ms\":");
    append_ms(out, e.total_us < 0 ? 0 : e.total_us);
    out.append(",\"bytes_sent\":");
    append_uint(out, e.bytes_sent);
    out.append(",\"bytes_received\":");
    append_uint(out, e.bytes_received);
    out.append(",\"request_id\":");
    append_string_or_null(out, e.request_id, !e.request_id.empty());
    out.append("}\n");
    if (out.size() >= flush_threshold) {
        flush();
    }
}

void access_log_buffer::flush() {
    if (sink_ == nullptr || buffer_.empty()) {
        return;
    }
    sink_->write(buffer_);
    buffer_.clear();  // keeps the capacity
}

}  // namespace switchyard::proxy
