//! `HeldLlm`: a loopback OpenAI-compatible server on which every request waits until the
//! test answers it, so a test can act (delete a session, run another process, press
//! Ctrl-C) while a `fusion chat` process is known to be waiting for the model.
//!
//! `MockLlmServer` answers from a queue as soon as a request arrives, which is right for a
//! conversation but gives no moment in which the client is certainly mid-turn. Here the
//! test receives each request as a [`Held`] and chooses when (and whether) to answer it.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// How long [`HeldLlm::next`] waits for a request before failing the test: never reached
/// when the client works, it turns a client that never asks into a failure, not a hang.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// The server; requests arrive through [`next`](Self::next).
pub struct HeldLlm {
    base_url: String,
    requests: mpsc::UnboundedReceiver<Held>,
    server: tokio::task::JoinHandle<()>,
}

/// One request, waiting for its answer. Dropping it closes the client's connection.
pub struct Held {
    /// The request body.
    pub body: Value,
    answer: oneshot::Sender<String>,
}

impl HeldLlm {
    /// Starts the server on a free loopback port (inside a tokio runtime).
    pub async fn start() -> HeldLlm {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let (sender, requests) = mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, sender.clone()));
            }
        });
        HeldLlm {
            base_url,
            requests,
            server,
        }
    }

    /// The API root to pass as `OPENAI_BASE_URL`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The next request a client sent, in arrival order.
    pub async fn next(&mut self) -> Held {
        tokio::time::timeout(HANG_GUARD, self.requests.recv())
            .await
            .expect("no request reached the LLM server")
            .expect("the LLM server stopped")
    }
}

impl Drop for HeldLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Held {
    /// Every message of the request as `role: content`.
    pub fn messages(&self) -> Vec<String> {
        self.body["messages"]
            .as_array()
            .expect("a chat-completions request has messages")
            .iter()
            .map(|m| {
                format!(
                    "{}: {}",
                    m["role"].as_str().unwrap_or(""),
                    m["content"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// The content of the request's last user message.
    pub fn last_user_message(&self) -> String {
        self.messages()
            .iter()
            .rev()
            .find_map(|m| m.strip_prefix("user: "))
            .expect("the request has a user message")
            .to_string()
    }

    /// Sends `text` as the assistant's reply. A client that went away meanwhile (an
    /// interrupted turn) is not an error: the reply just goes nowhere.
    pub fn answer(self, text: &str) {
        let _ = self.answer.send(text.to_string());
    }
}

/// Serves one connection: reads one request, hands it to the test, writes its answer,
/// and closes (`Connection: close`), so no state outlives a request.
async fn serve(stream: TcpStream, requests: mpsc::UnboundedSender<Held>) {
    let mut stream = BufReader::new(stream);
    let Some(body) = read_request(&mut stream).await else {
        return;
    };
    let (answer, answered) = oneshot::channel();
    if requests.send(Held { body, answer }).is_err() {
        return;
    }
    let Ok(text) = answered.await else {
        return;
    };
    let body = json!({
        "id": "chatcmpl-held",
        "object": "chat.completion",
        "created": 0,
        "model": "mock-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    // The client may have gone (Ctrl-C); nothing to do about it.
    let _ = stream.get_mut().write_all(response.as_bytes()).await;
    let _ = stream.get_mut().shutdown().await;
}

/// Reads one HTTP/1.1 request with a `content-length` body; `None` if the client closed
/// the connection first.
async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Value> {
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a numeric content-length");
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(serde_json::from_slice(&body).expect("a JSON request body"))
}
