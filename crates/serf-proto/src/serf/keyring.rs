//! Serf's keyring queries (`_serf_install-key`, `use-key`, `remove-key`,
//! `list-keys`): answering them (their payloads are `wire`'s).

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
            match wire::decode_key_request(&q.payload) {
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
        let list = op == "list-keys";
        let answer = wire::KeyResponse {
            result,
            message,
            keys: if list {
                keys.iter().map(b64).collect()
            } else {
                Vec::new()
            },
            primary_key: if list {
                keys.first().map(b64).unwrap_or_default()
            } else {
                String::new()
            },
        };
        self.send_internal_answer(&q, answer.encode());
    }

    /// True once after a keyring query changed our keys (persist them).
    pub fn take_keys_changed(&mut self) -> bool {
        std::mem::take(&mut self.st.keys_changed)
    }
}
