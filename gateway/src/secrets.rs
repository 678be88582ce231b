//! The admin secret (DESIGN §5.1): from config/env, else from
//! `data_dir/admin-secret`, else generated on first start (and printed).
//! Never a default that works everywhere.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub const ADMIN_SECRET_FILE: &str = "admin-secret";

/// The secret, and whether it was generated just now.
pub fn admin_secret(configured: &str, data_dir: &Path) -> anyhow::Result<(String, bool)> {
    if !configured.is_empty() {
        return Ok((configured.to_string(), false));
    }
    let path = secret_path(data_dir);
    if let Some(s) = read_secret(data_dir)? {
        return Ok((s, false));
    }
    let secret = random_hex(24)?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    write_private(&path, &secret)?;
    Ok((secret, true))
}

pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_SECRET_FILE)
}

/// The stored secret, if the data directory has one.
pub fn read_secret(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = secret_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    Ok(hex::encode(buf))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_and_config_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (a, gen_a) = admin_secret("", dir.path()).unwrap();
        let (b, gen_b) = admin_secret("", dir.path()).unwrap();
        assert!(gen_a && !gen_b);
        assert_eq!(a, b);
        assert_eq!(a.len(), 48);
        let (c, gen_c) = admin_secret("configured", dir.path()).unwrap();
        assert_eq!((c.as_str(), gen_c), ("configured", false));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(admin_secret("", other.path()).unwrap().0, a);
    }
}
