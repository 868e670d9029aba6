//! The container environment: captured by init into one file per variable,
//! read back by `with-contenv`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Write every variable of this process into `dir` (one file per variable,
/// the value as content, no trailing newline), replacing what was there.
pub fn capture(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (name, value) in std::env::vars_os() {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
            eprintln!("init: not capturing variable {name:?}: not usable as a file name");
            continue;
        }
        let path = dir.join(&name);
        std::fs::write(&path, value.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The variables stored in `dir`.
pub fn load(dir: &Path) -> Result<Vec<(OsString, OsString)>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut vars = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let name = entry.file_name();
        if name.as_bytes().starts_with(b".") || name.as_bytes().contains(&b'=') {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let mut value =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // Like s6-envdir: a NUL in the file stands for a newline.
        for b in value.iter_mut() {
            if *b == 0 {
                *b = b'\n';
            }
        }
        vars.push((name, OsString::from(std::ffi::OsStr::from_bytes(&value))));
    }
    vars.sort();
    Ok(vars)
}

/// `with-contenv CMD ARGS...`: run CMD with the captured environment added
/// to the current one. Returns only on error, with the exit code to use.
pub fn with_contenv(dir: &Path, args: &[OsString]) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("with-contenv: usage: with-contenv PROGRAM [ARGS...]");
        return 100;
    };
    let vars = match load(dir) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("with-contenv: {e} (is init running, or INIT_ROOT set right?)");
            return 111;
        }
    };
    let err = std::process::Command::new(cmd).args(rest).envs(vars).exec();
    eprintln!("with-contenv: cannot run {cmd:?}: {err}");
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}
