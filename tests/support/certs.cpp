#include "tests/support/certs.hpp"

#include <chrono>
#include <stdexcept>

namespace switchyard::test {

std::string run_openssl(const std::vector<std::string>& args) {
    process p("openssl", args);
    const int code = p.wait(std::chrono::seconds(30));
    if (code != 0) {
        throw std::runtime_error("openssl " + (args.empty() ? std::string() : args[0]) + " failed (" +
                                 std::to_string(code) + "): " + p.errors());
    }
    return p.output();
}

void make_self_signed(const temp_dir& dir, const std::string& name, const std::string& san) {
    run_openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", dir.file(name + ".key"), "-out", dir.file(name + ".crt"), "-days", "2",
                 "-subj", "/CN=localhost", "-addext", "subjectAltName=" + san});
}

void make_ca(const temp_dir& dir, const std::string& name) {
    run_openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", dir.file(name + ".key"), "-out", dir.file(name + ".crt"), "-days", "2",
                 "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
}

void make_issued(const temp_dir& dir, const std::string& name, const std::string& ca,
                 const std::string& san) {
    run_openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", dir.file(name + ".key"), "-out", dir.file(name + ".csr"), "-subj",
                 "/CN=" + name});
    const std::string ext = dir.write(name + ".ext", "subjectAltName=" + san +
                                                         "\nextendedKeyUsage=serverAuth\n"
                                                         "basicConstraints=CA:FALSE\n");
    run_openssl({"x509", "-req", "-in", dir.file(name + ".csr"), "-CA", dir.file(ca + ".crt"),
                 "-CAkey", dir.file(ca + ".key"), "-CAcreateserial", "-out", dir.file(name + ".crt"),
                 "-days", "2", "-extfile", ext});
}

}  // namespace switchyard::test
