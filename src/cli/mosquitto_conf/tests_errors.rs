//! One-line errors naming file and line, bridges refused after parsing, and every option of
//! Mosquitto's own example file known.

use super::tests::{parse, settings, Dir};

#[test]
fn one_line_errors_name_file_and_line() {
    for (text, expected) in [
        ("\nfoo bar\n", "m.conf:2: unknown option `foo`"),
        ("auth_plugin /usr/lib/x.so\n", "m.conf:1: `auth_plugin` is not supported: SurgeMQ loads no plugins; users and ACLs come from password_file and acl_file"),
        ("listener 1883\npsk_hint h\n", "m.conf:2: `psk_hint` is not supported: TLS-PSK is not supported; use certificates (certfile, keyfile, cafile)"),
        ("address 10.0.0.1\n", "m.conf:1: `address` is a bridge option: it belongs after a `connection` line"),
        ("topic a/#\n", "m.conf:1: `topic` is a bridge option: it belongs after a `connection` line"),
        ("port 0\n", "m.conf:1: `port` must be an integer from 1 to 65535, got `0`"),
        ("max_keepalive 5\n", "m.conf:1: `max_keepalive` must be an integer from 10 to 65535, got `5`"),
        ("sys_interval -1\n", "m.conf:1: `sys_interval` must be an integer from 0 to 65535, got `-1`"),
        ("max_inflight_messages 70000\n", "m.conf:1: `max_inflight_messages` must be an integer from -1 to 65535, got `70000`"),
        ("persistence yes\n", "m.conf:1: `persistence` must be true or false, got `yes`"),
        ("acl_file a\nacl_file b\n", "m.conf:2: `acl_file` given twice (first at m.conf:1)"),
        ("persistent_client_expiration 14\n", "m.conf:1: `persistent_client_expiration` must be a number above 0 followed by h, d, w, m or y (e.g. 14d), got `14`"),
        ("persistent_client_expiration 0d\n", "m.conf:1: `persistent_client_expiration` must be a number above 0 followed by h, d, w, m or y (e.g. 14d), got `0d`"),
        ("per_listener_settings maybe\n", "m.conf:1: `per_listener_settings` must be true or false, got `maybe`"),
        ("listener 1883\nprotocol mqttsn\n", "m.conf:2: `protocol` must be one of mqtt, websockets, got `mqttsn`"),
        ("listener 1883\nsocket_domain ipv5\n", "m.conf:2: `socket_domain` must be one of ipv4, ipv6, got `ipv5`"),
        ("connection a\naddress h\ntopic #\nconnection a\n", "m.conf:4: bridge `a` is already defined at m.conf:1"),
    ] {
        assert_eq!(settings(text).unwrap_err(), expected, "{text}");
    }
    let dir = Dir::new();
    let pw = dir.write("pw", "alice\n");
    assert_eq!(
        settings(&format!("password_file {}\n", pw.display())).unwrap_err(),
        format!(
            "m.conf:1: password_file: {}:1: expected user:hash",
            pw.display()
        )
    );
    let acl = dir.write("acl", "topic read #\nsometimes t\n");
    assert_eq!(
        settings(&format!("acl_file {}\n", acl.display())).unwrap_err(),
        format!(
            "m.conf:1: acl_file: {}:2: unknown keyword `sometimes`",
            acl.display()
        )
    );
}

#[test]
fn bridges_are_parsed_into_the_brokers_form() {
    let conf = parse(
        "listener 1883\n\n# Bridge to the cloud\nconnection cloud\naddress broker.example.com:8883\ntopic sensors/# out 1\nremote_username edge\nlistener 1884\n",
    )
    .unwrap();
    assert_eq!(conf.bridges.len(), 1);
    assert_eq!(
        conf.bridges[0].topics[0].qos,
        surgemq::protocol::QoS::AtLeastOnce
    );
    // A `listener` after the bridge is still a listener.
    assert_eq!(conf.listeners.len(), 2);
    let (bridges, warnings) = conf.bridge_configs().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let b = &bridges[0];
    assert_eq!(b.addresses, [("broker.example.com".to_string(), 8883)]);
    assert_eq!(b.topics[0].local_filter(), "sensors/#");
    assert_eq!(b.remote_username.as_deref(), Some("edge"));
    assert!(b.remote_client_id.starts_with("cloud."));
    assert_eq!(b.local_client_id, format!("local.{}", b.remote_client_id));
    // What SurgeMQ cannot do: refused when it weakens security, else a warning.
    let refused = parse(
        "connection c
address h:8883
topic a
bridge_cafile /ca.pem
bridge_insecure true
",
    )
    .unwrap()
    .bridge_configs()
    .unwrap_err();
    assert!(
        refused.starts_with("m.conf:1: bridge `c`: `bridge_insecure true` is not supported"),
        "{refused}"
    );
    let (_, warnings) = parse(
        "connection c
address h
topic a
start_type lazy
",
    )
    .unwrap()
    .bridge_configs()
    .unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].starts_with("m.conf:1: bridge `c`: `start_type` is ignored"));
    assert_eq!(
        parse("connection cloud\ntopic a\n").unwrap_err(),
        "m.conf:1: bridge `cloud`: no `address`"
    );
}

/// Every option line of Mosquitto 2.0.11's example configuration
/// (/usr/share/doc/mosquitto/examples/mosquitto.conf, where each is commented out with its
/// default or a placeholder): each is read, warned about or refused, none is unknown.
#[test]
fn every_option_of_mosquittos_example_file_is_known() {
    let lines = [
        "acl_file",
        "address <host>[:<port>] [<host>[:<port>]]",
        "allow_anonymous false",
        "allow_zero_length_clientid true",
        "auth_plugin",
        "auto_id_prefix auto-",
        "autosave_interval 1800",
        "autosave_on_changes false",
        "bind_interface",
        "bridge_alpn",
        "bridge_attempt_unsubscribe true",
        "bridge_bind_address",
        "bridge_cafile",
        "bridge_capath",
        "bridge_certfile",
        "bridge_identity",
        "bridge_insecure false",
        "bridge_keyfile",
        "bridge_max_packet_size 0",
        "bridge_outgoing_retain true",
        "bridge_protocol_version mqttv311",
        "bridge_psk",
        "cafile",
        "capath",
        "certfile",
        "check_retain_source true",
        "ciphers",
        "ciphers_tls1.3",
        "cleansession false",
        "clientid_prefixes",
        "connection <name>",
        "connection_messages true",
        "crlfile",
        "dhparamfile",
        "http_dir",
        "idle_timeout 60",
        "include_dir",
        "keepalive_interval 60",
        "keyfile",
        "listener",
        "local_clientid",
        "log_dest stderr",
        "log_facility",
        "log_timestamp true",
        "log_timestamp_format",
        "log_type error",
        "max_connections -1",
        "max_inflight_bytes 0",
        "max_inflight_messages 20",
        "max_keepalive 65535",
        "max_packet_size 0",
        "max_qos 2",
        "max_queued_bytes 0",
        "max_queued_messages 1000",
        "memory_limit 0",
        "message_size_limit 0",
        "mount_point",
        "notification_topic",
        "notifications true",
        "password_file",
        "per_listener_settings false",
        "persistence false",
        "persistence_file mosquitto.db",
        "persistence_location",
        "persistent_client_expiration",
        "pid_file",
        "protocol mqtt",
        "psk_file",
        "psk_hint",
        "queue_qos0_messages false",
        "remote_clientid",
        "remote_password",
        "remote_username",
        "require_certificate false",
        "restart_timeout 5 30",
        "retain_available true",
        "round_robin false",
        "set_tcp_nodelay false",
        "socket_domain",
        "start_type automatic",
        "sys_interval 10",
        "threshold 10",
        "topic <topic> [[[out | in | both] qos-level] local-prefix remote-prefix]",
        "try_private true",
        "upgrade_outgoing_qos false",
        "use_identity_as_username false",
        "use_username_as_clientid",
        "user mosquitto",
        "websockets_headers_size",
        "websockets_log_level 0",
    ];
    assert_eq!(lines.len(), 90);
    for line in lines {
        if let Err(e) = parse(&format!("listener 1883\n{line}\n")) {
            assert!(!e.contains("unknown option"), "{line}: {e}");
            assert!(e.starts_with("m.conf:2: "), "{line}: {e}");
        }
    }
}
