//! The final stage's `cont-init.d/05-gossip-key`, run with bash on a
//! scratch root (`INIT_ROOT`): a rejected key is described (variable,
//! length, what is wrong) and never printed, GOSSIP_KEY leaves the
//! container environment store in every case, and an accepted key lands in
//! a 0600 file. No Docker needed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/common/task6/cont-init.d/05-gossip-key")
}

/// A scratch root for the script, removed with what is in it on drop.
struct Root(testkit::TempDir);

impl Root {
    fn new(name: &str) -> Root {
        let dir = testkit::temp_dir(&format!("gossip-key-{name}"));
        std::fs::create_dir_all(dir.path().join("var/run/s6/container_environment")).unwrap();
        Root(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn store(&self) -> PathBuf {
        self.path()
            .join("var/run/s6/container_environment/GOSSIP_KEY")
    }

    fn conf(&self) -> PathBuf {
        self.path().join("etc/serf/encrypt.json")
    }

    /// Runs the script as init would (the store holds GOSSIP_KEY when the
    /// environment does): exit code and stderr.
    fn run(&self, env: &[(&str, &str)]) -> (i32, String) {
        if let Some((_, v)) = env.iter().find(|(k, _)| *k == "GOSSIP_KEY") {
            std::fs::write(self.store(), v).unwrap();
        }
        let out = Command::new("bash")
            .arg(script())
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("INIT_ROOT", self.path())
            .envs(env.iter().copied())
            .output()
            .expect("bash runs the script");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn random(n: usize) -> Vec<u8> {
    use std::io::Read as _;
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut v)
        .unwrap();
    v
}

/// Neither the value nor a recognisable piece of it (its first 8
/// characters) is in `said`.
fn assert_not_leaked(said: &str, value: &str, case: &str) {
    assert!(
        !said.contains(value) && !said.contains(&value[..8.min(value.len())]),
        "{case}: the message shows the key (its length {}): {} characters of output",
        value.len(),
        said.len()
    );
}

#[test]
fn a_rejected_key_is_described_never_printed() {
    let good = b64(&random(32));
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "20 bytes",
            b64(&random(20)),
            &[
                "GOSSIP_KEY (28 base64 characters)",
                "decodes to 20 bytes",
                "16, 24 or 32",
            ],
        ),
        (
            "not base64",
            format!("{}!?{}", &good[..20], &good[22..40]),
            &[
                "GOSSIP_KEY (40 characters) is not base64",
                "characters other than",
            ],
        ),
        (
            "padding cut",
            good.trim_end_matches('=').to_string(),
            &[
                "GOSSIP_KEY (43 characters) is not base64",
                "not a multiple of 4",
            ],
        ),
    ];
    for (case, key, expected) in cases {
        let root = Root::new("bad");
        let (code, said) = root.run(&[("GOSSIP_KEY", &key)]);
        assert_eq!(code, 1, "{case}: refused");
        for e in expected {
            assert!(
                said.contains(e),
                "{case}: expected {e:?} in the message, got:\n{}",
                said.replace(&key, "<KEY>")
            );
        }
        assert_not_leaked(&said, &key, case);
        assert!(
            !root.store().exists(),
            "{case}: GOSSIP_KEY left in the store"
        );
        assert!(!root.conf().exists(), "{case}: a rejected key was written");
    }

    // From a file: the file is named, the key is not shown.
    let root = Root::new("file");
    let key = b64(&random(20));
    let file = root.path().join("gossip.key");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let (code, said) = root.run(&[("GOSSIP_KEY_FILE", file.to_str().unwrap())]);
    assert_eq!(code, 1);
    assert!(
        said.contains("GOSSIP_KEY_FILE=") && said.contains("decodes to 20 bytes"),
        "{}",
        said.replace(&key, "<KEY>")
    );
    assert_not_leaked(&said, &key, "from a file");
}

#[test]
fn an_accepted_key_goes_to_a_0600_file_and_out_of_the_store() {
    let root = Root::new("good");
    let key = b64(&random(32));
    let (code, said) = root.run(&[("GOSSIP_KEY", &key)]);
    assert_eq!(code, 0, "{}", said.replace(&key, "<KEY>"));
    assert!(
        said.contains("256-bit key"),
        "{}",
        said.replace(&key, "<KEY>")
    );
    assert_not_leaked(&said, &key, "accepted");
    assert!(!root.store().exists(), "GOSSIP_KEY left in the store");
    let conf = std::fs::read_to_string(root.conf()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&conf).unwrap();
    assert_eq!(json["encrypt_key"].as_str(), Some(key.as_str()));
    let mode = std::fs::metadata(root.conf()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "encrypt.json mode");
}

#[test]
fn no_key_is_refused_and_insecure_is_explicit() {
    let root = Root::new("none");
    let (code, said) = root.run(&[]);
    assert_eq!(code, 1);
    assert!(said.contains("no gossip encryption key"), "{said}");
    let (code, said) = root.run(&[("GOSSIP_INSECURE", "1")]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("gossip is NOT encrypted"), "{said}");
    assert!(!root.conf().exists());
}
