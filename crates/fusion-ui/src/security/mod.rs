//! The defences every request passes, as axum middleware, outermost first:
//!
//! 1. [`headers`]: security headers on every response, refusals included (a strict
//!    Content-Security-Policy, no sniffing, no referrer, no framing);
//! 2. [`host`]: the `Host` header must name this server, which defeats DNS rebinding (a
//!    page on `evil.example` whose name is re-pointed at 127.0.0.1 still sends `Host:
//!    evil.example`);
//! 3. [`token`]: when a token is in force, a request must carry it (a cookie set by
//!    opening the printed URL, or a bearer header);
//! 4. [`csrf`]: a request that may change something (anything but GET and HEAD) must come
//!    from this origin, which a cross-site form or `fetch` cannot fake.
//!
//! [`Guard`] holds what they check against, built once from the settings.

mod csrf;
mod guard;
mod headers;
mod host;
mod token;

pub(crate) use csrf::check_origin;
pub(crate) use guard::Guard;
pub(crate) use headers::add_headers;
pub(crate) use host::check_host;
pub(crate) use token::check_token;
