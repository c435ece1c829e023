#pragma once
// Passive outlier detection (SPEC §5): the decisions that eject an endpoint
// after `consecutive_failures` 5xx responses or connect errors in a row, and
// bring it back when its ejection time is over. Pure logic: no Asio, no
// clock reads (the caller passes `now`).
//
// Workers count: each 5xx or connect error increments the endpoint's
// routing::endpoint_health::consecutive_failures and each success zeroes it
// (proxy/session.cpp). The control thread calls scan() for every pool of the
// current snapshot about every 100 ms; scan() flips endpoint_health::ejected,
// which workers read with relaxed loads.
//
// Rules of scan():
//  * an ejected endpoint whose time is over returns (ejected = false,
//    consecutive_failures = 0);
//  * an endpoint that is not ejected and has consecutive_failures >=
//    policy.consecutive_failures is ejected for base_ejection × k, k being
//    how many times it has been ejected, this one included; its
//    consecutive_failures restart from 0;
//  * unless the pool would then have more than max(1, floor(n ×
//    max_ejection_percent / 100)) of its n endpoints ejected ("at least one
//    endpoint may always be ejected"): the endpoint stays in and keeps its
//    count, and is ejected at a later scan when there is room.
// Endpoints are considered in pool order. The ejection count k never decays
// (Envoy decays it after quiet intervals; kept simple here): an endpoint
// that misbehaves once a day is ejected a little longer each day, until
// retain() forgets it.
//
// Threads: one outlier_detector is owned and used by one thread (the control
// thread); it is not synchronised. The endpoint_health it writes is read
// concurrently by workers, with relaxed atomics. A worker may count a failure
// between scan()'s read and its reset of consecutive_failures: that failure
// is lost, which only delays a later ejection by one failure.
// Failure: nothing throws except std::bad_alloc.

#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "health/stats.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::health {

struct ejection_change {
    routing::endpoint_id id = 0;
    std::string address;   // "host:port" as configured
    bool ejected = false;  // true: ejected now; false: returned now
    // One sentence: "5 consecutive failures: ejected for 30s (ejection 1)",
    // "ejection of 30s ended".
    std::string reason;
};

class outlier_detector {
public:
    // One pass over `pool` (an element of a snapshot's service::pools). `ids`
    // is the registry the snapshot was built with: its health(ep.id) is the
    // mutable endpoint_health. Returns the changes made, in pool order,
    // returns first.
    std::vector<ejection_change> scan(const routing::pool& pool, routing::registry& ids,
                                      const config::outlier_detection& policy,
                                      clock::time_point now);

    // Forgets every endpoint not in `keep` (after a reload), returning the
    // ejected ones among them to service in `ids` (ejected = false,
    // consecutive_failures = 0), so that one that comes back later starts
    // clean.
    void retain(std::span<const routing::endpoint_id> keep, routing::registry& ids);

    // How many times `id` has been ejected (0 when unknown).
    unsigned ejection_count(routing::endpoint_id id) const;

private:
    struct record {
        unsigned ejections = 0;
        clock::time_point ejected_until{};
        clock::duration last_duration{};
    };
    std::unordered_map<routing::endpoint_id, record> records_;
};

}  // namespace switchyard::health
