// `switchyard ctl`: the operator's client of the admin API (SPEC §1, §6).
//
//   switchyard ctl [--admin URL] [--token-file F] [--json] COMMAND ...
//
// Each command is one HTTP/1.1 request to the admin listener (blocking, with
// a 30 s deadline), except `events --follow`, which polls every second.
// Output: a readable table or sentence, or with --json the API's own JSON.
// Exit codes: 0 done; 1 the API refused (its error sentence on stderr) or
// could not be reached; 2 usage error.

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/app.hpp"

namespace switchyard::cli {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

constexpr std::string_view ctl_usage = R"(usage: switchyard ctl [--admin URL] [--token-file F] [--json] COMMAND
commands:
  status [SERVICE]                      pools, weights, endpoints, stats, rollout, guard
  weights SERVICE POOL=N [POOL=N ...]   set weights (pools not named keep theirs)
  switch SERVICE POOL                   smoke test, then POOL becomes stable at 100
  rollback SERVICE                      back to stable (or to the previous stable)
  promote SERVICE [POOL]                smoke test, then POOL becomes stable
  rollout SERVICE start POOL | pause | resume | abort
  events [--since ID] [--follow]        the event log
  reload                                reload the config file
options:
  --admin URL        admin API (default http://127.0.0.1:9901)
  --token-file F     bearer token file (default: env SWITCHYARD_ADMIN_TOKEN)
  --json             print the API's JSON
)";

struct ctl_options {
    std::string host = "127.0.0.1";
    std::string port = "9901";
    std::string token;
    bool json_output = false;
};

struct reply {
    unsigned status = 0;
    std::string body;
};

struct ctl_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// http://HOST:PORT[/] or HOST:PORT.
bool parse_admin_url(std::string url, ctl_options& out) {
    if (url.starts_with("http://")) {
        url = url.substr(7);
    } else if (url.find("://") != std::string::npos) {
        return false;  // https is not served by the admin listener
    }
    while (!url.empty() && url.back() == '/') {
        url.pop_back();
    }
    if (url.starts_with("[")) {
        const auto close = url.find(']');
        if (close == std::string::npos) {
            return false;
        }
        out.host = url.substr(1, close - 1);
        if (close + 1 < url.size()) {
            if (url[close + 1] != ':') {
                return false;
            }
            out.port = url.substr(close + 2);
        }
        return !out.host.empty();
    }
    const auto colon = url.rfind(':');
    if (colon == std::string::npos) {
        out.host = url;
    } else {
        out.host = url.substr(0, colon);
        out.port = url.substr(colon + 1);
    }
    return !out.host.empty() && !out.port.empty();
}

reply call(const ctl_options& o, http::verb method, const std::string& target,
           const std::string& body = {}) {
    net::io_context ioc;
    net::ip::tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    beast::error_code ec;
    const auto results = resolver.resolve(o.host, o.port, ec);
    if (ec) {
        throw ctl_error("cannot resolve the admin address " + o.host + ": " + ec.message());
    }
    stream.expires_after(std::chrono::seconds(30));
    stream.connect(results, ec);
    if (ec) {
        throw ctl_error("cannot reach the admin API at " + o.host + ":" + o.port + ": " +
                        ec.message());
    }
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, o.host + ":" + o.port);
    req.set(http::field::user_agent, "switchyard-ctl");
    if (!o.token.empty()) {
        req.set(http::field::authorization, "Bearer " + o.token);
    }
    if (!body.empty()) {
        req.set(http::field::content_type, "application/json");
        req.body() = body;
    }
    req.prepare_payload();
    req.keep_alive(false);
    http::write(stream, req, ec);
    if (ec) {
        throw ctl_error("cannot send to the admin API: " + ec.message());
    }
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res, ec);
    if (ec) {
        throw ctl_error("no answer from the admin API: " + ec.message());
    }
    return {res.result_int(), std::move(res.body())};
}

// The API's error sentence, or the status when the body has none.
std::string error_of(const reply& r) {
    json::error_code ec;
    const json::value v = json::parse(r.body, ec);
    std::string out = "HTTP " + std::to_string(r.status);
    if (!ec && v.is_object()) {
        if (const auto* e = v.get_object().if_contains("error"); e && e->is_string()) {
            out = std::string(e->get_string());
        }
        if (const auto* errors = v.get_object().if_contains("errors"); errors && errors->is_array()) {
            for (const auto& line : errors->get_array()) {
                if (line.is_string()) {
                    out += "\n  " + std::string(line.get_string());
                }
            }
        }
        if (const auto* d = v.get_object().if_contains("details")) {
            out += "\n  details: " + json::serialize(*d);
        }
    }
    return out;
}

double number(const json::value* v) {
    if (v == nullptr) return 0;
    if (v->is_double()) return v->get_double();
    if (v->is_int64()) return double(v->get_int64());
    if (v->is_uint64()) return double(v->get_uint64());
    return 0;
}

std::string text(const json::value* v) {
    if (v == nullptr || v->is_null()) return "-";
    if (v->is_string()) return std::string(v->get_string());
    return json::serialize(*v);
}

std::string fixed(double value, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
    return buf;
}

std::string pad(std::string s, std::size_t width) {
    if (s.size() < width) {
        s.append(width - s.size(), ' ');
    }
    return s;
}

void print_service(const json::object& svc) {
    std::cout << "service " << text(svc.if_contains("name")) << "  stable "
              << text(svc.if_contains("stable")) << "  generation "
              << text(svc.if_contains("generation")) << "\n";
    const json::object* guard_pools = nullptr;
    if (const auto* g = svc.if_contains("guard"); g && g->is_object()) {
        if (const auto* p = g->get_object().if_contains("pools"); p && p->is_object()) {
            guard_pools = &p->get_object();
        }
    }
    std::cout << "  " << pad("POOL", 12) << pad("WEIGHT", 8) << pad("HEALTHY", 9)
              << pad("REQUESTS", 10) << pad("ERRORS", 9) << pad("P95", 10) << "GUARD\n";
    if (const auto* pools = svc.if_contains("pools"); pools && pools->is_object()) {
        for (const auto& [name, value] : pools->get_object()) {
            const json::object& pool = value.as_object();
            std::size_t healthy = 0;
            std::size_t total = 0;
            if (const auto* eps = pool.if_contains("endpoints"); eps && eps->is_array()) {
                for (const auto& ep : eps->get_array()) {
                    ++total;
                    const auto& o = ep.as_object();
                    const bool ok = o.at("healthy").as_bool() && !o.at("ejected").as_bool();
                    healthy += ok ? 1 : 0;
                }
            }
            const json::value* stats = pool.if_contains("stats");
            const auto stat = [&](std::string_view key) {
                return stats && stats->is_object() ? stats->get_object().if_contains(key)
                                                   : nullptr;
            };
            std::string verdict = "-";
            if (guard_pools != nullptr) {
                if (const auto* v = guard_pools->if_contains(name); v && v->is_object()) {
                    verdict = text(v->get_object().if_contains("verdict"));
                }
            }
            std::cout << "  " << pad(std::string(name), 12)
                      << pad(text(pool.if_contains("weight")), 8)
                      << pad(std::to_string(healthy) + "/" + std::to_string(total), 9)
                      << pad(text(stat("requests")), 10)
                      << pad(fixed(100.0 * number(stat("error_rate")), 2) + "%", 9)
                      << pad(fixed(number(stat("p95_ms")), 1) + "ms", 10) << verdict << "\n";
        }
    }
    if (const auto* r = svc.if_contains("rollout"); r && r->is_object()) {
        const auto& o = r->get_object();
        std::cout << "  rollout " << text(o.if_contains("state"));
        if (text(o.if_contains("pool")) != "-") {
            std::cout << " pool " << text(o.if_contains("pool")) << " step "
                      << text(o.if_contains("step"));
        }
        if (text(o.if_contains("reason")) != "-") {
            std::cout << ": " << text(o.if_contains("reason"));
        }
        std::cout << "\n";
    }
}

void print_event(const json::object& e) {
    std::cout << text(e.if_contains("id")) << "  " << text(e.if_contains("time")) << "  "
              << pad(text(e.if_contains("service")), 16) << pad(text(e.if_contains("kind")), 9)
              << pad(text(e.if_contains("actor")), 8) << text(e.if_contains("reason")) << "\n";
}

// Sends a change and prints the SERVICE it answers with.
int change(const ctl_options& o, http::verb method, const std::string& target,
           const std::string& body) {
    const reply r = call(o, method, target, body);
    if (r.status != 200) {
        std::cerr << "switchyard ctl: " << error_of(r) << "\n";
        return 1;
    }
    if (o.json_output) {
        std::cout << r.body << "\n";
        return 0;
    }
    json::error_code ec;
    const json::value v = json::parse(r.body, ec);
    if (!ec && v.is_object() && v.get_object().contains("name")) {
        print_service(v.get_object());
    } else {
        std::cout << "ok\n";
    }
    return 0;
}

std::string quoted(std::string_view s) { return json::serialize(json::string(s)); }

int usage_error(const std::string& message) {
    std::cerr << "switchyard ctl: " << message << "\n" << ctl_usage;
    return 2;
}

std::optional<std::string> read_token(const std::string& path, std::string& error) {
    std::ifstream in(path);
    if (!in) {
        error = "cannot read the token file " + path;
        return std::nullopt;
    }
    std::stringstream s;
    s << in.rdbuf();
    std::string token = s.str();
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r' ||
                              token.back() == ' ' || token.back() == '\t')) {
        token.pop_back();
    }
    return token;
}

}  // namespace

int run_ctl(const std::vector<std::string>& all) {
    ctl_options o;
    if (const char* env = std::getenv("SWITCHYARD_ADMIN_TOKEN"); env != nullptr) {
        o.token = env;
    }
    std::vector<std::string> args;
    for (std::size_t i = 0; i < all.size(); ++i) {
        const std::string& a = all[i];
        if (a == "--admin" || a == "--token-file") {
            if (i + 1 >= all.size()) {
                return usage_error(a + " needs a value");
            }
            const std::string& value = all[++i];
            if (a == "--admin") {
                if (!parse_admin_url(value, o)) {
                    return usage_error("--admin must be http://HOST:PORT, not " + value);
                }
            } else {
                std::string error;
                auto token = read_token(value, error);
                if (!token) {
                    std::cerr << "switchyard ctl: " << error << "\n";
                    return 1;
                }
                o.token = *token;
            }
        } else if (a == "--json") {
            o.json_output = true;
        } else if (a == "--help" || a == "-h") {
            std::cout << ctl_usage;
            return 0;
        } else {
            args.push_back(a);
        }
    }
    if (args.empty()) {
        return usage_error("no command given");
    }
    const std::string& command = args[0];
    const auto service_path = [](const std::string& svc) { return "/api/v1/services/" + svc; };
    try {
        if (command == "status") {
            if (args.size() > 2) {
                return usage_error("status takes at most one SERVICE");
            }
            const reply r = call(o, http::verb::get,
                                 args.size() == 2 ? service_path(args[1]) : "/api/v1/services");
            if (r.status != 200) {
                std::cerr << "switchyard ctl: " << error_of(r) << "\n";
                return 1;
            }
            if (o.json_output) {
                std::cout << r.body << "\n";
                return 0;
            }
            const json::value v = json::parse(r.body);
            if (args.size() == 2) {
                print_service(v.as_object());
            } else {
                bool first = true;
                for (const auto& s : v.at("services").as_array()) {
                    if (!first) {
                        std::cout << "\n";
                    }
                    first = false;
                    print_service(s.as_object());
                }
            }
            return 0;
        }
        if (command == "weights") {
            if (args.size() < 3) {
                return usage_error("weights needs SERVICE and at least one POOL=N");
            }
            json::object weights;
            for (std::size_t i = 2; i < args.size(); ++i) {
                const auto eq = args[i].find('=');
                std::int64_t w = 0;
                const char* begin = args[i].data() + (eq == std::string::npos ? 0 : eq + 1);
                const char* end = args[i].data() + args[i].size();
                const auto [ptr, ec] = std::from_chars(begin, end, w);
                if (eq == std::string::npos || eq == 0 || ec != std::errc{} || ptr != end) {
                    return usage_error("weights are POOL=N, not " + args[i]);
                }
                weights[args[i].substr(0, eq)] = w;
            }
            return change(o, http::verb::put, service_path(args[1]) + "/weights",
                          json::serialize(json::object{{"weights", weights}}));
        }
        if (command == "switch") {
            if (args.size() != 3) {
                return usage_error("switch needs SERVICE and POOL");
            }
            return change(o, http::verb::post, service_path(args[1]) + "/switch",
                          "{\"to\":" + quoted(args[2]) + "}");
        }
        if (command == "rollback") {
            if (args.size() != 2) {
                return usage_error("rollback needs SERVICE");
            }
            return change(o, http::verb::post, service_path(args[1]) + "/rollback", "{}");
        }
        if (command == "promote") {
            if (args.size() != 2 && args.size() != 3) {
                return usage_error("promote needs SERVICE [POOL]");
            }
            return change(o, http::verb::post, service_path(args[1]) + "/promote",
                          args.size() == 3 ? "{\"pool\":" + quoted(args[2]) + "}" : "{}");
        }
        if (command == "rollout") {
            if (args.size() < 3) {
                return usage_error("rollout needs SERVICE and start POOL|pause|resume|abort");
            }
            const std::string& action = args[2];
            if (action == "start" && args.size() != 4) {
                return usage_error("rollout SERVICE start needs POOL");
            }
            if (action != "start" && args.size() != 3) {
                return usage_error("rollout SERVICE " + action + " takes nothing more");
            }
            std::string body = "{\"action\":" + quoted(action);
            if (action == "start") {
                body += ",\"pool\":" + quoted(args[3]);
            }
            body += "}";
            return change(o, http::verb::post, service_path(args[1]) + "/rollout", body);
        }
        if (command == "reload") {
            if (args.size() != 1) {
                return usage_error("reload takes no arguments");
            }
            const reply r = call(o, http::verb::post, "/api/v1/reload");
            if (r.status != 200) {
                std::cerr << "switchyard ctl: " << error_of(r) << "\n";
                return 1;
            }
            std::cout << (o.json_output ? r.body + "\n" : "reloaded\n");
            return 0;
        }
        if (command == "events") {
            std::uint64_t since = 0;
            bool follow = false;
            for (std::size_t i = 1; i < args.size(); ++i) {
                if (args[i] == "--follow" || args[i] == "-f") {
                    follow = true;
                } else if (args[i] == "--since" && i + 1 < args.size()) {
                    const std::string& v = args[++i];
                    const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), since);
                    if (ec != std::errc{} || ptr != v.data() + v.size()) {
                        return usage_error("--since needs an event id");
                    }
                } else {
                    return usage_error("events takes [--since ID] [--follow]");
                }
            }
            for (;;) {
                const reply r = call(o, http::verb::get,
                                     "/api/v1/events?since=" + std::to_string(since));
                if (r.status != 200) {
                    std::cerr << "switchyard ctl: " << error_of(r) << "\n";
                    return 1;
                }
                const json::value v = json::parse(r.body);
                for (const auto& e : v.at("events").as_array()) {
                    if (o.json_output) {
                        std::cout << json::serialize(e) << "\n";
                    } else {
                        print_event(e.as_object());
                    }
                    since = std::max<std::uint64_t>(
                        since, static_cast<std::uint64_t>(number(e.as_object().if_contains("id"))));
                }
                std::cout.flush();
                if (!follow) {
                    return 0;
                }
                std::this_thread::sleep_for(std::chrono::seconds(1));  // polling interval
            }
        }
        return usage_error("unknown command " + command);
    } catch (const ctl_error& e) {
        std::cerr << "switchyard ctl: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "switchyard ctl: unexpected answer from the admin API: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace switchyard::cli
