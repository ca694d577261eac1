//! Embeds the add-ons' reference data (product.md §7) without committing third-party data.
//!
//! - uap-core's `regexes.yaml`, which ships inside the `ua-parser` crate's source;
//! - Snowplow's `referers.yml`, which ships inside the `referer-parser-rs` crate's source (a
//!   build-dependency only so that cargo downloads it; its code is never used).
//!
//! Both are converted to compact JSON in `OUT_DIR` so the runtime parses them with serde_json
//! and needs no YAML parser. A file is found, in order, through an environment override
//! (`KEEN_UAP_REGEXES`, `KEEN_REFERERS_YML`), through `cargo metadata` (works for registry,
//! vendored and git sources alike), or by scanning `$CARGO_HOME/registry/src`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A data file inside a dependency's source tree.
struct Source {
    package: &'static str,
    version: &'static str,
    relative: &'static str,
    override_var: &'static str,
}

const UAP_REGEXES: Source = Source {
    package: "ua-parser",
    version: "0.2.2",
    relative: "uap-core/regexes.yaml",
    override_var: "KEEN_UAP_REGEXES",
};

const REFERERS: Source = Source {
    package: "referer-parser-rs",
    version: "0.1.0",
    relative: "tests/referers.yml",
    override_var: "KEEN_REFERERS_YML",
};

/// The dataset's own test cases, beside `referers.yml`; only tests read them (by path).
const REFERER_TESTS: &str = "referer-tests.json";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={}", UAP_REGEXES.override_var);
    println!("cargo:rerun-if-env-changed={}", REFERERS.override_var);
    println!("cargo:rerun-if-env-changed=CARGO_HOME");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifests = dependency_roots();

    let regexes = locate(&UAP_REGEXES, &manifests);
    convert(&regexes, &out_dir.join("uap_regexes.json"));

    let referers = locate(&REFERERS, &manifests);
    convert(&referers, &out_dir.join("referers.json"));
    if let Some(tests) = referers.parent().map(|dir| dir.join(REFERER_TESTS))
        && tests.is_file()
    {
        println!(
            "cargo:rustc-env=KEEN_REFERER_TESTS_JSON={}",
            tests.display()
        );
    }
}

/// `(name, version, source directory)` of every package in the dependency graph.
/// Empty when `cargo metadata` cannot run (then the registry scan takes over).
fn dependency_roots() -> Vec<(String, String, PathBuf)> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut command = Command::new(cargo);
    command
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(manifest_dir.join("Cargo.toml"));
    // Without a platform filter cargo wants every platform's dependencies, which an offline
    // build has not downloaded.
    let mut platforms: Vec<String> = ["TARGET", "HOST"]
        .into_iter()
        .filter_map(|var| env::var(var).ok())
        .collect();
    platforms.dedup();
    for platform in &platforms {
        command.args(["--filter-platform", platform]);
    }
    let output = command.output();
    let Ok(output) = output else {
        return Vec::new();
    };
    if !output.status.success() {
        println!(
            "cargo:warning=cargo metadata failed, falling back to scanning the registry: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return Vec::new();
    }
    let Ok(metadata) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        return Vec::new();
    };
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    packages
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str()?.to_owned();
            let version = p["version"].as_str()?.to_owned();
            let manifest = PathBuf::from(p["manifest_path"].as_str()?);
            Some((name, version, manifest.parent()?.to_path_buf()))
        })
        .collect()
}

fn locate(source: &Source, roots: &[(String, String, PathBuf)]) -> PathBuf {
    if let Some(path) = env::var_os(source.override_var) {
        let path = PathBuf::from(path);
        if path.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
            return path;
        }
        fail(
            source,
            &format!(
                "{} points to {}, which is not a file",
                source.override_var,
                path.display()
            ),
        );
    }

    let from_metadata = roots
        .iter()
        .filter(|(name, version, _)| name == source.package && version == source.version)
        .map(|(_, _, dir)| dir.join(source.relative));
    let from_registry = registry_dirs(source)
        .into_iter()
        .map(|dir| dir.join(source.relative));
    for candidate in from_metadata.chain(from_registry) {
        if candidate.is_file() {
            println!("cargo:rerun-if-changed={}", candidate.display());
            return candidate;
        }
    }
    fail(
        source,
        "it was found neither through `cargo metadata` nor in the cargo registry",
    )
}

/// `$CARGO_HOME/registry/src/*/<package>-<version>/`, for when `cargo metadata` is unavailable.
fn registry_dirs(source: &Source) -> Vec<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    let Some(registry) = cargo_home.map(|home| home.join("registry").join("src")) else {
        return Vec::new();
    };
    let Ok(indexes) = fs::read_dir(registry) else {
        return Vec::new();
    };
    indexes
        .flatten()
        .map(|index| {
            index
                .path()
                .join(format!("{}-{}", source.package, source.version))
        })
        .filter(|dir| dir.is_dir())
        .collect()
}

/// YAML in, compact JSON out: the runtime then needs serde_json only.
fn convert(yaml: &Path, json: &Path) {
    let text =
        fs::read_to_string(yaml).unwrap_or_else(|e| panic!("cannot read {}: {e}", yaml.display()));
    let value: serde_json::Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", yaml.display()));
    let compact = serde_json::to_string(&value).expect("a JSON value always serialises");
    fs::write(json, compact).unwrap_or_else(|e| panic!("cannot write {}: {e}", json.display()));
}

fn fail(source: &Source, why: &str) -> ! {
    panic!(
        "\n\nkeen-shared needs `{relative}` from the `{package}` {version} crate source, but {why}.\n\
         Fix: run `cargo fetch` (with network access to crates.io) so cargo downloads \
         {package} {version}, or set {var} to the path of a copy of that file.\n\n",
        relative = source.relative,
        package = source.package,
        version = source.version,
        var = source.override_var,
    )
}
