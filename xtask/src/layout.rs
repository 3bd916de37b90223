//! ARCHITECTURE.md stays true: its crate dependency diagram is checked against the
//! workspace's `Cargo.toml`s, its code map names every workspace member, and no crate grows
//! past the size at which it should be split.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
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
