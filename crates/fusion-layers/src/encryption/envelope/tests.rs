//! Unit tests of the stored form: what earlier releases wrote, payloads that are not
//! sealed messages, and a plaintext that outgrows its first buffer.

use aes_gcm::aead::{Aead, Payload};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64_URL;

use super::*;

const KEY: [u8; KEY_LEN] = [7; KEY_LEN];

fn codec() -> Codec {
    Codec::new(Some(EncryptionKeys::new("k1", &KEY).unwrap()), false)
}

/// The stored form is what earlier releases wrote and read (made there with
/// `Aead::encrypt` and the `base64` crate): a message sealed now opens that way, and one
/// sealed that way opens now.
#[test]
fn the_stored_form_is_the_one_earlier_releases_wrote() {
    let codec = codec();
    let mut crypt = SessionCrypt::new(&codec, "test", "s1");
    let message = ChatMessage::assistant("a reply, \"quoted\" 🦀").with_new_id();
    let id = message.id.clone().unwrap();
    let aad = associated_data("k1", "s1", message.role, Some(&id));
    let cipher = derive_cipher(&KEY, "k1", "s1");

    let stored = crypt.seal(0, &message).unwrap();
    let payload = stored.content.strip_prefix("fusion:enc:v1:k1:").unwrap();
    let sealed = BASE64_URL.decode(payload).unwrap();
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let payload = Payload {
        msg: ciphertext,
        aad: &aad,
    };
    let plaintext = cipher
        .decrypt(&Nonce::try_from(nonce).unwrap(), payload)
        .unwrap();
    assert_eq!(plaintext, serde_json::to_vec(&message).unwrap());

    let nonce = [9u8; NONCE_LEN];
    let plaintext = serde_json::to_vec(&message).unwrap();
    let payload = Payload {
        msg: &plaintext,
        aad: &aad,
    };
    let mut sealed = nonce.to_vec();
    sealed.extend(cipher.encrypt(&Nonce::from(nonce), payload).unwrap());
    let mut earlier = ChatMessage::new(
        message.role,
        format!("fusion:enc:v1:k1:{}", BASE64_URL.encode(&sealed)),
    );
    earlier.id = Some(id);
    assert_eq!(crypt.open(0, earlier).unwrap(), message);
}

/// A message longer than the buffer's first guess is sealed whole (the buffer grows,
/// zeroing what it leaves) and opens again.
#[test]
fn a_message_that_outgrows_the_first_buffer_round_trips() {
    use std::io::Write;
    let mut writer = ZeroizingWriter(Zeroizing::new(Vec::with_capacity(4)));
    writer.write_all(b"abc").unwrap();
    writer.write_all(&[b'x'; 100]).unwrap();
    writer.write_all(b"!").unwrap();
    assert_eq!(writer.0.len(), 104);
    assert_eq!(&writer.0[..4], b"abcx");
    assert!(writer.0.ends_with(b"x!"));

    let codec = codec();
    let mut crypt = SessionCrypt::new(&codec, "test", "s1");
    let arguments = format!("{{\"path\": \"{}\"}}", "a/".repeat(5_000));
    let call = fusion_core::ToolCall::new("call_1", "read_file", arguments);
    let message = ChatMessage::assistant_with_tool_calls("short", vec![call]);
    let stored = crypt.seal(0, &message).unwrap();
    assert_eq!(crypt.open(0, stored).unwrap(), message);
}

/// Payloads that are not base64, or too short to hold a nonce and a tag, are refused
/// as undecryptable, naming the message and the key.
#[test]
fn a_payload_that_is_not_a_sealed_message_is_refused() {
    for (payload, error) in damaged_payloads_under("k1") {
        assert!(
            error
                .to_string()
                .contains("message 4 (index 3, key \"k1\") does not decrypt"),
            "{payload}: {error}"
        );
    }
}

/// Each payload that is not a sealed message, under `key_id`, and what opening it as
/// message 3 of a session fails with.
fn damaged_payloads_under(key_id: &str) -> Vec<(&'static str, Error)> {
    let codec = codec();
    let mut crypt = SessionCrypt::new(&codec, "test", "s1");
    let payloads = ["not base64!", "AAAA", "", "A"];
    let open = |payload| {
        let stored = ChatMessage::user(format!("fusion:enc:v1:{key_id}:{payload}"));
        (payload, crypt.open(3, stored).unwrap_err())
    };
    payloads.into_iter().map(open).collect()
}

/// A message under a key id that is not loaded is that configuration mistake, whatever
/// its payload: an error naming the key and the ids loaded, never one saying that a key
/// "loaded as" that id is the wrong one.
#[test]
fn a_damaged_payload_under_a_key_not_loaded_names_the_missing_key() {
    for (payload, error) in damaged_payloads_under("k9") {
        let text = error.to_string();
        assert!(matches!(error, Error::Config(_)), "{payload}: {text}");
        assert!(
            text.contains("key \"k9\", which is not among the encryption keys loaded (\"k1\")"),
            "{payload}: {text}"
        );
    }
}

/// A stored message of this session is refused for a write once it decrypts, whatever its
/// plaintext: one whose plaintext is no message (a newer writer's) is as much this
/// session's ciphertext as any, and sealed again it would load back as that ciphertext.
#[test]
fn a_stored_message_whose_plaintext_is_no_message_is_refused_for_a_write() {
    let codec = codec();
    let mut crypt = SessionCrypt::new(&codec, "test", "s1");
    let id = MessageId::new();
    let aad = associated_data("k1", "s1", Role::User, Some(&id));
    let nonce = [3u8; NONCE_LEN];
    let payload = Payload {
        msg: b"{\"v\":2}",
        aad: &aad,
    };
    let mut sealed = nonce.to_vec();
    let cipher = derive_cipher(&KEY, "k1", "s1");
    sealed.extend(cipher.encrypt(&Nonce::from(nonce), payload).unwrap());
    let mut stored = ChatMessage::user(format!("fusion:enc:v1:k1:{}", BASE64_URL.encode(&sealed)));
    stored.id = Some(id);

    let unread = crypt.open(0, stored.clone()).unwrap_err();
    assert!(unread.to_string().contains("not a message"), "{unread}");
    let refused = crypt.seal_all(&[stored]).unwrap_err();
    assert!(
        matches!(refused, Error::InvalidMessage { index: 0, .. }),
        "{refused}"
    );
}

/// The HMAC state HKDF-SHA256 keeps while it derives a session key (two SHA-256 cores and
/// a block buffer, fed the master key, then keyed by the key extracted from it) is
/// wiped when it drops: sha2's `zeroize` feature, on in the workspace, which turns on
/// digest's and block-buffer's. Without it this does not compile.
#[test]
fn the_hmac_state_inside_hkdf_is_wiped_on_drop() {
    use hkdf::hmac::digest::block_api::{Buffer, EagerHash};
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    type Core = <Sha256 as EagerHash>::Core;
    wiped_on_drop::<Core>();
    wiped_on_drop::<Buffer<Core>>();
}
