//! Criterion micro-benchmarks of the paths every turn goes through, on docs/benchmarks.md's
//! canonical messages: JSON encoding and decoding of messages (every backend stores JSON),
//! the file-system and SQLite backends' append, SQLite's load of a long history, and
//! building the request view and the chat-completions request body from a long history
//! (both done on every LLM call). Run with `cargo bench -p fusion-bench`; the
//! whole-workload numbers come from `cargo xtask bench` instead.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fusion_agent::context::{EstimateCounter, request_view};
use fusion_agent::{
    ChatRequest, ContextPolicy, OpenAiConfig, RequestCache, SamplingOptions, ToolRegistry,
};
use fusion_bench::workload;
use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_fs::FileSystemStorage;
use fusion_storage_sqlite::SqliteStorage;

/// `serde_json` both ways on the first 1,000 canonical messages, per message.
fn message_json(c: &mut Criterion) {
    let messages = workload::messages(1_000);
    let lines: Vec<String> = messages
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
    let mut group = c.benchmark_group("message_json");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("encode_1000", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(serde_json::to_string(black_box(m)).unwrap());
            }
        })
    });
    group.bench_function("decode_1000", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_str::<ChatMessage>(black_box(line)).unwrap());
            }
        })
    });
    group.finish();
}

/// One W1 turn (2 or 3 messages) appended to a session file, as `FileSystemStorage` does
/// it: lock, tail check, one `write()`, with the Tokio blocking-pool hop included.
fn fs_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(dir.path());
    let turns = workload::turns_reaching(1_000);
    let mut next = turns.iter().cycle();
    let mut group = c.benchmark_group("fs_append");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("one_turn", |b| {
        b.to_async(&runtime).iter(|| {
            let turn = next.next().unwrap();
            let storage = &storage;
            async move { storage.append("bench", turn).await.unwrap() }
        })
    });
    group.finish();
}

/// SQLite on a database file: one W1 turn appended (on the calling thread: nothing else
/// writes, so the write lock is free), and a 10,000-message history loaded by a storage
/// that has loaded it before (rows read on a blocking thread, parsed by the task).
fn sqlite(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let storage = runtime.block_on(SqliteStorage::connect(&url)).unwrap();
    let turns = workload::turns_reaching(1_000);
    let mut next = turns.iter().cycle();
    let mut group = c.benchmark_group("sqlite");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("append_one_turn", |b| {
        b.to_async(&runtime).iter(|| {
            let turn = next.next().unwrap();
            let storage = &storage;
            async move { storage.append("bench", turn).await.unwrap() }
        })
    });
    let history = workload::messages(10_000);
    runtime.block_on(storage.save("long", &history)).unwrap();
    group.bench_function("load_10000", |b| {
        b.to_async(&runtime).iter(|| {
            let storage = &storage;
            async move { assert_eq!(storage.load("long").await.unwrap().len(), 10_000) }
        })
    });
    group.finish();
}

/// The request body `OpenAiClient` sends for a history of 1,000 and 10,000 messages with
/// the four built-in file tools: the work re-done on every LLM call of a long session.
/// `whole` encodes every message (a conversation's first request); `cached` is a later
/// request of the same conversation, whose messages were encoded before and are only
/// compared (an agent's next request adds one or two messages to that).
fn agent_request(c: &mut Criterion) {
    let client = OpenAiConfig::new("bench-model")
        .base_url("http://127.0.0.1:9/v1")
        .build()
        .unwrap();
    let tools = ToolRegistry::with_file_tools([std::env::temp_dir()])
        .unwrap()
        .definitions();
    let mut group = c.benchmark_group("agent_request_body");
    for n in [1_000, 10_000] {
        let history = workload::messages(n);
        let cache = RequestCache::new();
        for (variant, cache) in [("whole", None), ("cached", Some(&cache))] {
            let request = ChatRequest {
                messages: history.iter().map(Cow::Borrowed).collect(),
                tools: tools.clone(),
                options: SamplingOptions::default(),
                cache,
            };
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(variant, n), &request, |b, request| {
                b.iter(|| black_box(client.request_body(black_box(request)).unwrap()))
            });
        }
    }
    group.finish();
}

/// The request view of a history of 1,000 and 10,000 messages under the default policy
/// (everything visible): which messages a request carries, each tool call with its one
/// result, done before every LLM call.
fn agent_view(c: &mut Criterion) {
    let mut group = c.benchmark_group("agent_request_view");
    for n in [1_000, 10_000] {
        let history = workload::messages(n);
        let policy = ContextPolicy::default();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("default", n), &history, |b, history| {
            b.iter(|| {
                black_box(request_view(
                    black_box(history),
                    &policy,
                    &EstimateCounter,
                    None,
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(
    hot_paths,
    message_json,
    fs_append,
    sqlite,
    agent_view,
    agent_request
);
criterion_main!(hot_paths);
