// switchyard's command line (SPEC §1). Thin: parses arguments and hands over
// to the app (run), the config loader (check), the demo and the admin client.

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/app.hpp"
#include "cli/demo.hpp"
#include "config/config.hpp"

namespace {


constexpr std::string_view usage = R"(usage:
  switchyard run --config FILE [--workers N] [--log-level debug|info|warn|error]
  switchyard --config FILE              (same as run)
  switchyard check --config FILE
  switchyard demo [--port P] [--admin-port A] [--duration D]
  switchyard ctl [--admin URL] [--token-file F] SUBCOMMAND ...
  switchyard --version | --help
)";

int usage_error(std::string_view message) {
    std::cerr << "switchyard: " << message << "\n" << usage;
    return 2;
}

// Reads "--name VALUE" or "--name=VALUE" at args[i]; advances i past it.
std::optional<std::string> take_value(const std::vector<std::string>& args, std::size_t& i,
                                      std::string_view name) {
    const std::string& a = args[i];
    if (a == name) {
        if (i + 1 >= args.size()) {
            return std::nullopt;
        }
        i += 2;
        return args[i - 1];
    }
    if (a.size() > name.size() && a.starts_with(name) && a[name.size()] == '=') {
        ++i;
        return a.substr(name.size() + 1);
    }
    return std::nullopt;
}

int cmd_check(const std::vector<std::string>& args) {
    std::string file;
    for (std::size_t i = 0; i < args.size();) {
        if (auto v = take_value(args, i, "--config")) {
            file = *v;
        } else {
            return usage_error("check: unknown argument '" + args[i] + "'");
        }
    }
    if (file.empty()) {
        return usage_error("check: --config FILE is required");
    }
    const auto result = switchyard::config::load_file(file);
    if (!result.ok()) {
        for (const auto& e : result.errors) {
            std::cerr << e << "\n";
        }
        return 2;
    }
    std::cout << "OK\n";
    return 0;
}

int cmd_run(const std::vector<std::string>& args) {
    switchyard::cli::run_options opts;
    for (std::size_t i = 0; i < args.size();) {
        if (auto v = take_value(args, i, "--config")) {
            opts.config_file = *v;
        } else if (auto w = take_value(args, i, "--workers")) {
            char* end = nullptr;
            const long n = std::strtol(w->c_str(), &end, 10);
            if (end == w->c_str() || *end != '\0' || n < 0 || n > 1024) {
                return usage_error("--workers takes a number from 0 to 1024, not '" + *w + "'");
            }
            opts.workers = static_cast<unsigned>(n);
        } else if (auto l = take_value(args, i, "--log-level")) {
            const auto level = switchyard::cli::parse_log_level(*l);
            if (!level) {
                return usage_error("--log-level takes debug, info, warn or error, not '" + *l + "'");
            }
            opts.level = *level;
        } else {
            return usage_error("run: unknown argument '" + args[i] + "'");
        }
    }
    if (opts.config_file.empty()) {
        return usage_error("run: --config FILE is required");
    }
    return switchyard::cli::run(opts);
}

int cmd_demo(const std::vector<std::string>& args) {
    switchyard::cli::demo_options opts;
    for (std::size_t i = 0; i < args.size();) {
        if (auto p = take_value(args, i, "--port")) {
            const long n = std::strtol(p->c_str(), nullptr, 10);
            if (n <= 0 || n > 65535) {
                return usage_error("--port takes a port number, not '" + *p + "'");
            }
            opts.port = static_cast<std::uint16_t>(n);
        } else if (auto a = take_value(args, i, "--admin-port")) {
            const long n = std::strtol(a->c_str(), nullptr, 10);
            if (n <= 0 || n > 65535) {
                return usage_error("--admin-port takes a port number, not '" + *a + "'");
            }
            opts.admin_port = static_cast<std::uint16_t>(n);
        } else if (auto d = take_value(args, i, "--duration")) {
            const auto parsed = switchyard::config::parse_duration(*d);
            if (!parsed) {
                return usage_error("--duration takes a duration such as 30s or 2m, not '" + *d + "'");
            }
            opts.duration = *parsed;
        } else {
            return usage_error("demo: unknown argument '" + args[i] + "'");
        }
    }
    return switchyard::cli::run_demo(opts);
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::cerr << usage;
        return 2;
    }
    const std::string command = args.front();
    if (command == "--version" || command == "version") {
        std::cout << "switchyard " << switchyard::cli::version << "\n";
        return 0;
    }
    if (command == "--help" || command == "-h" || command == "help") {
        std::cout << usage;
        return 0;
    }
    if (command == "run") {
        return cmd_run({args.begin() + 1, args.end()});
    }
    if (command.starts_with("--config")) {
        return cmd_run(args);
    }
    if (command == "check") {
        return cmd_check({args.begin() + 1, args.end()});
    }
    if (command == "demo") {
        return cmd_demo({args.begin() + 1, args.end()});
    }
    if (command == "ctl") {
        return switchyard::cli::run_ctl({args.begin() + 1, args.end()});
    }
    return usage_error("unknown command '" + command + "'");
}
