//! The client library against Mosquitto (the Debian `mosquitto` binary, started per test on a
//! free loopback port): the same scenarios as `client_broker.rs`, so our client is checked
//! against a broker we did not write.

mod client_util;

use client_util::mosquitto::Mosquitto;

#[test]
fn qos_levels_both_ways() {
    let m = Mosquitto::start();
    client_util::qos_levels_both_ways(m.addr, "m");
}

#[test]
fn pipelined_publishes() {
    let m = Mosquitto::start();
    client_util::pipelined_publishes(m.addr, "m");
}

#[test]
fn will_on_abort_only() {
    let m = Mosquitto::start();
    client_util::will_on_abort_only(m.addr, "m");
}

#[test]
fn retained() {
    let m = Mosquitto::start();
    client_util::retained(m.addr, "m");
}

#[test]
fn keepalive_pings_when_idle() {
    let m = Mosquitto::start();
    client_util::keepalive_pings_when_idle(m.addr, "m");
}

#[test]
fn persistent_session_resumes() {
    let m = Mosquitto::start();
    client_util::persistent_session_resumes(m.addr, "m");
}

#[test]
fn protocol_31_and_311() {
    let m = Mosquitto::start();
    client_util::protocol_31_and_311(m.addr, "m");
}

#[test]
fn unsubscribe_and_end_of_messages() {
    let m = Mosquitto::start();
    client_util::unsubscribe_and_end_of_messages(m.addr, "m");
}

#[test]
fn refused_with_code() {
    let m = Mosquitto::start_with("allow_anonymous false\n");
    client_util::refused_with_code(m.addr);
}
