//! Finding the Zeek under test and building the plugin for it, shared by
//! tests/zeek.rs, tests/deploy.rs and tests/udpsrc.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// zeek-config from ZEEK_CONFIG, else the first on PATH.
pub fn config() -> Result<PathBuf, String> {
    std::env::var_os("ZEEK_CONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("zeek-config"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| "zeek-config not found (set ZEEK_CONFIG or put zeek-config on PATH)".into())
}

/// The install prefix `config` names, checked to hold `bin/zeek`.
pub fn prefix(config: &Path) -> Result<PathBuf, String> {
    let out = Command::new(config)
        .arg("--prefix")
        .output()
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let prefix = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let bin = prefix.join("bin/zeek");
    if !bin.is_file() {
        return Err(format!("no zeek binary at {}", bin.display()));
    }
    Ok(prefix)
}

/// The zeek binary: through zeek-config (as [`config`] finds it), else the
/// first /opt/zeek*/bin/zeek.
pub fn binary() -> Option<PathBuf> {
    if let Ok(prefix) = config().and_then(|c| prefix(&c)) {
        return Some(prefix.join("bin/zeek"));
    }
    std::fs::read_dir("/opt")
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("zeek"))
        .map(|e| e.path().join("bin/zeek"))
        .find(|p| p.is_file())
}

/// Builds the plugin (the cdylib, which `cargo test` does not link) with a
/// nested cargo into its own target directory, so it does not wait on the
/// outer cargo's lock; every test binary that needs it shares that build.
pub fn build_plugin(config: &Path) -> Result<PathBuf, String> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = manifest.join("target/zeek-tests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--lib", "--quiet", "--manifest-path"])
        .arg(manifest.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env("ZEEK_CONFIG", config)
        .output()
        .map_err(|e| format!("cannot run cargo to build the plugin: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the plugin failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let dir = target.join("debug/zeek-plugin");
    if !dir.join("__zeek_plugin__").is_file() {
        return Err(format!("the plugin build left no {}", dir.display()));
    }
    Ok(dir)
}

/// Reports a test that cannot run: SKIPPED, or a failure under
/// REQUIRE_ZEEK=1, where a missing Zeek means the run proves nothing.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var_os("REQUIRE_ZEEK").is_some_and(|v| v == "1") {
        panic!("{test}: REQUIRE_ZEEK=1 but the test cannot run: {why}");
    }
    super::skipped(test, why);
}

/// The `Ok` value of `$what`, or else [`skip_or_fail`] with the `Err`
/// (the reason) and return from the test.
#[allow(unused_macros)] // only the Zeek tests use it
macro_rules! or_skip {
    ($test:expr, $what:expr) => {
        match $what {
            Ok(v) => v,
            Err(why) => {
                $crate::common::zeek::skip_or_fail($test, &why);
                return;
            }
        }
    };
}
#[allow(unused_imports)] // only the Zeek tests use it
pub(crate) use or_skip;
