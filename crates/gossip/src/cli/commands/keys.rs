//! The gossip encryption keyring: `keys` (install, use, remove, list across
//! the cluster) and `keygen` (a new random key).

use base64::Engine as _;

use super::{connect, fail, parse, Usage};
use crate::cli::output::columnize;

const KEYS: Usage = Usage {
    text: "
Usage: gossip keys [options]

  Manages the cluster's gossip encryption keyring.

Options:
  -install=<key>            Install a new key on every member.
  -use=<key>                Make an installed key the primary one.
  -remove=<key>             Remove a key from every member.
  -list                     List the installed keys and how many members have each.
",
    bools: &["list"],
    values: &["install", "use", "remove"],
    ..Usage::NO_FLAGS
};

pub async fn keys(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&KEYS, argv));
    let list = f.bool("list", false);
    let chosen = ["install", "use", "remove"]
        .iter()
        .filter(|n| f.is_set(n))
        .count()
        + usize::from(list);
    if chosen != 1 {
        if chosen > 1 {
            eprintln!("Only one of -install, -use, -remove, or -list allowed");
        }
        return fail(KEYS.help());
    }
    let client = or_exit!(connect(&f).await);
    let (start, done, failed, result) = if list {
        (
            "Asking all members for installed keys...",
            "Keys gathered, listing cluster keys...",
            "Failed to gather member keys",
            client.list_keys().await,
        )
    } else if let Some(k) = f.value("install") {
        (
            "Installing key on all members...",
            "Successfully installed key!",
            "Error installing key",
            client.install_key(k).await,
        )
    } else if let Some(k) = f.value("use") {
        (
            "Changing primary key on all members...",
            "Successfully changed primary key!",
            "Error changing primary key",
            client.use_key(k).await,
        )
    } else {
        let k = f.value("remove").unwrap_or_default();
        (
            "Removing key on all members...",
            "Successfully removed key!",
            "Error removing key",
            client.remove_key(k).await,
        )
    };
    println!("==> {start}");
    let resp = match result {
        Ok(r) if r.num_err == 0 => r,
        Ok(r) => {
            let rows: Vec<Vec<String>> = r
                .messages
                .iter()
                .map(|(n, m)| vec!["failed:".into(), n.clone(), m.clone()])
                .collect();
            eprintln!("{}\n", columnize(&rows));
            return fail(format!(
                "{failed}: {}/{} nodes reported failure",
                r.num_err, r.num_nodes
            ));
        }
        Err(e) => return fail(format!("{failed}: {e}")),
    };
    println!("==> {done}");
    if list {
        let rows: Vec<Vec<String>> = resp
            .keys
            .iter()
            .map(|(k, n)| vec![k.clone(), format!("[{n}/{}]", resp.num_nodes)])
            .collect();
        println!("\n{}", columnize(&rows));
    }
    0
}

pub fn keygen(argv: &[String]) -> i32 {
    if !argv.is_empty() {
        return fail("Usage: gossip keygen (takes no arguments)");
    }
    let mut key = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key));
    if let Err(e) = read {
        return fail(format!("Error reading random data: {e}"));
    }
    println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
    0
}
