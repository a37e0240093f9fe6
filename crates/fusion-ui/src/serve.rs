//! Serving the app on a socket: [`bind`] then [`BoundUi::serve`], or both in [`serve`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use fusion::storage::ConversationStorage;
use tokio::net::TcpListener;

use crate::config::{UiConfig, UiSettings};
use crate::error::UiError;
use crate::router::app;

/// The UI listening on its address, not yet serving: its URL is known (with the real
/// port when port 0 was asked for) and nothing has been printed.
#[derive(Debug)]
pub struct BoundUi {
    listener: TcpListener,
    settings: UiSettings,
}

/// Binds `config`'s address and settles the token: the given one, a random one for a
/// bind that is not loopback, or none. Fails with [`UiError::Bind`] (the port is taken,
/// say) or [`UiError::InvalidToken`].
pub async fn bind(config: &UiConfig) -> Result<BoundUi, UiError> {
    let addr = config.address();
    let bind_error = |source| UiError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let settings = config.settings(bound)?;
    Ok(BoundUi { listener, settings })
}

impl BoundUi {
    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.settings.address()
    }

    /// The URL to open, with `?token=...` when a token is in force.
    pub fn url(&self) -> String {
        self.settings.url()
    }

    /// What the router enforces (the token among it).
    pub fn settings(&self) -> &UiSettings {
        &self.settings
    }

    /// Serves the app over `storage` until `shutdown` completes; requests in flight then
    /// finish before this returns.
    pub async fn serve(
        self,
        storage: Arc<dyn ConversationStorage>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), UiError> {
        let (app, chat) = app(storage, &self.settings);
        // Pages watching a turn hold their connections open; the graceful shutdown waits
        // for open connections, so the chat ends their streams (and stops its turns) first.
        let shutdown = async move {
            shutdown.await;
            if let Some(chat) = chat {
                chat.close();
            }
        };
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(UiError::Serve)
    }
}

/// Binds `config`, prints the URL to open on stdout (once: it carries the token when one
/// is in force) and, for a bind other machines can reach, the
/// [`exposure_warning`](UiSettings::exposure_warning) on stderr, and serves `storage`
/// until `shutdown` completes.
pub async fn serve(
    storage: Arc<dyn ConversationStorage>,
    config: UiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UiError> {
    let bound = bind(&config).await?;
    println!("Fusion UI: {}", bound.url());
    if let Some(warning) = bound.settings().exposure_warning() {
        eprintln!("{warning}");
    }
    bound.serve(storage, shutdown).await
}
