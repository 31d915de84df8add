//! Builds the C side of the plugin.
//!
//! Always: `zeek-shim/abi_check.c`, which runs the header's layout assertions
//! and lets a test compare the C compiler's layout with Rust's.
//!
//! With Zeek (found through `ZEEK_CONFIG` or `zeek-config` on PATH): the C++
//! shim, compiled against Zeek's headers and linked whole into the cdylib
//! only (its Zeek symbols resolve against the zeek binary at load time, so
//! it must stay out of executables), plus a plugin directory next to the
//! library: `target/<profile>/zeek-plugin/`.
//!
//! Without Zeek: the Rust engine and `udpsrc` build as usual, and a warning
//! says that the shim was skipped. A plugin directory left by an earlier
//! build with Zeek is removed then: its library would now come without the
//! shim, and Zeek would refuse it ("did not instantiate a plugin").

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGIN_NAME: &str = "UDPTunnel::PacketSource";

fn main() {
    println!("cargo:rerun-if-changed=zeek-shim");
    println!("cargo:rerun-if-changed=scripts");
    println!("cargo:rerun-if-env-changed=ZEEK_CONFIG");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo::rustc-check-cfg=cfg(zeek_shim)");

    cc::Build::new()
        .file("zeek-shim/abi_check.c")
        .include("zeek-shim")
        .warnings(true)
        .compile("zus_abi_check");

    match zeek_config() {
        Some(zeek) => build_shim(&zeek),
        None => skip_shim("zeek-config not found (set ZEEK_CONFIG or put zeek-config on PATH)"),
    }
}

/// Says why the shim was skipped, and removes the plugin directory an
/// earlier build may have left.
fn skip_shim(why: &str) {
    let removed = env::var_os("OUT_DIR")
        .map(|out| remove_plugin_dir(&profile_dir(Path::new(&out))))
        .unwrap_or_default();
    println!(
        "cargo:warning={why}: built the Rust engine and udpsrc; the Zeek plugin shim was skipped{removed}"
    );
}

/// Removes `<profile>/zeek-plugin/` if there is one, without following its
/// links (they point into the build and the source tree). Returns what was
/// done, for the warning.
pub(crate) fn remove_plugin_dir(profile: &Path) -> String {
    let dir = profile.join("zeek-plugin");
    if std::fs::symlink_metadata(&dir).is_err() {
        return String::new();
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => format!(
            ", and the plugin directory {} from an earlier build was removed (its library would have no shim)",
            dir.display()
        ),
        Err(e) => format!(
            "; could not remove the plugin directory {} from an earlier build ({e}): delete it, or Zeek will refuse its library",
            dir.display()
        ),
    }
}

/// The zeek-config to use, if any.
fn zeek_config() -> Option<PathBuf> {
    if let Some(p) = env::var_os("ZEEK_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join("zeek-config"))
        .find(|p| p.is_file())
}

fn query(zeek_config: &Path, flag: &str) -> Option<String> {
    let out = Command::new(zeek_config).arg(flag).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn build_shim(zeek_config: &Path) {
    let Some(includes) = query(zeek_config, "--include_dir") else {
        skip_shim(&format!("{} --include_dir failed", zeek_config.display()));
        return;
    };
    let version = query(zeek_config, "--version").unwrap_or_default();
    let debug = query(zeek_config, "--build_type").is_some_and(|t| t.contains("debug"));
    let (major, minor, patch) = crate_version();

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .file("zeek-shim/plugin.cc")
        .file("zeek-shim/conn_key.cc")
        .include("zeek-shim")
        .define("ZUS_VERSION_MAJOR", major.as_str())
        .define("ZUS_VERSION_MINOR", minor.as_str())
        .define("ZUS_VERSION_PATCH", patch.as_str())
        .flag_if_supported("-Wno-unused-parameter")
        .cargo_metadata(false);
    // -isystem: warnings in Zeek's own headers are not ours to fix.
    // /usr/include is one already, and naming it again breaks #include_next.
    let standard = ["/usr/include", "/usr/local/include"];
    for dir in includes
        .split(':')
        .filter(|d| !d.is_empty() && !standard.contains(d))
    {
        build.flag("-isystem").flag(dir);
        // Zeek's telemetry headers include prometheus-cpp's, which Zeek
        // installs beside its own but zeek-config does not name.
        let prometheus = Path::new(dir).join("zeek/3rdparty/prometheus-cpp/include");
        if prometheus.is_dir() {
            build
                .flag("-isystem")
                .flag(prometheus.to_string_lossy().as_ref());
        }
    }
    if debug {
        build.define("DEBUG", None);
    }
    build.compile("zus_shim");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let archive = out.join("libzus_shim.a");
    // Whole archive: nothing references the global plugin object, whose
    // constructor registers the plugin, so a plain link would drop it.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--whole-archive");
    println!("cargo:rustc-cdylib-link-arg={}", archive.display());
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-whole-archive");
    println!("cargo:rustc-cdylib-link-arg=-lstdc++");
    println!("cargo:rustc-cfg=zeek_shim");
    if let Err(e) = plugin_dir(&out) {
        println!("cargo:warning=could not lay out the Zeek plugin directory: {e}");
    }
    println!(
        "cargo:warning=Zeek plugin {PLUGIN_NAME} built against Zeek {version}: {}",
        profile_dir(&out).join("zeek-plugin").display()
    );
}

fn crate_version() -> (String, String, String) {
    let get = |k: &str| env::var(k).unwrap_or_else(|_| "0".into());
    (
        get("CARGO_PKG_VERSION_MAJOR"),
        get("CARGO_PKG_VERSION_MINOR"),
        get("CARGO_PKG_VERSION_PATCH"),
    )
}

/// target/<profile>, three levels above OUT_DIR. (Also used by tests/zeek.rs,
/// which compiles this file as a module.)
pub(crate) fn profile_dir(out: &Path) -> PathBuf {
    out.ancestors().nth(3).unwrap_or(out).to_path_buf()
}

/// Lays out `target/<profile>/zeek-plugin/`: the marker file, the library
/// (a link to the cdylib cargo is about to build) and the scripts.
fn plugin_dir(out: &Path) -> std::io::Result<()> {
    let dir = profile_dir(out).join("zeek-plugin");
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib)?;
    std::fs::write(dir.join("__zeek_plugin__"), format!("{PLUGIN_NAME}\n"))?;
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_else(|_| "linux".into());
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let so = lib.join(format!("{}.{os}-{arch}.so", PLUGIN_NAME.replace("::", "-")));
    relink(Path::new("../../libzeek_udp_source.so"), &so)?;
    let scripts = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("scripts");
    relink(&scripts, &dir.join("scripts"))
}

fn relink(target: &Path, link: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
}
