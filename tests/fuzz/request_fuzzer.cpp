// libFuzzer target for the downstream request path (issue 5, item 6).
//
// Each input is written, cut at the points it chooses, to switchyard's real
// data plane running in this process (one worker, a loopback listener),
// which forwards to a recording upstream, also in this process. The oracle
// is SPEC §4: whatever the client sends, the upstream only ever receives
// well-framed, strict HTTP/1.1 requests, never more of them than the input
// could hold, and a request cut short only on a connection the proxy closed.
//
// Input layout: byte 0 modulo 4 = n, the number of cuts; the next n bytes
// place the cuts (byte * payload length / 256); the rest is the payload, the
// bytes the client sends. Pieces are sent with TCP_NODELAY and a 1 ms pause
// (a poll that also reads the responses), then the write side is shut down.
//
// The strict framer (no Beast, so that it does not share Beast's gaps):
// request line `METHOD SP origin-form SP HTTP/1.1` (asterisk-form only for
// OPTIONS), no TRACE or CONNECT; field names are tchars without '_' (the
// default `reject_underscore_headers: false` drops them); values have no CTL
// other than HTAB; no obs-fold; exactly one Host; at most one Content-Length,
// all digits; at most one Transfer-Encoding, exactly `chunked`, never with a
// Content-Length; chunk sizes in hex, no CR/LF/NUL in chunk extensions,
// CRLF after each chunk, and no trailer fields (the proxy drops them).
//
// A finding prints the input and the bytes each upstream connection got,
// escaped, with what was wrong, then aborts (libFuzzer saves the input).
// REQUEST_FUZZER_VERBOSE=1 prints the same for every input.
// Run: scripts/dev.sh fuzz [SECONDS]; see tests/fuzz/README.md.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "health/stats.hpp"
#include "proxy/server.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::fuzz {
namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "request_fuzzer: %s\n", what.c_str());
    std::abort();
}

// ---------------------------------------------------------------------------
// The strict request framer.

struct frame {
    enum class kind { complete, need_more, bad };
    kind what = kind::need_more;
    std::size_t length = 0;  // complete: bytes of the request
    bool head = false;       // complete: a HEAD request (its response has no body)
    std::string why;         // bad
};

frame bad(std::string why) {
    frame f;
    f.what = frame::kind::bad;
    f.why = std::move(why);
    return f;
}

bool is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        return true;
    }
    return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return (x | 0x20) == (y | 0x20);
           });
}

std::string_view trim_ows(std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
        v.remove_prefix(1);
    }
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
        v.remove_suffix(1);
    }
    return v;
}

enum class line_status { ok, need_more, bad };

// The line starting at `pos` ends with CRLF at `end` (index of the CR); a
// bare LF or a CR not followed by LF is bad.
line_status next_line(std::string_view in, std::size_t pos, std::size_t& end, std::string& why) {
    for (std::size_t i = pos; i < in.size(); ++i) {
        if (in[i] == '\n') {
            why = "bare LF";
            return line_status::bad;
        }
        if (in[i] == '\r') {
            if (i + 1 == in.size()) {
                return line_status::need_more;
            }
            if (in[i + 1] != '\n') {
                why = "bare CR";
                return line_status::bad;
            }
            end = i;
            return line_status::ok;
        }
    }
    return line_status::need_more;
}

std::string escaped(std::string_view s, std::size_t limit = 8192) {
    std::string out;
    for (const char c : s.substr(0, limit)) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '\r') {
            out += "\\r";
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\\') {
            out += "\\\\";
        } else if (u >= 0x20 && u < 0x7f) {
            out += c;
        } else {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", u);
            out += hex;
        }
    }
    if (s.size() > limit) {
        out += "...(" + std::to_string(s.size()) + " bytes)";
    }
    return out;
}

std::string quoted(std::string_view s) {
    return "'" + escaped(s, 200) + "'";
}

frame frame_chunked(std::string_view in, std::size_t pos, frame done) {
    std::string why;
    for (;;) {
        std::size_t end = 0;
        switch (next_line(in, pos, end, why)) {
            case line_status::bad:
                return bad("chunk-size line: " + why);
            case line_status::need_more:
                return {};
            case line_status::ok:
                break;
        }
        const std::string_view line = in.substr(pos, end - pos);
        std::size_t digits = 0;
        std::uint64_t size = 0;
        while (digits < line.size() && std::isxdigit(static_cast<unsigned char>(line[digits]))) {
            if (digits == 15) {
                return bad("chunk size over 15 hex digits: " + quoted(line));
            }
            const char c = static_cast<char>(line[digits] | 0x20);
            size = size * 16 + static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
            ++digits;
        }
        if (digits == 0) {
            return bad("chunk-size line without a size: " + quoted(line));
        }
        const std::string_view ext = line.substr(digits);
        if (!ext.empty()) {
            if (ext.front() != ';') {
                return bad("chunk-size line: junk after the size: " + quoted(line));
            }
            for (const char c : ext) {
                const auto u = static_cast<unsigned char>(c);
                if ((u < 0x20 && u != '\t') || u == 0x7f) {
                    return bad("chunk extension with a control byte: " + quoted(line));
                }
            }
        }
        pos = end + 2;
        if (size == 0) {
            // No trailer section: the last chunk is followed by the final CRLF.
            std::size_t tend = 0;
            switch (next_line(in, pos, tend, why)) {
                case line_status::bad:
                    return bad("after the last chunk: " + why);
                case line_status::need_more:
                    if (pos < in.size() && in[pos] != '\r') {
                        return bad("trailer field forwarded: " + quoted(in.substr(pos)));
                    }
                    return {};
                case line_status::ok:
                    break;
            }
            if (tend != pos) {
                return bad("trailer field forwarded: " + quoted(in.substr(pos, tend - pos)));
            }
            done.what = frame::kind::complete;
            done.length = pos + 2;
            return done;
        }
        if (in.size() - pos < size) {
            return {};
        }
        pos += size;
        const std::string_view crlf = in.substr(pos, 2);
        if (crlf != std::string_view("\r\n").substr(0, crlf.size())) {
            return bad("chunk data not followed by CRLF (overrun)");
        }
        if (crlf.size() < 2) {
            return {};
        }
        pos += 2;
    }
}

// Frames the request at the start of `in`.
frame frame_request(std::string_view in) {
    std::string why;
    std::size_t end = 0;
    switch (next_line(in, 0, end, why)) {
        case line_status::bad:
            return bad("request line: " + why);
        case line_status::need_more:
            return {};
        case line_status::ok:
            break;
    }
    const std::string_view request_line = in.substr(0, end);
    const auto sp1 = request_line.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : request_line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos ||
        request_line.find(' ', sp2 + 1) != std::string_view::npos) {
        return bad("request line is not METHOD SP target SP version: " + quoted(request_line));
    }
    const std::string_view method = request_line.substr(0, sp1);
    const std::string_view target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = request_line.substr(sp2 + 1);
    if (method.empty() || !std::all_of(method.begin(), method.end(), [](char c) {
            return is_tchar(static_cast<unsigned char>(c));
        })) {
        return bad("method is not a token: " + quoted(request_line));
    }
    if (method == "TRACE" || method == "CONNECT") {
        return bad("method forwarded: " + std::string(method));
    }
    const bool asterisk = target == "*" && method == "OPTIONS";
    if (!asterisk && (target.empty() || target.front() != '/')) {
        return bad("target not in origin-form: " + quoted(request_line));
    }
    // Bytes over 0x7f pass (nginx forwards them too): not a framing matter.
    for (const char c : target) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f || c == '#') {
            return bad("invalid byte in the target: " + quoted(request_line));
        }
    }
    if (version != "HTTP/1.1") {
        return bad("version is not HTTP/1.1: " + quoted(request_line));
    }

    int hosts = 0;
    int content_lengths = 0;
    int transfer_encodings = 0;
    std::uint64_t content_length = 0;
    std::string_view transfer_encoding;
    std::size_t pos = end + 2;
    for (;;) {
        switch (next_line(in, pos, end, why)) {
            case line_status::bad:
                return bad("header: " + why);
            case line_status::need_more:
                return {};
            case line_status::ok:
                break;
        }
        const std::string_view line = in.substr(pos, end - pos);
        pos = end + 2;
        if (line.empty()) {
            break;
        }
        if (line.front() == ' ' || line.front() == '\t') {
            return bad("obs-fold forwarded: " + quoted(line));
        }
        const auto colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0) {
            return bad("header line without a name: " + quoted(line));
        }
        const std::string_view name = line.substr(0, colon);
        for (const char c : name) {
            if (!is_tchar(static_cast<unsigned char>(c))) {
                return bad("field name is not a token: " + quoted(line));
            }
            if (c == '_') {
                return bad("underscore field name forwarded (default: dropped): " + quoted(line));
            }
        }
        const std::string_view value = trim_ows(line.substr(colon + 1));
        for (const char c : value) {
            const auto u = static_cast<unsigned char>(c);
            if ((u < 0x20 && u != '\t') || u == 0x7f) {
                return bad("control byte in a field value: " + quoted(line));
            }
        }
        if (iequals(name, "host")) {
            ++hosts;
        } else if (iequals(name, "content-length")) {
            ++content_lengths;
            if (value.empty() || value.size() > 15 ||
                !std::all_of(value.begin(), value.end(),
                             [](char c) { return c >= '0' && c <= '9'; })) {
                return bad("invalid Content-Length: " + quoted(line));
            }
            content_length = std::stoull(std::string(value));
        } else if (iequals(name, "transfer-encoding")) {
            ++transfer_encodings;
            transfer_encoding = value;
        }
    }
    if (hosts != 1) {
        return bad(std::to_string(hosts) + " Host fields");
    }
    if (content_lengths > 1) {
        return bad(std::to_string(content_lengths) + " Content-Length fields");
    }
    if (transfer_encodings > 1) {
        return bad(std::to_string(transfer_encodings) + " Transfer-Encoding fields");
    }
    if (content_lengths == 1 && transfer_encodings == 1) {
        return bad("both Content-Length and Transfer-Encoding");
    }
    frame done;
    done.head = method == "HEAD";
    if (transfer_encodings == 1) {
        if (!iequals(transfer_encoding, "chunked")) {
            return bad("Transfer-Encoding is not exactly chunked: " + quoted(transfer_encoding));
        }
        return frame_chunked(in, pos, done);
    }
    if (in.size() - pos < content_length) {
        return {};
    }
    done.what = frame::kind::complete;
    done.length = pos + content_length;
    return done;
}

// ---------------------------------------------------------------------------
// The recording upstream: a raw TCP server on its own thread that frames what
// it receives with frame_request, answers each complete request, and closes a
// connection at the first badly framed byte.

struct connection_record {
    int fd = -1;            // -1 once closed
    std::string received;   // this input's bytes
    std::string pending;    // bytes of the request not yet complete
    unsigned complete = 0;  // requests completed during this input
    std::string violation;
};

class recording_upstream {
  public:
    recording_upstream() {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
            ::listen(listen_fd_, 128) != 0 ||
            ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
            die("upstream: cannot listen on 127.0.0.1");
        }
        port_ = ntohs(addr.sin_port);
        thread_ = std::thread([this] { run(); });
    }

    std::uint16_t port() const { return port_; }

    // Starts a new input: closed connections are forgotten, the others
    // (pooled by the proxy, at a request boundary) start a fresh record.
    void begin_input() {
        std::lock_guard lock(mutex_);
        std::erase_if(conns_, [](const auto& c) { return c->fd < 0; });
        for (auto& c : conns_) {
            c->received.clear();
            c->complete = 0;
        }
    }

    // Waits, at most `bound`, until nothing is left to read (no connection
    // waiting to be accepted, no unread byte or FIN) and every open
    // connection is at a request boundary. Returns the records of this input
    // and whether it settled.
    std::vector<connection_record> settle(clock::duration bound, bool& settled) {
        const auto deadline = clock::now() + bound;
        std::unique_lock lock(mutex_);
        for (;;) {
            settled = quiet();
            if (settled || clock::now() >= deadline) {
                break;
            }
            cv_.wait_for(lock, 5ms);
        }
        std::vector<connection_record> out;
        for (const auto& c : conns_) {
            if (!c->received.empty() || c->complete > 0 || !c->violation.empty()) {
                out.push_back(*c);
            }
        }
        return out;
    }

  private:
    bool quiet() const {
        std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
        for (const auto& c : conns_) {
            if (c->fd >= 0) {
                if (!c->pending.empty()) {
                    return false;
                }
                fds.push_back({c->fd, POLLIN, 0});
            }
        }
        return ::poll(fds.data(), fds.size(), 0) == 0;
    }

    void run() {
        std::vector<pollfd> fds;
        std::vector<connection_record*> owners;
        char buf[65536];
        for (;;) {
            fds.assign(1, {listen_fd_, POLLIN, 0});
            owners.assign(1, nullptr);
            {
                std::lock_guard lock(mutex_);
                for (auto& c : conns_) {
                    if (c->fd >= 0) {
                        fds.push_back({c->fd, POLLIN, 0});
                        owners.push_back(c.get());
                    }
                }
            }
            if (::poll(fds.data(), fds.size(), 100) <= 0) {
                continue;
            }
            std::lock_guard lock(mutex_);
            if (fds[0].revents != 0) {
                for (;;) {
                    const int fd =
                        ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        break;
                    }
                    const int one = 1;
                    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    auto c = std::make_unique<connection_record>();
                    c->fd = fd;
                    conns_.push_back(std::move(c));
                }
            }
            for (std::size_t i = 1; i < fds.size(); ++i) {
                if (fds[i].revents != 0) {
                    read_from(*owners[i], buf, sizeof buf);
                }
            }
            cv_.notify_all();
        }
    }

    static void close_connection(connection_record& c) {
        ::close(c.fd);
        c.fd = -1;
    }

    static void read_from(connection_record& c, char* buf, std::size_t size) {
        for (;;) {
            const ssize_t n = ::recv(c.fd, buf, size, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                // Bytes left in `pending` were an aborted request: allowed.
                close_connection(c);
                return;
            }
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return;
            }
            c.received.append(buf, static_cast<std::size_t>(n));
            c.pending.append(buf, static_cast<std::size_t>(n));
            for (;;) {
                const frame f = frame_request(c.pending);
                if (f.what == frame::kind::need_more) {
                    break;
                }
                if (f.what == frame::kind::bad) {
                    c.violation = f.why;
                    close_connection(c);
                    return;
                }
                ++c.complete;
                c.pending.erase(0, f.length);
                static constexpr std::string_view ok =
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                const std::string_view reply = f.head ? ok.substr(0, ok.size() - 2) : ok;
                (void)::send(c.fd, reply.data(), reply.size(), MSG_NOSIGNAL);
            }
        }
    }

    int listen_fd_ = -1;
    std::uint16_t port_ = 0;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<std::unique_ptr<connection_record>> conns_;
    std::thread thread_;
};

// ---------------------------------------------------------------------------
// The proxy under test and the client.

struct fixture {
    recording_upstream upstream;
    config::config cfg;
    routing::registry ids;
    std::unique_ptr<health::stats_registry> stats;
    std::unique_ptr<proxy::server> server;
    std::uint16_t port = 0;
};

fixture* setup() {
    auto* f = new fixture;  // never destroyed: the worker thread runs until exit
    const std::string yaml =
        "listeners:\n"
        "  - name: fuzz\n"
        "    address: 127.0.0.1:0\n"
        "access_log: \"off\"\n"
        "limits:\n"
        "  header_timeout: 200ms\n"
        "  body_timeout: 200ms\n"
        "  idle_timeout: 200ms\n"
        "  send_timeout: 1s\n"
        "  max_request_body_bytes: 64KiB\n"
        "upstream_defaults:\n"
        "  connect_timeout: 500ms\n"
        "  response_timeout: 1s\n"
        "  read_timeout: 1s\n"
        "services:\n"
        "  - name: app\n"
        "    stable: main\n"
        "    pools:\n"
        "      main: { endpoints: [\"127.0.0.1:" +
        std::to_string(f->upstream.port()) + "\"], weight: 100 }\n";
    auto loaded = config::load_string(yaml, "<fuzz>");
    if (!loaded.ok()) {
        std::string all;
        for (const auto& e : loaded.errors) {
            all += "\n  " + e;
        }
        die("config:" + all);
    }
    f->cfg = std::move(*loaded.value);
    std::string error;
    auto snap = routing::snapshot::build(f->cfg, {}, f->ids, &error);
    if (!snap) {
        die("snapshot: " + error);
    }
    auto set = std::make_shared<proxy::settings>(proxy::settings{f->cfg.limit, f->cfg.upstream});
    f->stats = std::make_unique<health::stats_registry>(1);
    f->server = std::make_unique<proxy::server>(f->cfg, 1, *f->stats);
    f->server->initialise(std::move(snap), std::move(set));
    f->server->start();
    f->port = f->server->listener_port(0);
    return f;
}

// Reads and drops whatever the proxy sent, waiting at most `wait`; false
// once the proxy has closed (or reset) the connection.
bool drain(int fd, std::chrono::milliseconds wait) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) {
        return true;
    }
    char buf[16384];
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR));
}

// Sends `pieces` to the proxy, shuts the write side, reads until the proxy
// closes or goes quiet for 300 ms (2 s at most).
void run_client(std::uint16_t port, const std::vector<std::string_view>& pieces) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    // Tens of thousands of runs a minute use up the ephemeral ports (the
    // proxy's aborted upstream connections sit in TIME_WAIT): out of ports
    // (EADDRNOTAVAIL) is waited out, not reported as a finding. libFuzzer's
    // own watchdog signal can interrupt connect (EINTR): tried again.
    int fd = -1;
    const auto connect_deadline = clock::now() + 120s;
    for (;;) {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
            break;
        }
        const int err = errno;
        if (fd >= 0) {
            ::close(fd);
        }
        if ((err != EADDRNOTAVAIL && err != EINTR) || clock::now() > connect_deadline) {
            die(std::string("client: cannot connect to the proxy: ") + std::strerror(err));
        }
        ::poll(nullptr, 0, 100);
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const timeval send_limit{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_limit, sizeof send_limit);
    bool open = true;
    for (std::size_t i = 0; i < pieces.size() && open; ++i) {
        std::string_view rest = pieces[i];
        while (!rest.empty()) {
            const ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
            if (n <= 0) {
                open = false;  // the proxy closed early: a correct answer to bad input
                break;
            }
            rest.remove_prefix(static_cast<std::size_t>(n));
        }
        if (open && i + 1 < pieces.size()) {
            // Lets the proxy parse this piece alone before the next arrives.
            open = drain(fd, 1ms);
        }
    }
    ::shutdown(fd, SHUT_WR);
    const auto limit = clock::now() + 2s;
    while (open && clock::now() < limit) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 300) <= 0) {
            break;
        }
        open = drain(fd, 0ms);
    }
    // A reset rather than a FIN: no TIME_WAIT on the client's port.
    const linger reset{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    ::close(fd);
}

std::string describe(const std::string& what, std::string_view payload,
                     const std::vector<std::string_view>& pieces,
                     const std::vector<connection_record>& records) {
    std::string report = "\n=== request_fuzzer " + what + "\n--- client sent (" +
                         std::to_string(pieces.size()) + " pieces, sizes";
    for (const auto p : pieces) {
        report += " " + std::to_string(p.size());
    }
    report += "):\n" + escaped(payload) + "\n";
    for (std::size_t i = 0; i < records.size(); ++i) {
        const auto& r = records[i];
        report += "--- upstream connection " + std::to_string(i + 1) + " (" +
                  std::to_string(r.complete) + " complete, " + (r.fd < 0 ? "closed" : "open") +
                  (r.violation.empty() ? "" : ", " + r.violation) + "):\n" + escaped(r.received) +
                  "\n";
    }
    return report + "===\n";
}

[[noreturn]] void finding(const std::string& what, std::string_view payload,
                          const std::vector<std::string_view>& pieces,
                          const std::vector<connection_record>& records) {
    std::fputs(describe("finding: " + what, payload, pieces, records).c_str(), stderr);
    std::abort();
}

std::size_t count_heads(std::string_view payload) {
    std::size_t n = 0;
    for (auto at = payload.find("HTTP/1."); at != std::string_view::npos;
         at = payload.find("HTTP/1.", at + 1)) {
        ++n;
    }
    return n;
}

}  // namespace
}  // namespace switchyard::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    std::signal(SIGPIPE, SIG_IGN);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace switchyard::fuzz;
    static fixture* const f = setup();
    if (size == 0) {
        return 0;
    }
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const std::size_t cuts = std::min<std::size_t>(data[0] % 4, size - 1);
    const std::string_view payload = input.substr(1 + cuts);
    if (payload.empty()) {
        return 0;
    }
    std::vector<std::size_t> at{0, payload.size()};
    for (std::size_t i = 0; i < cuts; ++i) {
        at.push_back(data[1 + i] * payload.size() / 256);
    }
    std::sort(at.begin(), at.end());
    std::vector<std::string_view> pieces;
    for (std::size_t i = 0; i + 1 < at.size(); ++i) {
        if (at[i + 1] > at[i]) {
            pieces.push_back(payload.substr(at[i], at[i + 1] - at[i]));
        }
    }

    f->upstream.begin_input();
    run_client(f->port, pieces);
    // The proxy's session for this input must be over before the upstream's
    // record is judged: on a loaded machine a request the proxy was still
    // working on when the client gave up would otherwise land in the next
    // input's record (seen as a "smuggled request" that was not one). Every
    // timeout of the fixture is 1 s at most: a session alive 10 s after its
    // client left is itself a finding.
    const auto session_deadline = clock::now() + 10s;
    while (f->server->open_connections() != 0) {
        if (clock::now() > session_deadline) {
            finding("a proxy session outlived its client by 10 s", payload, pieces, {});
        }
        std::this_thread::sleep_for(1ms);
    }
    bool settled = false;
    const auto records = f->upstream.settle(2s, settled);

    // REQUEST_FUZZER_VERBOSE=1 shows what the upstream got for every input
    // (to check the harness on the seeds).
    static const bool verbose = std::getenv("REQUEST_FUZZER_VERBOSE") != nullptr;
    if (verbose) {
        std::fputs(describe("input", payload, pieces, records).c_str(), stderr);
    }
    std::size_t complete = 0;
    for (const auto& r : records) {
        if (!r.violation.empty()) {
            finding(r.violation, payload, pieces, records);
        }
        complete += r.complete;
    }
    if (!settled) {
        for (const auto& r : records) {
            if (r.fd >= 0 && !r.pending.empty()) {
                finding(
                    "a request left incomplete on an open upstream connection 2 s after the "
                    "client finished (a pooled half-sent request?)",
                    payload, pieces, records);
            }
        }
    }
    if (complete > count_heads(payload)) {
        finding("the upstream completed " + std::to_string(complete) +
                    " requests, more than the input holds heads (" +
                    std::to_string(count_heads(payload)) + "): a smuggled request",
                payload, pieces, records);
    }
    return 0;
}
