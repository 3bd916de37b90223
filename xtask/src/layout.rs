//! ARCHITECTURE.md stays true: its crate dependency diagram is checked against the
//! workspace's `Cargo.toml`s, its code map names every workspace member, and no crate grows
//! past the size at which it should be split, and every build `cargo xtask test` makes
//! resolves the same features (tests/workspace-features says why).

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Non-test lines of code a crate may hold before it should be split (issue 10).
    const MAX_CRATE_LINES: usize = 2_600;

    fn root() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    }

    /// Workspace members: (short name in the diagram, directory, package name).
    fn members() -> Vec<(String, String, String)> {
        let manifest: toml::Value =
            toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
        manifest["workspace"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let dir = m.as_str().unwrap().to_string();
                let package: toml::Value = toml::from_str(
                    &std::fs::read_to_string(root().join(&dir).join("Cargo.toml")).unwrap(),
                )
                .unwrap();
                let name = package["package"]["name"].as_str().unwrap().to_string();
                (short(&name), dir, name)
            })
            .collect()
    }

    /// `bulwark-node` → `node`; `bulwark-tests` → `harness`; `bulwark-engine-sim` →
    /// `engine_sim` (mermaid ids take no hyphen); others as they are.
    fn short(package: &str) -> String {
        match package {
            "bulwark-tests" => "harness".into(),
            p => p.strip_prefix("bulwark-").unwrap_or(p).replace('-', "_"),
        }
    }

    /// Edges between workspace crates, from `[dependencies]` (not dev-dependencies).
    fn cargo_edges() -> BTreeSet<(String, String)> {
        let members = members();
        let packages: BTreeSet<&str> = members.iter().map(|m| m.2.as_str()).collect();
        let mut edges = BTreeSet::new();
        for (from, dir, _) in &members {
            let manifest: toml::Value = toml::from_str(
                &std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap(),
            )
            .unwrap();
            if let Some(deps) = manifest.get("dependencies").and_then(|d| d.as_table()) {
                for dep in deps.keys().filter(|d| packages.contains(d.as_str())) {
                    edges.insert((from.clone(), short(dep)));
                }
            }
        }
        edges
    }

    /// Edges of the mermaid diagram in ARCHITECTURE.md (`a --> b`, `a --> b["label"]`).
    fn diagram_edges() -> BTreeSet<(String, String)> {
        let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
        let block = text
            .split("```mermaid")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("ARCHITECTURE.md has a mermaid block");
        block
            .lines()
            .filter_map(|l| l.trim().split_once("-->"))
            .map(|(a, b)| {
                let b = b.trim();
                let b = b.split('[').next().unwrap_or(b);
                (a.trim().to_string(), b.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn the_dependency_diagram_matches_the_cargo_manifests() {
        let cargo = cargo_edges();
        let diagram = diagram_edges();
        let missing: Vec<_> = cargo.difference(&diagram).collect();
        let extra: Vec<_> = diagram.difference(&cargo).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "ARCHITECTURE.md's diagram lacks {missing:?} and has edges Cargo.toml does not: {extra:?}"
        );
    }

    /// Each package's feature sets (`name version` → the distinct sets it is resolved with:
    /// a package built both for build scripts and for the code can have two) as `cargo tree`
    /// resolves them for these selection and edge arguments.
    fn resolved_features(args: &[&str]) -> BTreeMap<String, BTreeSet<BTreeSet<String>>> {
        let out = harness::cargo()
            .current_dir(root())
            .args(["tree", "--locked", "--prefix", "none", "-f", "{p} {f}"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo tree {args:?} failed: {out:?}");
        let mut features: BTreeMap<String, BTreeSet<BTreeSet<String>>> = BTreeMap::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let mut words = line.split_whitespace();
            let (Some(name), Some(version)) = (words.next(), words.next()) else {
                continue;
            };
            if !version.starts_with('v') {
                continue; // `name feature "f"` lines of the features edges
            }
            let rest: Vec<&str> = words.filter(|w| !w.starts_with('(')).collect();
            let set = rest
                .last()
                .map(|list| {
                    list.split(',')
                        .filter(|f| !f.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            features
                .entry(format!("{name} {version}"))
                .or_default()
                .insert(set);
        }
        features
    }

    /// Packages of `build` that the test run lacks or resolves with other feature sets.
    fn feature_differences(
        build: &BTreeMap<String, BTreeSet<BTreeSet<String>>>,
        test_run: &BTreeMap<String, BTreeSet<BTreeSet<String>>>,
    ) -> Vec<String> {
        build
            .iter()
            .filter_map(|(package, sets)| match test_run.get(package) {
                None => Some(format!("{package}: not in the test run's graph")),
                Some(other) if other != sets => Some(format!(
                    "{package}: built with {sets:?}, the test run has {other:?}"
                )),
                Some(_) => None,
            })
            .collect()
    }

    /// A crate resolved with other features is compiled again, with everything above it: the
    /// test run, xtask's own build and the process tests' binaries must agree. (Profiles are
    /// not compared: `[profile.dev.build-override]` in Cargo.toml says why it is explicit.)
    #[test]
    fn every_build_of_cargo_xtask_test_resolves_the_same_features() {
        let edges = ["-e", "normal,build,features"];
        let test_run = resolved_features(&["--workspace", "-e", "normal,build,dev,features"]);
        for (what, selection) in [
            ("`cargo xtask` (-p xtask)", vec!["-p", "xtask"]),
            // Without the `--features bulwark/simulated-psp` the harness adds (cargo tree
            // 1.95 panics on it): bulwark-byzantine turns it on in every workspace build.
            (
                "the process tests' `cargo build --workspace`",
                vec!["--workspace"],
            ),
        ] {
            let args: Vec<&str> = selection.iter().chain(edges.iter()).copied().collect();
            let differences = feature_differences(&resolved_features(&args), &test_run);
            assert!(
                differences.is_empty(),
                "{what} and `cargo test --workspace` resolve different features; add what is \
                 missing to tests/workspace-features/Cargo.toml:\n{}",
                differences.join("\n")
            );
        }
    }

    #[test]
    fn the_code_map_names_every_workspace_member() {
        let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
        for (_, dir, _) in members() {
            assert!(
                text.contains(&format!("| `{dir}")),
                "ARCHITECTURE.md's code map has no row for {dir}"
            );
        }
    }

    fn rust_lines(dir: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .map(|p| {
                if p.is_dir() {
                    rust_lines(&p)
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    // Unit tests at the end of a file do not count.
                    text.split("#[cfg(test)]")
                        .next()
                        .unwrap_or("")
                        .lines()
                        .count()
                } else {
                    0
                }
            })
            .sum()
    }

    #[test]
    fn no_crate_outgrows_one_reason_to_change() {
        for (_, dir, _) in members() {
            let src = [
                root().join(&dir).join("src"),
                root().join(&dir).join("harness"),
            ]
            .into_iter()
            .find(|d| d.is_dir())
            .unwrap();
            let lines = rust_lines(&src);
            assert!(
                lines <= MAX_CRATE_LINES,
                "{dir} has {lines} lines of non-test code: split it by responsibility"
            );
        }
    }
}
