//! Serf's keyring queries (`_serf_install-key`, `use-key`, `remove-key`,
//! `list-keys`): answering them, and their request and response payloads.

use base64::Engine;

use super::queries::InternalQuery;
use super::Serf;
use crate::wire;

impl Serf {
    /// A keyring query (`install-key`, `use-key`, `remove-key`,
    /// `list-keys`): the keyring changed as asked, and this node's answer.
    pub(super) fn answer_keyring(&mut self, q: InternalQuery) {
        let op = q.name.trim_start_matches("_serf_");
        let mut keys = self.core.keys().to_vec();
        let (result, message) = if keys.is_empty() {
            (
                false,
                "No keyring to modify (encryption not enabled)".to_string(),
            )
        } else if op == "list-keys" {
            (true, String::new())
        } else {
            match decode_key_request(&q.payload) {
                None => (false, "malformed key request".to_string()),
                Some(key) => match op {
                    "install-key" => {
                        if !matches!(key.len(), 16 | 24 | 32) {
                            (
                                false,
                                format!("key size must be 16, 24 or 32 bytes, got {}", key.len()),
                            )
                        } else {
                            if !keys.contains(&key) {
                                keys.push(key);
                            }
                            (true, String::new())
                        }
                    }
                    "use-key" => match keys.iter().position(|k| *k == key) {
                        Some(i) => {
                            let k = keys.remove(i);
                            keys.insert(0, k);
                            (true, String::new())
                        }
                        None => (false, "Requested key is not in the keyring".to_string()),
                    },
                    _ => {
                        if keys.first() == Some(&key) {
                            (false, "Removing the primary key is not allowed".to_string())
                        } else {
                            keys.retain(|k| *k != key);
                            (true, String::new())
                        }
                    }
                },
            }
        };
        if result && op != "list-keys" && keys != self.core.keys() {
            self.core.set_keys(keys.clone());
            self.st.keys_changed = true;
        }
        let b64 = |k: &Vec<u8>| base64::engine::general_purpose::STANDARD.encode(k);
        let list: Vec<String> = if op == "list-keys" {
            keys.iter().map(b64).collect()
        } else {
            Vec::new()
        };
        let primary = if op == "list-keys" {
            keys.first().map(b64).unwrap_or_default()
        } else {
            String::new()
        };
        let payload = encode_key_response(result, &message, &list, &primary);
        self.send_internal_answer(&q, payload);
    }

    /// True once after a keyring query changed our keys (persist them).
    pub fn take_keys_changed(&mut self) -> bool {
        std::mem::take(&mut self.st.keys_changed)
    }
}

/// Payload of a keyring query: the key-request type byte, then {Key}.
pub fn encode_key_request(key: &[u8]) -> Vec<u8> {
    wire::MapEnc::new(vec![wire::stype::KEY_REQUEST], 1)
        .bytes("Key", key)
        .finish()
}

pub(super) fn decode_key_request(payload: &[u8]) -> Option<Vec<u8>> {
    let (&t, body) = payload.split_first()?;
    if t != wire::stype::KEY_REQUEST {
        return None;
    }
    let (v, _) = wire::read_value(body).ok()?;
    wire::Fields::of(&v).ok()?.bytes("Key").ok()
}

pub(super) fn encode_key_response(
    result: bool,
    message: &str,
    keys: &[String],
    primary: &str,
) -> Vec<u8> {
    let mut list = Vec::new();
    rmp::encode::write_array_len(&mut list, keys.len() as u32).expect("vec write");
    for k in keys {
        rmp::encode::write_str(&mut list, k).expect("vec write");
    }
    wire::MapEnc::new(vec![wire::stype::KEY_RESPONSE], 4)
        .raw_value("Keys", &list)
        .str("Message", message)
        .str("PrimaryKey", primary)
        .bool("Result", result)
        .finish()
}

/// One node's answer to a keyring query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeKeyResponse {
    pub result: bool,
    pub message: String,
    pub keys: Vec<String>,
    pub primary_key: String,
}

pub fn decode_key_response(payload: &[u8]) -> Option<NodeKeyResponse> {
    let (&t, body) = payload.split_first()?;
    if t != wire::stype::KEY_RESPONSE {
        return None;
    }
    let (v, _) = wire::read_value(body).ok()?;
    let f = wire::Fields::of(&v).ok()?;
    let keys = match f.get("Keys") {
        Some(rmpv::Value::Array(a)) => a
            .iter()
            .filter_map(|x| wire::value_bytes(x).and_then(|b| String::from_utf8(b).ok()))
            .collect(),
        _ => Vec::new(),
    };
    Some(NodeKeyResponse {
        result: f.bool("Result").ok()?,
        message: f.string("Message").unwrap_or_default(),
        keys,
        primary_key: f.string("PrimaryKey").unwrap_or_default(),
    })
}
