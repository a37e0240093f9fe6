//! What the UI is asked to serve on ([`UiConfig`]) and what its router enforces once the
//! address is bound ([`UiSettings`]): the address, the access token, the host names, and
//! the agent the chat talks to, if any.
//!
//! The token policy lives here, in one place: a loopback bind needs no token unless one
//! is given; any other bind gets the given token or a random one, because anyone who can
//! reach the port could otherwise read and delete every session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::Engine;

use crate::chat::ChatAgent;
use crate::error::UiError;

/// The shortest token accepted: shorter ones could be guessed over the network.
const MIN_TOKEN_CHARS: usize = 16;
/// The longest token accepted (it travels in a cookie on every request).
const MAX_TOKEN_CHARS: usize = 256;
/// Random bytes in a generated token (256 bits).
const TOKEN_BYTES: usize = 32;

/// What the UI is asked for: where to listen, an access token, extra host names, and the
/// agent of the transcript page's chat (none: the page has no chat).
///
/// ```
/// use fusion_ui::UiConfig;
///
/// let config = UiConfig::new("0.0.0.0:8765".parse()?)
///     .token("correct-horse-battery-staple")
///     .allow_host("devbox.lan:8765");
/// assert_eq!(config.address().port(), 8765);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct UiConfig {
    address: SocketAddr,
    token: Option<String>,
    hosts: Vec<String>,
    chat: Option<ChatAgent>,
}

impl Default for UiConfig {
    /// [`UiConfig::DEFAULT_BIND`], no token, no extra host names.
    fn default() -> Self {
        Self::new(Self::DEFAULT_BIND)
    }
}

impl UiConfig {
    /// Where the UI listens unless told otherwise: loopback only, port 8765.
    pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8765);

    /// Listen on `address` (port 0: any free port), with no token and no extra host names.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            token: None,
            hosts: Vec::new(),
            chat: None,
        }
    }

    /// Requires `token` on every request, even on a loopback bind. 16 to 256 characters
    /// from `A-Z a-z 0-9 - . _ ~` (checked by [`settings`](Self::settings)).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Also accepts requests whose `Host` header is `host` (a name and port, such as
    /// `devbox.lan:8765`), for a bind reached by a name rather than by its address.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into().to_ascii_lowercase());
        self
    }

    /// Gives the transcript page a chat with `agent`: a message box, the reply streamed
    /// as it is written, Approve / Deny buttons for the calls the agent's policy asks
    /// about, and a Stop button.
    pub fn chat(mut self, agent: ChatAgent) -> Self {
        self.chat = Some(agent);
        self
    }

    /// The address to listen on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What the router enforces once listening on `bound` (the real port when the
    /// configured one was 0): the token given, a random one if none was given and the
    /// bind is not loopback, or none. Fails when the given token is unusable or the
    /// random source fails.
    pub fn settings(&self, bound: SocketAddr) -> Result<UiSettings, UiError> {
        let token = match &self.token {
            Some(token) => {
                validate_token(token)?;
                Some(token.clone())
            }
            None if is_loopback(bound.ip()) => None,
            None => Some(random_token()?),
        };
        Ok(UiSettings {
            address: bound,
            token,
            hosts: self.hosts.clone(),
            chat: self.chat.clone(),
        })
    }
}

/// What the router enforces: the bound address (for the `Host` and `Origin` checks), the
/// access token if one is in force, and extra host names; and the chat's agent. Made by
/// [`UiConfig::settings`].
#[derive(Clone)]
pub struct UiSettings {
    address: SocketAddr,
    token: Option<String>,
    hosts: Vec<String>,
    chat: Option<ChatAgent>,
}

impl std::fmt::Debug for UiSettings {
    // The token is a password: it stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiSettings")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("hosts", &self.hosts)
            .field("chat", &self.chat)
            .finish()
    }
}

impl UiSettings {
    /// The address the UI listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The access token in force, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Extra `Host` values accepted besides the address itself (lower case).
    pub fn extra_hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The agent of the transcript page's chat, if it has one.
    pub fn chat(&self) -> Option<&ChatAgent> {
        self.chat.as_ref()
    }

    /// What to tell whoever starts the UI when machines other than this one can reach it
    /// (any bind but loopback): where it listens, that the token is all that stands
    /// between them and every session, and that plain HTTP carries the token in the
    /// clear. `None` on loopback. The printed [`url`](Self::url) names 127.0.0.1 for a
    /// bind on every interface, so without this line nothing said the app was open to
    /// the network. Never holds the token.
    pub fn exposure_warning(&self) -> Option<String> {
        let ip = self.address.ip();
        if is_loopback(ip) {
            return None;
        }
        let place = if is_every_interface(ip) {
            format!("every network interface ({})", self.address)
        } else {
            self.address.to_string()
        };
        let chat = if self.chat.is_some() {
            ", and chat with its agent, whose tools run on this machine"
        } else {
            ""
        };
        Some(format!(
            "Warning: listening on {place}, which other machines can reach. Whoever has the \
             token can read, change and delete every session{chat}. Plain HTTP carries the \
             token in the clear: across a network you do not trust, bind 127.0.0.1 and use \
             an SSH tunnel, or put a TLS proxy in front."
        ))
    }

    /// The URL to open: the bound address (loopback for a bind on every interface), with
    /// `?token=...` when a token is in force. Opening it once sets the token's cookie.
    pub fn url(&self) -> String {
        let ip = match self.address.ip() {
            ip if !is_every_interface(ip) => ip,
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let shown = SocketAddr::new(ip, self.address.port());
        match &self.token {
            Some(token) => format!("http://{shown}/?token={token}"),
            None => format!("http://{shown}/"),
        }
    }
}

/// Whether `ip` is reachable only from this machine (IPv4-mapped loopback included).
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Whether a bind on `ip` listens on every interface: `0.0.0.0`, `::`, and `::ffff:0.0.0.0`
/// (every IPv4 interface, through an IPv6 socket).
pub(crate) fn is_every_interface(ip: IpAddr) -> bool {
    ip.to_canonical().is_unspecified()
}

fn validate_token(token: &str) -> Result<(), UiError> {
    let chars = token.chars().count();
    if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&chars) {
        return Err(UiError::InvalidToken(format!(
            "it is {chars} characters long; use {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS}"
        )));
    }
    // Unreserved URL characters travel unchanged in a query string and a cookie.
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
    {
        return Err(UiError::InvalidToken(format!(
            "it contains {c:?}; use only A-Z a-z 0-9 - . _ ~"
        )));
    }
    Ok(())
}

/// 256 random bits as 43 characters of base64url.
fn random_token() -> Result<String, UiError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| UiError::Random(err.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_needs_no_token_and_any_other_bind_gets_a_random_one() {
        for local in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            let settings = UiConfig::new(addr(local)).settings(addr(local)).unwrap();
            assert_eq!(settings.token(), None, "{local}");
        }
        let open = UiConfig::new(addr("0.0.0.0:0"));
        let first = open.settings(addr("0.0.0.0:9000")).unwrap();
        let second = open.settings(addr("0.0.0.0:9000")).unwrap();
        let token = first.token().unwrap();
        assert_eq!(token.len(), 43);
        assert_ne!(Some(token), second.token(), "tokens are random");
        validate_token(token).unwrap();
        assert_eq!(first.url(), format!("http://127.0.0.1:9000/?token={token}"));
        assert!(
            !format!("{first:?}").contains(token),
            "Debug hides the token"
        );
    }

    #[test]
    fn a_given_token_is_used_everywhere_and_checked() {
        let given = "abcdefghijklmnop-._~";
        let settings = UiConfig::new(addr("127.0.0.1:0"))
            .token(given)
            .settings(addr("[::1]:7000"))
            .unwrap();
        assert_eq!(settings.token(), Some(given));
        assert_eq!(settings.url(), format!("http://[::1]:7000/?token={given}"));
        for (bad, why) in [("short", "5 characters"), ("abcdefghijklmnop;x", "';'")] {
            let err = UiConfig::new(addr("127.0.0.1:0"))
                .token(bad)
                .settings(addr("127.0.0.1:1"))
                .unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn a_bind_other_machines_can_reach_is_warned_about() {
        for local in [
            "127.0.0.1:8765",
            "127.0.0.2:8765",
            "[::1]:8765",
            "[::ffff:127.0.0.1]:8765",
        ] {
            let settings = UiConfig::new(addr(local))
                .token("abcdefghijklmnop")
                .settings(addr(local))
                .unwrap();
            assert_eq!(settings.exposure_warning(), None, "{local}");
        }
        for (open, named) in [
            ("0.0.0.0:8765", "every network interface (0.0.0.0:8765)"),
            ("[::]:8765", "every network interface ([::]:8765)"),
            // Every IPv4 interface, through an IPv6 socket.
            (
                "[::ffff:0.0.0.0]:8765",
                "every network interface ([::ffff:0.0.0.0]:8765)",
            ),
            ("192.168.1.20:8765", "192.168.1.20:8765"),
        ] {
            let settings = UiConfig::new(addr(open)).settings(addr(open)).unwrap();
            let warning = settings.exposure_warning().expect(open);
            assert!(warning.contains(named), "{warning}");
            assert!(warning.contains("other machines"), "{warning}");
            assert!(!warning.contains(settings.token().unwrap()), "{warning}");
        }
        let mapped = addr("[::ffff:0.0.0.0]:8765");
        let settings = UiConfig::new(mapped).settings(mapped).unwrap();
        assert!(
            settings.url().starts_with("http://127.0.0.1:8765/?token="),
            "{}",
            settings.url()
        );
    }
}
