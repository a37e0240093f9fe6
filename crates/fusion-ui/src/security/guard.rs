//! [`Guard`]: the host names and token the middleware checks requests against.

use std::net::SocketAddr;

use subtle::ConstantTimeEq;

use crate::config::{UiSettings, is_every_interface, is_loopback};

/// What requests are checked against, derived once from [`UiSettings`].
pub(crate) struct Guard {
    port: u16,
    /// Accepted `Host` values, lower case.
    hosts: Vec<String>,
    /// A bind on every interface (`0.0.0.0`, `::`, `::ffff:0.0.0.0`): any IP address with
    /// our port is a fine `Host`, since DNS rebinding needs a name and an address is not one.
    any_address: bool,
    token: Option<String>,
}

impl std::fmt::Debug for Guard {
    // The token is a password: it stays out of logs, as in `UiSettings`'s.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("port", &self.port)
            .field("hosts", &self.hosts)
            .field("any_address", &self.any_address)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Guard {
    /// The checks `settings` call for.
    pub(crate) fn new(settings: &UiSettings) -> Self {
        let address = settings.address();
        let port = address.port();
        let mut hosts = vec![address.to_string()];
        let every_interface = is_every_interface(address.ip());
        if is_loopback(address.ip()) || every_interface {
            for name in ["localhost", "127.0.0.1", "[::1]"] {
                hosts.push(format!("{name}:{port}"));
            }
        }
        hosts.extend(settings.extra_hosts().iter().cloned());
        if port == 80 {
            // Browsers leave the default port out of `Host`.
            let bare: Vec<String> = hosts
                .iter()
                .filter_map(|h| h.strip_suffix(":80").map(str::to_string))
                .collect();
            hosts.extend(bare);
        }
        Self {
            port,
            hosts,
            any_address: every_interface,
            token: settings.token().map(str::to_string),
        }
    }

    /// Whether a request whose `Host` header is `host` is meant for this server.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts.contains(&host)
            || (self.any_address
                && host
                    .parse::<SocketAddr>()
                    .is_ok_and(|addr| addr.port() == self.port))
    }

    /// Whether a token is in force.
    pub(crate) fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// The name of the cookie that carries the token for a request naming us `host`:
    /// `fusion_ui_token_<port>` (set over HTTPS with the `__Host-` prefix before it, which
    /// `security::token` adds and reads back beside this name). A browser keeps one cookie per name for a host whatever
    /// its port, so two apps on one machine sharing a name would each replace the other's
    /// cookie at its login, refusing the other's open tabs. The port is the one the browser
    /// opened, `host`'s, which is what tells its apps apart (Docker's `-p` or an SSH
    /// tunnel puts two apps bound alike on two ports), and the same on every request of a
    /// tab; without one there (a default port, behind a proxy), the bound port.
    pub(crate) fn cookie(&self, host: Option<&str>) -> String {
        let opened = host.and_then(|host| {
            let (name, port) = host.rsplit_once(':')?;
            // `[::1]` has colons and no port; `[::1]:8765` and `name:8765` have one.
            (name.ends_with(']') || !name.contains(':'))
                .then(|| port.parse::<u16>().ok())
                .flatten()
        });
        format!("fusion_ui_token_{}", opened.unwrap_or(self.port))
    }

    /// Whether `candidate` is the token, compared in constant time so the time a refusal
    /// takes says nothing about how much of a guess was right.
    pub(crate) fn token_matches(&self, candidate: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(candidate.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UiConfig;

    #[test]
    fn its_debug_output_holds_no_token() {
        let addr = "0.0.0.0:8765".parse().unwrap();
        let settings = UiConfig::new(addr)
            .token("correct-horse-battery-staple")
            .settings(addr)
            .unwrap();
        let shown = format!("{:?}", Guard::new(&settings));
        assert!(!shown.contains("correct-horse"), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
    }

    fn guard(bind: &str) -> Guard {
        let addr = bind.parse().unwrap();
        Guard::new(
            &UiConfig::new(addr)
                .allow_host("DevBox:9")
                .settings(addr)
                .unwrap(),
        )
    }

    #[test]
    fn loopback_accepts_its_local_names_and_nothing_else() {
        let local = guard("127.0.0.1:8765");
        for ok in [
            "127.0.0.1:8765",
            "localhost:8765",
            "LOCALHOST:8765",
            "[::1]:8765",
            "devbox:9",
        ] {
            assert!(local.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:8765",
            "localhost:8766",
            "localhost",
            "127.0.0.2:8765",
            "",
        ] {
            assert!(!local.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn a_bind_on_every_interface_accepts_addresses_but_not_names() {
        let open = guard("0.0.0.0:8765");
        assert!(open.requires_token());
        assert!(open.host_allowed("192.168.1.20:8765"));
        assert!(open.host_allowed("localhost:8765"));
        assert!(!open.host_allowed("192.168.1.20:8766"));
        assert!(!open.host_allowed("evil.example:8765"));
        // Every IPv4 interface, through an IPv6 socket: the same names.
        let mapped = guard("[::ffff:0.0.0.0]:8765");
        assert!(mapped.host_allowed("192.168.1.20:8765"));
        assert!(mapped.host_allowed("127.0.0.1:8765"));
        assert!(!mapped.host_allowed("evil.example:8765"));
        let specific = guard("10.0.0.5:80");
        assert!(specific.host_allowed("10.0.0.5"));
        assert!(!specific.host_allowed("localhost:80"));
        assert!(!specific.host_allowed("10.0.0.6:80"));
    }

    #[test]
    fn the_cookie_is_named_after_the_port_the_browser_opened() {
        let open = guard("0.0.0.0:8765");
        for (host, name) in [
            (Some("127.0.0.1:8001"), "fusion_ui_token_8001"),
            (Some("[::1]:8002"), "fusion_ui_token_8002"),
            (Some("[::1]"), "fusion_ui_token_8765"),
            (Some("ui.example"), "fusion_ui_token_8765"),
            (None, "fusion_ui_token_8765"),
        ] {
            assert_eq!(open.cookie(host), name, "{host:?}");
        }
    }

    #[test]
    fn the_token_must_match_exactly() {
        let open = guard("0.0.0.0:1");
        let token = open.token.clone().unwrap();
        assert!(open.token_matches(&token));
        assert!(!open.token_matches(&token[1..]));
        assert!(!open.token_matches(""));
        assert!(!guard("127.0.0.1:1").token_matches(""));
    }
}
