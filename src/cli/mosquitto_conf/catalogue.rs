//! Mosquitto options SurgeMQ does not implement, and what to do about each: options that do
//! not change what clients see are accepted with a warning saying why they do not matter;
//! options whose absence would make the broker less strict than configured (plugins, PSK,
//! cipher lists, revocation lists, mount points, ...) stop the start with an error naming
//! them. A value that asks for what SurgeMQ does anyway (`retain_available true`) is fine.
//! Anything else is an unknown option: an error, as in Mosquitto.

use super::line::Line;

const PLUGINS: &str =
    "SurgeMQ loads no plugins; users and ACLs come from password_file and acl_file";

/// Ok(None): accepted silently (the value is what SurgeMQ does); Ok(Some(warning)): accepted
/// and ignored; Err: refused or unknown.
pub fn unimplemented(line: &Line<'_>) -> Result<Option<String>, String> {
    let key = line.key;
    if key.starts_with("auth_opt_") || key.starts_with("plugin_opt_") {
        return Err(line.refuse(PLUGINS));
    }
    let refuse = |reason: &str| Err(line.refuse(reason));
    let ignored = |reason: &str| Ok(Some(line.ignored(reason)));
    let fine_if = |same: bool, reason: &str| if same { Ok(None) } else { refuse(reason) };
    match key {
        "auth_plugin" | "plugin" | "auth_plugin_deny_special_chars" => refuse(PLUGINS),
        "psk_file" | "psk_hint" => {
            refuse("TLS-PSK is not supported; use certificates (certfile, keyfile, cafile)")
        }
        "capath" => refuse("put the CA certificates in one PEM file and give it with `cafile`"),
        "crlfile" => refuse("certificate revocation lists are not checked"),
        "ciphers" | "ciphers_tls1.3" => refuse(
            "SurgeMQ uses rustls' cipher suites (TLS 1.2 and 1.3, forward-secret AEAD only); remove the option to accept them",
        ),
        "tls_engine" | "tls_engine_kpass_sha1" => {
            refuse("OpenSSL engines are not supported; give the key as a PEM file")
        }
        "tls_keyform" => fine_if(
            line.choice(&["pem", "engine"])? == "pem",
            "OpenSSL engines are not supported; give the key as a PEM file",
        ),
        "tls_version" => match line.choice(&["tlsv1.3", "tlsv1.2", "tlsv1.1"])? {
            "tlsv1.2" => Ok(None),
            "tlsv1.1" => ignored("SurgeMQ accepts TLS 1.2 and 1.3 only"),
            _ => refuse("SurgeMQ accepts TLS 1.2 as well as 1.3"),
        },
        "use_subject_as_username" => fine_if(
            !line.bool()?,
            "use `use_identity_as_username` (the certificate's subject CN)",
        ),
        "use_username_as_clientid" => {
            fine_if(!line.bool()?, "clients keep the client id they connect with")
        }
        "clientid_prefixes" => {
            refuse("restrict who may connect with password_file, allow_anonymous and acl_file")
        }
        "mount_point" => refuse("all listeners share one topic tree"),
        "max_qos" | "maximum_qos" => fine_if(
            line.int(0, 2)? == 2,
            "every listener accepts QoS 0, 1 and 2",
        ),
        "retain_available" => fine_if(line.bool()?, "retained messages are always available"),
        "upgrade_outgoing_qos" => fine_if(
            !line.bool()?,
            "messages go out at the lower of the published and the granted QoS, as MQTT says",
        ),
        "allow_zero_length_clientid" => {
            fine_if(line.bool()?, "clients that send no client id are given one")
        }
        "check_retain_source" => match line.bool()? {
            false => Ok(None),
            true => ignored("a retained message goes to every subscriber the ACL lets read its topic; its publisher's access is not checked again"),
        },
        "set_tcp_nodelay" => match line.bool()? {
            true => Ok(None),
            false => ignored("SurgeMQ always sets TCP_NODELAY"),
        },
        "autosave_interval" | "autosave_on_changes" => {
            if key == "autosave_interval" {
                line.int(i64::MIN, i64::MAX)?;
            } else {
                line.bool()?;
            }
            ignored("SurgeMQ writes every change to its log in persistence_location as it happens and syncs it before acknowledging, so there is nothing to save periodically")
        }
        "allow_duplicate_messages" => {
            line.bool()?;
            ignored("deprecated in Mosquitto 2, which behaves as if it were true")
        }
        "auto_id_prefix" => ignored("clients that send no client id get one SurgeMQ makes up"),
        "connection_messages" => {
            line.bool()?;
            ignored("connections are logged at the debug level (--log-level debug)")
        }
        "http_dir" => ignored("WebSocket listeners serve no files; other HTTP requests get 404"),
        "log_facility" => ignored("SurgeMQ does not write to syslog itself"),
        "log_timestamp" | "log_timestamp_format" => {
            ignored("every log line starts with an RFC 3339 timestamp")
        }
        "max_inflight_bytes" => ignored(
            "payloads in flight count against max_queued_bytes until they are acknowledged",
        ),
        "memory_limit" => ignored(
            "SurgeMQ bounds memory per session (max_queued_messages, max_queued_bytes), not for the whole process",
        ),
        "persistence_file" => ignored(
            "SurgeMQ keeps its own files in persistence_location; it does not read or write mosquitto.db",
        ),
        "pid_file" => ignored("SurgeMQ writes no pid file (systemd tracks it: contrib/surgemq.service)"),
        "retry_interval" => ignored("removed in Mosquitto 2"),
        "user" => ignored(
            "SurgeMQ does not switch users; start it as the user it should run as (User= in contrib/surgemq.service)",
        ),
        "websockets_log_level" => ignored("WebSocket messages are logged with the rest (--log-level)"),
        "websockets_headers_size" => {
            ignored("SurgeMQ has its own limit on WebSocket upgrade requests (431 beyond it)")
        }
        "dhparamfile" => ignored("rustls uses ECDHE key exchange only, which needs no DH parameters"),
        _ => Err(line.err(format_args!("unknown option `{key}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::line::At;
    use super::*;

    fn judge(text: &str) -> Result<Option<String>, String> {
        unimplemented(
            &Line::parse(
                text,
                At {
                    file: "c.conf".into(),
                    line: 3,
                },
            )
            .unwrap(),
        )
    }

    #[test]
    fn security_options_we_lack_are_refused_by_name() {
        for text in [
            "auth_plugin /usr/lib/auth.so",
            "plugin /usr/lib/mosquitto_dynamic_security.so",
            "plugin_opt_config_file /etc/dynsec.json",
            "auth_opt_backends mysql",
            "psk_file /etc/psk",
            "psk_hint hint",
            "capath /etc/ssl/certs",
            "crlfile /etc/crl.pem",
            "ciphers ECDHE-RSA-AES256-GCM-SHA384",
            "ciphers_tls1.3 TLS_AES_256_GCM_SHA384",
            "tls_engine pkcs11",
            "tls_keyform engine",
            "tls_version tlsv1.3",
            "use_subject_as_username true",
            "use_username_as_clientid true",
            "clientid_prefixes secure-",
            "mount_point tenant/",
            "max_qos 1",
            "retain_available false",
            "upgrade_outgoing_qos true",
            "allow_zero_length_clientid false",
        ] {
            let key = text.split(' ').next().unwrap();
            let err = judge(text).unwrap_err();
            assert!(
                err.starts_with(&format!("c.conf:3: `{key}` is not supported: ")),
                "{text}: {err}"
            );
        }
        assert_eq!(
            judge("plugin /x.so").unwrap_err(),
            "c.conf:3: `plugin` is not supported: SurgeMQ loads no plugins; users and ACLs come from password_file and acl_file"
        );
    }

    #[test]
    fn values_that_match_surgemq_are_silent() {
        for text in [
            "tls_version tlsv1.2",
            "tls_keyform pem",
            "use_subject_as_username false",
            "max_qos 2",
            "retain_available true",
            "upgrade_outgoing_qos false",
            "allow_zero_length_clientid true",
            "check_retain_source false",
            "set_tcp_nodelay true",
        ] {
            assert_eq!(judge(text), Ok(None), "{text}");
        }
    }

    #[test]
    fn harmless_options_warn_with_the_line() {
        for text in [
            "user mosquitto",
            "pid_file /run/mosquitto/mosquitto.pid",
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "log_facility 5",
            "autosave_interval 1800",
            "autosave_on_changes false",
            "persistence_file mosquitto.db",
            "max_inflight_bytes 0",
            "memory_limit 0",
            "retry_interval 20",
            "http_dir /var/www",
            "websockets_log_level 0",
            "websockets_headers_size 4096",
            "dhparamfile /etc/dh.pem",
            "auto_id_prefix auto-",
            "allow_duplicate_messages false",
            "check_retain_source true",
            "set_tcp_nodelay false",
            "tls_version tlsv1.1",
        ] {
            let key = text.split(' ').next().unwrap();
            let warning = judge(text).unwrap().unwrap();
            assert!(
                warning.starts_with(&format!("c.conf:3: `{key}` is ignored: ")),
                "{text}: {warning}"
            );
        }
        assert_eq!(
            judge("autosave_interval 1800").unwrap().unwrap(),
            "c.conf:3: `autosave_interval` is ignored: SurgeMQ writes every change to its log in persistence_location as it happens and syncs it before acknowledging, so there is nothing to save periodically"
        );
        assert!(judge("autosave_interval soon").is_err());
        assert!(judge("connection_messages maybe").is_err());
    }

    #[test]
    fn unknown_options_are_errors() {
        assert_eq!(
            judge("max_inflight_mesages 10").unwrap_err(),
            "c.conf:3: unknown option `max_inflight_mesages`"
        );
    }
}
